"""Every config file composes against the typed schema; wrong keys and types fail at composition."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from tests.conftest import CONFIGS, compose_config

GROUP_OPTIONS = [(d.name, f.stem) for d in sorted(CONFIGS.iterdir()) if d.is_dir() for f in sorted(d.glob("*.yaml"))]


def test_every_group_option_is_listed():
    assert {g for g, _ in GROUP_OPTIONS} == {"dit", "vae", "text", "task"}
    for group in {g for g, _ in GROUP_OPTIONS}:  # a group exists only with at least two real options
        assert sum(g == group for g, _ in GROUP_OPTIONS) >= 2, group


@pytest.mark.parametrize("group, option", GROUP_OPTIONS)
def test_group_option_composes(group, option):
    overrides = [f"{group}={option}"] + (["text.path=/some/dir"] if (group, option) == ("text", "hf") else [])
    cfg = compose_config("train", overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # no ??? left, every interpolation resolves


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
    from sora.module import typed

    with pytest.raises((ConfigKeyError, ValidationError)):
        typed({"dit": {"widht": 3}})
