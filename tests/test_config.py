"""Every config file composes against the typed schema; wrong keys and types fail at composition, bad values at
start."""

import re

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from sora.config import check_sample_config, check_train_config, typed
from sora.errors import SoraError
from tests.conftest import CONFIGS, compose_config

# Component groups (group=option); whole-run presets under configs/experiment/ are added with +experiment=NAME.
GROUP_OPTIONS = [(d.name, f.stem) for d in sorted(CONFIGS.iterdir()) if d.is_dir() and d.name != "experiment"
                 for f in sorted(d.glob("*.yaml"))]
EXPERIMENTS = [f.stem for f in sorted((CONFIGS / "experiment").glob("*.yaml"))]


def test_every_group_option_is_listed():
    assert {g for g, _ in GROUP_OPTIONS} == {"dit", "vae", "text", "task", "conditioning"}
    for group in {g for g, _ in GROUP_OPTIONS}:  # a group exists only with at least two real options
        assert sum(g == group for g, _ in GROUP_OPTIONS) >= 2, group


@pytest.mark.parametrize("group, option", GROUP_OPTIONS)
def test_group_option_composes(group, option):
    paths = {("text", "hf"): ["text.path=/some/dir"], ("text", "umt5"): ["text.path=/some/dir"],
             ("vae", "diffusers"): ["vae.path=/some/dir"]}
    overrides = [f"{group}={option}"] + paths.get((group, option), [])
    cfg = compose_config("train", overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # no ??? left, every interpolation resolves
    check_train_config(cfg)  # every preset's numbers are in range (heads divide the width, RoPE's head dim)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name):
    cfg = compose_config("train", [f"+experiment={name}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    check_train_config(cfg)


def test_task_vae_switches_to_the_causal_vae():
    cfg = compose_config("train", ["task=vae"])
    assert cfg.task.kind.value == "vae" and cfg.vae.kind.value == "causal3d"
    assert (cfg.data.num_frames - 1) % cfg.vae.temporal_compression == 0


def test_sample_config_composes():
    cfg = compose_config("sample", ["ckpt=x.ckpt", "prompt=a red circle moving left", "out=x.mp4"])
    assert cfg.ckpt == "x.ckpt" and cfg.steps is None and cfg.ema is True


def test_unknown_key_fails():
    with pytest.raises(ConfigCompositionException, match="dit.hidden_sise"):
        compose_config("train", ["dit.hidden_sise=64"])


def test_wrong_type_and_enum_fail():
    with pytest.raises((ConfigCompositionException, ValidationError), match="depth"):
        compose_config("train", ["dit.depth=deep"])
    with pytest.raises((ConfigCompositionException, ValidationError), match="kind"):
        compose_config("train", ["vae.kind=gan"])


def test_typed_rejects_stray_keys_in_saved_configs():
    with pytest.raises((ConfigKeyError, ValidationError)):
        typed({"dit": {"widht": 3}})


def test_a_checkpoint_from_before_a_key_reads_the_value_it_trained_with():
    """A checkpoint's config lacks keys added since; it trained with their values then, not today's defaults."""
    saved = OmegaConf.to_container(compose_config("train"), resolve=True)
    del saved["dit"]["head_mlp_width"], saved["objective"]["prediction"]
    old = typed(saved, from_checkpoint=True)
    assert old.dit.head_mlp_width == 0 and old.objective.prediction.value == "velocity"  # a linear head; velocity
    assert typed(saved).dit.head_mlp_width == compose_config("train").dit.head_mlp_width  # a new run: the default


@pytest.mark.parametrize("override, message", [
    ("dit.depth=0", "dit.depth must be >= 1, got 0"),
    ("dit.num_heads=0", "dit.num_heads must be >= 1, got 0"),
    ("dit.hidden_size=102", "dit.hidden_size=102 must divide by dit.num_heads=4"),  # the tiny preset's 4 heads
    ("dit.hidden_size=100", "dit.hidden_size / dit.num_heads = 25 channels a head; 3D RoPE needs an even number"),
    ("dit.patch_size=[1,2]", "dit.patch_size must be [pt, ph, pw]"),
    ("dit.checkpoint_fraction=1.5", "dit.checkpoint_fraction must be in [0, 1], got 1.5"),
    ("optim.lr=-1", "optim.lr must be > 0, got -1.0"),
    ("optim.betas=[0.9,1.5]", "optim.betas must be two numbers in [0, 1)"),
    ("data.batch_size_per_gpu=0", "data.batch_size_per_gpu must be >= 1"),
    ("data.num_workers=-1", "data.num_workers must be >= 0"),
    ("data.image_batch_ratio=2", "data.image_batch_ratio must be in [0, 1]"),
    ("train.keep_last_n=-5", "train.keep_last_n must be >= -1"),
    ("train.devices=0", "train.devices must be auto, a count >= 1"),
    ("train.max_steps=0", "train.max_steps must be >= 1"),
    ("train.max_steps=-1 train.max_minutes=null", "needs train.max_minutes"),
    ("train.sequence_parallel_size=0", "train.sequence_parallel_size must be >= 1"),
    ("objective.t_min=0", "objective.t_min must be in (0, 1)"),
    ("text.num_heads=3", "text.width=128 must divide by text.num_heads=3"),
    # once accepted here and failed deep inside the data loader, the non-finite guard or the EMA
    ("data.shuffle_buffer=0", "data.shuffle_buffer must be >= 1, got 0"),
    ("train.max_nonfinite_steps=0", "train.max_nonfinite_steps must be >= 1, got 0"),
    ("train.ema_decay=1", "train.ema_decay must be in [0, 1), got 1.0"),
    # once asserts inside the DiT, the VAE, the word encoder or the sampler
    ("dit.attention_layout=factorized dit.text_conditioning=joint", "dit.text_conditioning=joint attends over all"),
    ("dit.modulation=single dit.text_conditioning=joint", "dit.modulation=single shares the video stream's modulation"),
    ("vae=causal3d vae.spatial_compression=6", "vae.spatial_compression must be a power of 2, got 6"),
    ("vae=causal3d vae.channel_mult=[1,2]", "vae.channel_mult needs log2(vae.spatial_compression) + 1 = 4 entries"),
    ("vae=causal3d vae.temporal_compression=16",
     "vae.temporal_compression=16 may not exceed vae.spatial_compression=8"),
    ("text.vocab=[]", "text.vocab is empty"),
    ("text.vocab=[a,red,a]", "text.vocab repeats a"),
    ("text.max_tokens=1", "text.max_tokens must be >= 2, got 1"),
    ("sampler.name=ddim", "sampler.name must be one of euler, heun, unipc, got ddim"),
    ("sampler.schedule=cosine", "sampler.schedule must be one of flow_sigmas, shifted, uniform, got cosine"),
    ("task=vae vae=pixel", "task=vae trains a learnable VAE: set vae=causal3d"),
    ("task=vae task.lpips_weight=0.1", "task.lpips_weight > 0 needs task.lpips_backbone"),
    ("vae=causal3d vae.shortcuts=true vae.channel_mult=[1,8,8,8]", "vae.shortcuts=true folds each level"),
    ("vae=causal3d vae.tile_px=-1", "vae.tile_px must be"),
    ("task=vae task.gan_start_step=-5", "task.gan_start_step must be"),
    ("data.packing=true", "data.packing=true packs clips up to data.tokens_per_batch tokens"),
    ("train.sequence_parallel_size=2 train.devices=3 dit.num_heads=2 dit.hidden_size=64",
     "train.sequence_parallel_size=2 must divide the number of processes (train.devices x train.num_nodes = 3)"),
])
def test_out_of_range_values_fail_naming_the_key(override, message):
    with pytest.raises(SoraError, match=re.escape(message)):
        check_train_config(compose_config("train", override.split()))


def test_in_range_edge_values_pass():
    check_train_config(compose_config("train", ["train.max_steps=-1", "train.max_minutes=5", "train.devices=-1",
                                                "train.keep_last_n=-1", "dit.checkpoint_fraction=1",
                                                "optim.grad_clip=0", "data.moving_shapes=null"]))
    check_train_config(compose_config("train", ["train.devices='[0,1]'"]))


def test_sample_values_fail_naming_the_key():
    base = ["ckpt=x.ckpt", "prompt=a red circle moving left", "out=x.mp4"]
    check_sample_config(compose_config("sample", base))
    for override, message in [("steps=0", "steps must be >= 1"), ("batch_size=0", "batch_size must be >= 1"),
                              ("height=-8", "height must be >= 1"), ("cfg=-1", "cfg must be >= 0")]:
        with pytest.raises(SoraError, match=re.escape(message)):
            check_sample_config(compose_config("sample", base + [override]))


@pytest.mark.parametrize("override, message", [
    ("+no_such_key=1", "no_such_key is not a setting"),
    ("+train.no_such_key=1", "train.no_such_key is not a setting"),
    ("+dit.hidden_sise=64", "dit.hidden_sise is not a setting (did you mean dit.hidden_size?)"),
])
def test_keys_added_with_plus_are_refused(override, message):
    with pytest.raises(SoraError, match=re.escape(message)):
        check_train_config(compose_config("train", [override]))


def test_a_missing_value_is_named():
    with pytest.raises(SoraError, match=re.escape("text=hf needs text.path")):
        check_train_config(compose_config("train", ["text=hf"]))
    with pytest.raises(SoraError, match=re.escape("ckpt must be set")):
        check_sample_config(compose_config("sample", ["prompt=a red circle moving left", "out=x.mp4"]))
