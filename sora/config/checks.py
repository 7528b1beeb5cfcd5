"""Every check of a user's config, in one place, before anything is built: a bad key, value or combination fails
with one line naming the key (a SoraError), never with an assert or a stack trace from deep inside a model.

- `check_train_config(cfg)`: unknown keys (also ones added with `+`), missing values, ranges, names of samplers
  and schedules, and the settings that must agree (heads and width, packing, sequence parallelism, the VAE task).
- `check_against_vae(cfg, geometry)`: what needs the VAE's frame rule (from the VAE object, which may come from a
  checkpoint): every bucket cuts into whole latents and patches, and splits over sequence-parallel ranks.
- `check_sample_config(cfg)`: the same for sample.py.

The components keep their asserts for direct use from Python; these checks run first, so no assert is reachable
from a command-line value.
"""

import dataclasses
import difflib
import typing
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sora.config.schema import EvalConfig, SampleConfig, TrainConfig
from sora.diffusion.samplers import SAMPLERS
from sora.diffusion.schedules import SCHEDULES
from sora.errors import SoraError
from sora.models.attention import backend_unavailable
from sora.models.dit_args import DiTArgs
from sora.models.fp8 import RECIPES as FP8_RECIPES, fp8_unavailable
from sora.settings import check_settings

# ---------------------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------------------


def _schema_of(tp):
    """The dataclass inside a field type (Optional[X] -> X), or None for a leaf."""
    for arg in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def check_keys(cfg, schema, prefix: str = "") -> None:
    """Refuse a key the schema does not have, with or without Hydra's `+` (which can add keys to any node)."""
    hints = typing.get_type_hints(schema)
    for key in cfg.keys() if isinstance(cfg, DictConfig) else []:
        name = f"{prefix}{key}"
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (the keys here: {', '.join(hints)})"
            raise SoraError(f"{name} is not a setting{hint}")
        sub = _schema_of(hints[key])
        if sub is not None and OmegaConf.select(cfg, str(key)) is not None:
            check_keys(cfg[key], sub, name + ".")


def check_no_missing(cfg) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise SoraError(f"{missing[0]} must be set ({missing[0]}=...)")


# ---------------------------------------------------------------------------------------------------------------
# Ranges
# ---------------------------------------------------------------------------------------------------------------


def _at_least(low):
    return lambda v: v >= low, f">= {low}"


def _above(low):
    return lambda v: v > low, f"> {low}"


def _within(low, high):
    return lambda v: low <= v <= high, f"in [{low}, {high}]"


def _below_one():
    return lambda v: 0 <= v < 1, "in [0, 1)"


def _one_of(names):
    return lambda v: v in names, lambda: f"one of {', '.join(sorted(names))}"  # read when it fails: names may grow


# key: (test, what the value must be). A key whose value is null (an optional setting left off) is not checked.
TRAIN_LIMITS = {
    "vae.latent_channels": _at_least(1), "vae.temporal_compression": _at_least(1),
    "vae.spatial_compression": _at_least(1), "vae.base_channels": _at_least(1), "vae.num_res_blocks": _at_least(1),
    "text.width": _at_least(1), "text.depth": _at_least(0), "text.num_heads": _at_least(1),
    "text.max_tokens": _at_least(2),  # a begin token and at least one word
    "objective.logit_normal_std": _above(0), "objective.t_min": (lambda v: 0 < v < 1, "in (0, 1)"),
    "sampler.name": _one_of(SAMPLERS), "sampler.schedule": _one_of(SCHEDULES), "sampler.shift": _above(0),
    "sampler.steps": _at_least(1), "sampler.cfg": _at_least(0),
    "data.num_frames": _at_least(1), "data.frame_stride": _at_least(1), "data.height": _at_least(1),
    "data.width": _at_least(1), "data.batch_size_per_gpu": _at_least(1), "data.tokens_per_batch": _at_least(1),
    "data.image_batch_ratio": _within(0, 1), "data.num_workers": _at_least(0), "data.shuffle_buffer": _at_least(1),
    "data.min_side_px": _at_least(1), "data.max_aspect": _at_least(1), "data.sample_fps": _at_least(1),
    "data.moving_shapes.clips_per_combo": _at_least(1), "data.moving_shapes.clips_per_shard": _at_least(1),
    "data.moving_shapes.num_frames": _at_least(1), "data.moving_shapes.size_px": _at_least(8),
    "data.moving_shapes.fps": _at_least(1),
    "task.kl_weight": _at_least(0), "task.lpips_weight": _at_least(0), "task.gan_weight": _at_least(0),
    "task.gan_start_step": _at_least(0), "task.disc_channels": _at_least(1),
    "vae.chunk_frames": _at_least(0), "vae.tile_px": _at_least(0), "vae.tile_overlap_px": _at_least(0),
    "vae.memory_budget_gb": _above(0),
    "optim.lr": _above(0), "optim.weight_decay": _at_least(0), "optim.warmup_steps": _at_least(0),
    "optim.decay_fraction": _within(0, 1), "optim.grad_clip": _at_least(0),
    "train.max_minutes": _above(0), "train.ema_decay": _below_one(), "train.caption_dropout": _within(0, 1),
    "train.num_nodes": _at_least(1), "train.sequence_parallel_size": _at_least(1),
    "train.log_every_n_steps": _at_least(1), "train.sample_every_n_steps": _at_least(0),
    "train.checkpoint_every_n_steps": _at_least(1), "train.keep_last_n": _at_least(-1),
    "train.max_nonfinite_steps": _at_least(1), "train.num_threads": _at_least(1), "train.samples_per_prompt": _at_least(1),
    "train.progress_every_s": _above(0), "train.fp8": _one_of(FP8_RECIPES), "train.profile_steps": _at_least(0),
    "train.param_dtype": _one_of({"fp32", "bf16"}),  # sora/training/master_weights.py
    "train.profile_start_step": _at_least(1),
    "val.every_n_steps": _at_least(0), "val.num_clips": _at_least(1), "val.batch_size": _at_least(1),
}
SAMPLE_LIMITS = {
    "steps": _at_least(1), "cfg": _at_least(0), "num_frames": _at_least(1), "height": _at_least(1),
    "width": _at_least(1), "fps": _at_least(1), "batch_size": _at_least(1), "sampler": _one_of(SAMPLERS),
    "schedule": _one_of(SCHEDULES), "shift": _above(0), "image_at": _one_of({"first", "last"}),
    "extend": _one_of({"forward", "backward"}), "strength": _within(0, 1), "cfg_visual": _at_least(0),
    "overlap_frames": _at_least(1),
}
TRAIN_LIMITS["provenance.watermark_psnr_db"] = SAMPLE_LIMITS["provenance.watermark_psnr_db"] = _within(30, 60)

EVAL_LIMITS = {
    "batch_size": _at_least(1), "steps": _at_least(1), "recon_clips": _at_least(1), "samples_per_prompt": _at_least(1),
    "fvd.num_real": _at_least(2), "fvd.num_generated": _at_least(2), "fvd.num_frames": _at_least(1),
    "fvd.frame_stride": _at_least(1), "clip.samples_per_prompt": _at_least(1),
}


def check_limits(cfg, limits: dict) -> None:
    for key, (ok, want) in limits.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and not ok(value):
            raise SoraError(f"{key} must be {want() if callable(want) else want}, got {value}")


# ---------------------------------------------------------------------------------------------------------------
# Settings that must agree
# ---------------------------------------------------------------------------------------------------------------


def _check_vae(v) -> None:
    if v.kind.value == "diffusers" and not v.path:  # what is in the directory is checked when it is read
        raise SoraError("vae=diffusers needs vae.path: a local directory written by diffusers' save_pretrained")
    if v.kind.value != "causal3d" or v.ckpt:  # a checkpoint brings its own (already checked) architecture
        return
    for key in ("temporal_compression", "spatial_compression"):
        if v[key] & (v[key] - 1):
            raise SoraError(f"vae.{key} must be a power of 2, got {v[key]}")
    if v.temporal_compression > v.spatial_compression:
        raise SoraError(f"vae.temporal_compression={v.temporal_compression} may not exceed "
                        f"vae.spatial_compression={v.spatial_compression}")
    levels = v.spatial_compression.bit_length() - 1  # one downsampling per factor of 2
    if len(v.channel_mult) != levels + 1:
        raise SoraError(f"vae.channel_mult needs log2(vae.spatial_compression) + 1 = {levels + 1} entries, "
                        f"got {list(v.channel_mult)}")
    if v.shortcuts:  # each shortcut folds space (x4, or x8 with time) into the next level's channels, evenly
        chans = [v.base_channels * m for m in v.channel_mult]
        for a, b in zip(chans, chans[1:]):
            if (4 * a) % b or (4 * b) % a:
                raise SoraError(f"vae.shortcuts=true folds each level's channels 4x (8x with time) into the next: "
                                f"{a} -> {b} channels in vae.channel_mult={list(v.channel_mult)} do not divide")


def _check_text(t) -> None:
    if t.kind.value == "hf":
        if not t.path:
            raise SoraError("text=hf needs text.path: a local directory written by save_pretrained()")
        return
    if not t.vocab:
        raise SoraError("text.vocab is empty: list the words the captions use")
    words = [w.lower() for w in t.vocab]
    repeated = sorted({w for w in words if words.count(w) > 1})
    if repeated:
        raise SoraError(f"text.vocab repeats {', '.join(repeated)}")
    if t.width % t.num_heads:
        raise SoraError(f"text.width={t.width} must divide by text.num_heads={t.num_heads}")


def _devices_count(cfg) -> int | None:
    """train.devices x train.num_nodes when devices is a count, else None (auto, or a list: known at run time)."""
    devices = str(cfg.train.devices).strip()
    if devices.isdigit():
        return int(devices) * cfg.train.num_nodes
    if devices.startswith("["):
        return len([x for x in devices.strip("[]").split(",") if x.strip()]) * cfg.train.num_nodes
    return None


def _require_full_cross(d, setting: str) -> None:
    layout, text = d.attention_layout.value, d.text_conditioning.value
    if layout != "full" or text != "cross":
        raise SoraError(f"{setting} needs dit.attention_layout=full and dit.text_conditioning=cross "
                        f"(got {layout}, {text})")


def _check_conditioning(cfg) -> None:
    c = cfg.conditioning
    for name, p in c.modes.items():
        if p < 0:
            raise SoraError(f"conditioning.modes.{name} must be >= 0, got {p}")
    if sum(c.modes.values()) <= 0:
        raise SoraError("conditioning.modes: the probabilities must not all be 0 (none: 1 trains text only)")
    if not 0 <= c.frame_noise < 1:
        raise SoraError(f"conditioning.frame_noise must be in [0, 1), got {c.frame_noise}")


def _check_training(cfg) -> None:
    t = cfg.train
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise SoraError(f"optim.betas must be two numbers in [0, 1), got {list(cfg.optim.betas)}")
    devices = str(t.devices).strip()
    if devices.lstrip("-").isdigit() and int(devices) < 1 and int(devices) != -1:
        raise SoraError(f"train.devices must be auto, a count >= 1, -1 (all) or a list of indices, got {devices}")
    if t.max_steps != -1 and t.max_steps < 1:
        raise SoraError(f"train.max_steps must be >= 1, or -1 with train.max_minutes set, got {t.max_steps}")
    if t.max_steps == -1 and t.max_minutes is None:
        raise SoraError("train.max_steps=-1 (no step limit) needs train.max_minutes: the run would never end")
    for row in cfg.data.buckets or []:
        if len(row) != 3 or min(row) < 1:
            raise SoraError(f"data.buckets: each bucket is [num_frames, height, width] >= 1, got {list(row)}")
    sp, is_dit = t.sequence_parallel_size, cfg.task.kind.value == "dit"
    if not is_dit:
        if cfg.vae.kind.value == "pixel":
            raise SoraError("task=vae trains a learnable VAE: set vae=causal3d (or vae=diffusers vae.path=DIR)")
        if cfg.task.lpips_weight > 0 and not cfg.task.lpips_backbone:
            raise SoraError("task.lpips_weight > 0 needs task.lpips_backbone: a local VGG16 weights file "
                            "(nothing is downloaded; README \"Training the VAE\" says how to make one)")
        if t.strategy.value == "fsdp" or sp != 1:
            raise SoraError("train.strategy=fsdp and train.sequence_parallel_size split the DiT; task=vae trains "
                            "with train.strategy=ddp or auto and train.sequence_parallel_size=1")
    if t.param_dtype != "fp32":
        if not is_dit:
            raise SoraError(f"train.param_dtype={t.param_dtype} stores the DiT's linears in low precision; task=vae takes fp32")
        if t.strategy.value == "fsdp":
            raise SoraError(f"train.param_dtype={t.param_dtype} does not combine with train.strategy=fsdp, which already "
                            "keeps fp32 shards and computes in bf16: use train.param_dtype=fp32")
        if t.precision is not None and t.precision != "bf16-mixed":
            raise SoraError(f"train.param_dtype={t.param_dtype} needs train.precision=bf16-mixed (autocast), got {t.precision}")
    if cfg.data.packing:
        if not is_dit:
            raise SoraError("data.packing=true packs DiT token sequences; task=vae trains on one bucket per batch")
        _require_full_cross(cfg.dit, "data.packing=true")
        if sp > 1:
            raise SoraError("data.packing=true does not combine with train.sequence_parallel_size > 1 yet")
        if not cfg.data.tokens_per_batch:
            raise SoraError("data.packing=true packs clips up to data.tokens_per_batch tokens: set data.tokens_per_batch")
    if sp > 1:
        _require_full_cross(cfg.dit, f"train.sequence_parallel_size={sp}")
        if cfg.dit.num_heads % sp:
            raise SoraError(f"train.sequence_parallel_size={sp} must divide dit.num_heads={cfg.dit.num_heads}")
        world = _devices_count(cfg)
        if world is not None and world % sp:
            raise SoraError(f"train.sequence_parallel_size={sp} must divide the number of processes "
                            f"(train.devices x train.num_nodes = {world})")


def _check_machine(cfg) -> None:
    """What needs this machine: a GPU-only attention backend, FP8 (not for a dry run, which plans from anywhere)."""
    fp8 = cfg.train.fp8
    if cfg.task.kind.value != "dit":
        if fp8 is not None:
            raise SoraError(f"train.fp8={fp8} trains the DiT's linears in FP8; task=vae takes train.fp8=null")
        return
    if cfg.train.dry_run:
        return
    if fp8 is not None and (problem := fp8_unavailable(fp8)):
        raise SoraError(problem)
    if cfg.train.param_dtype != "fp32" and cfg.train.precision is None and not torch.cuda.is_available():
        raise SoraError(f"train.param_dtype={cfg.train.param_dtype} needs bf16 autocast: the default precision on a CPU "
                        "is 32-true, so set train.precision=bf16-mixed too")
    device = "cpu" if str(cfg.train.accelerator) == "cpu" else None
    if problem := backend_unavailable(cfg.dit.attention_backend.value, device):
        raise SoraError(problem)


def _check_val(v) -> None:
    if not v.timesteps or not all(0 < t <= 1 for t in v.timesteps):
        raise SoraError(f"val.timesteps must be a non-empty list of numbers in (0, 1], got {list(v.timesteps)}")


def check_train_config(cfg) -> None:
    """Everything about a composed train config that can be known without building a model."""
    check_keys(cfg, TrainConfig)
    check_no_missing(cfg)
    check_limits(cfg, TRAIN_LIMITS)
    check_settings(cfg.dit, DiTArgs, "dit.")
    _check_vae(cfg.vae)
    _check_text(cfg.text)
    _check_conditioning(cfg)
    _check_training(cfg)
    _check_val(cfg.val)
    check_provenance(cfg.provenance, "provenance")
    _check_machine(cfg)


def check_against_vae(cfg, geometry) -> None:
    """Buckets against the VAE's frame rule and the patch size; their token counts against sequence parallelism."""
    where = "data.buckets" if cfg.data.buckets else "data.num_frames, data.height, data.width"
    rows = cfg.data.buckets or [[cfg.data.num_frames, cfg.data.height, cfg.data.width]]
    sp = cfg.train.sequence_parallel_size if cfg.task.kind.value == "dit" else 1
    for frames, height, width in rows:
        geometry.check(frames, height, width, where)
        tokens = geometry.num_tokens(frames, height, width)
        if tokens % sp:
            raise SoraError(f"{where}: [{frames}, {height}, {width}] has {tokens} tokens, which do not split over "
                            f"train.sequence_parallel_size={sp}")


def check_sample_config(cfg) -> None:
    """sample.py's settings (null ones come from the checkpoint and were checked when it trained)."""
    check_keys(cfg, SampleConfig)
    check_no_missing(cfg)
    check_limits(cfg, SAMPLE_LIMITS)
    if (cfg.prompt is None) == (cfg.prompts is None):
        raise SoraError("give exactly one of prompt='...' (with out=FILE.mp4) or prompts=FILE (with out_dir=DIR)")
    if cfg.prompt is not None and not cfg.out:
        raise SoraError("prompt= needs out=FILE.mp4")
    if cfg.prompts is not None and not cfg.out_dir:
        raise SoraError("prompts= needs out_dir=DIR")
    check_provenance(cfg.provenance, "provenance")


def check_provenance(p, where: str) -> None:
    """Certificate and key come together, and exist."""
    if p.c2pa and (p.cert is None) != (p.key is None):
        raise SoraError(f"{where}.cert and {where}.key come together (or neither: a local development key)")
    for name in ("cert", "key"):
        path = getattr(p, name)
        if p.c2pa and path is not None and not Path(path).is_file():
            raise SoraError(f"{where}.{name}={path!r} is not a file")


def check_eval_config(cfg) -> None:
    """`python -m sora.eval`'s settings (data.* left null come from the checkpoint, checked when it trained)."""
    check_keys(cfg, EvalConfig)
    check_no_missing(cfg)
    check_limits(cfg, EVAL_LIMITS)
