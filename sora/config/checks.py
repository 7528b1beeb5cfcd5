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

import difflib
import typing

import torch
from omegaconf import DictConfig, OmegaConf

from sora.config.schema import EvalConfig, SampleConfig, Strategy, TaskKind, TrainConfig
from sora.data.data_args import is_builtin
from sora.data.moving_shapes import BEHIND_BAR
from sora.devices import world_size
from sora.diffusion.frame_modes import gives_frames
from sora.errors import SoraError
from sora.models.attention import backend_unavailable
from sora.models.fp8 import fp8_unavailable
from sora.models.text import TextKind
from sora.models.vae import VAEKind
from sora.settings import check_settings, nested_settings

# ---------------------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------------------


def check_keys(cfg, schema, prefix: str = "") -> None:
    """Refuse a key the schema does not have, with or without Hydra's `+` (which can add keys to any node)."""
    hints = typing.get_type_hints(schema)
    for key in cfg.keys() if isinstance(cfg, DictConfig) else []:
        name = f"{prefix}{key}"
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (the keys here: {', '.join(hints)})"
            raise SoraError(f"{name} is not a setting{hint}")
        sub = nested_settings(hints[key])
        if sub is not None and OmegaConf.select(cfg, str(key)) is not None:
            check_keys(cfg[key], sub, name + ".")


def check_no_missing(cfg) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise SoraError(f"{missing[0]} must be set ({missing[0]}=...)")


# ---------------------------------------------------------------------------------------------------------------
# Settings that must agree
# ---------------------------------------------------------------------------------------------------------------


def _require_full_cross(d, setting: str) -> None:
    layout, text = d.attention_layout.value, d.text_conditioning.value
    if layout != "full" or text != "cross":
        raise SoraError(f"{setting} needs dit.attention_layout=full and dit.text_conditioning=cross "
                        f"(got {layout}, {text})")


def _check_sections_agree(cfg) -> None:
    """Rules between sections: the task against what it trains, packing and sequence parallelism against the DiT."""
    t = cfg.train
    sp, is_dit = t.sequence_parallel_size, cfg.task.kind == TaskKind.dit
    if not is_dit:
        if cfg.vae.kind == VAEKind.pixel:
            raise SoraError("task=vae trains a learnable VAE: set vae=causal3d (or vae=diffusers vae.path=DIR)")
        if t.strategy == Strategy.fsdp or sp != 1:
            raise SoraError("train.strategy=fsdp and train.sequence_parallel_size split the DiT; task=vae trains "
                            "with train.strategy=ddp or auto and train.sequence_parallel_size=1")
        if t.param_dtype != "fp32":
            raise SoraError(f"train.param_dtype={t.param_dtype} stores the DiT's linears in low precision; "
                            "task=vae takes fp32")
        if t.fp8 is not None:
            raise SoraError(f"train.fp8={t.fp8} trains the DiT's linears in FP8; task=vae takes train.fp8=null")
        if t.dry_run:
            raise SoraError("train.dry_run=true reports on a DiT run (task=dit)")
        if t.lora.rank > 0:
            raise SoraError(f"train.lora.rank={t.lora.rank} puts LoRA on the DiT; task=vae takes train.lora.rank=0")
    if t.lora.rank > 0 and t.fp8 is not None:
        # torchao would swap the linears peft has wrapped (and the adapters' own): a combination nobody has run here
        raise SoraError(f"train.lora.rank={t.lora.rank} does not combine with train.fp8={t.fp8} (peft's LoRA layers "
                        "over torchao's float8 linears are untested): use train.fp8=null")
    if is_dit and cfg.dit.text_len and cfg.text.max_tokens > cfg.dit.text_len:
        raise SoraError(f"text.max_tokens={cfg.text.max_tokens} tokens a caption do not fit dit.text_len="
                        f"{cfg.dit.text_len}, the length the DiT pads captions to: set text.max_tokens <= "
                        f"{cfg.dit.text_len}")
    _check_caption_words(cfg)
    if is_dit and t.final_drift and not t.final_samples:
        raise SoraError("train.final_drift=true scores drift beside the end-of-run samples: set "
                        "train.final_samples=true (or train.final_drift=false)")
    if is_dit and t.final_drift and not gives_frames(cfg.conditioning.modes):
        raise SoraError("train.final_drift=true makes long videos window by window, which needs a model trained to "
                        "take given frames: set conditioning=mixed (or train.final_drift=false)")
    if is_dit and cfg.data.clip_start_share is not None and not gives_frames(cfg.conditioning.modes):
        raise SoraError(f"data.clip_start_share={cfg.data.clip_start_share} trains crops from later in a clip as "
                        "continuations, given their first frames: set conditioning=mixed (or "
                        "data.clip_start_share=null)")
    if cfg.data.packing:
        if not is_dit:
            raise SoraError("data.packing=true packs DiT token sequences; task=vae trains on one bucket per batch")
        _require_full_cross(cfg.dit, "data.packing=true")
        if sp > 1:
            raise SoraError("data.packing=true does not combine with train.sequence_parallel_size > 1 yet")
    if sp > 1:
        _require_full_cross(cfg.dit, f"train.sequence_parallel_size={sp}")
        if cfg.dit.num_heads % sp:
            raise SoraError(f"train.sequence_parallel_size={sp} must divide dit.num_heads={cfg.dit.num_heads}")
        world = world_size(t.devices, t.num_nodes)
        if world is not None and world % sp:
            raise SoraError(f"train.sequence_parallel_size={sp} must divide the number of processes "
                            f"(train.devices x train.num_nodes = {world})")


def _check_caption_words(cfg) -> None:
    """data.moving_shapes.occluder_in_caption: the word encoder must read `behind a bar`, or the setting does
    nothing (unknown words read as <unk>, words past text.max_tokens are cut)."""
    shapes = cfg.data.moving_shapes
    if shapes is None or not shapes.occluder_in_caption or not is_builtin(cfg.data) or cfg.text.kind != TextKind.vocab:
        return
    missing = [w for w in dict.fromkeys(BEHIND_BAR) if w not in [v.lower() for v in cfg.text.vocab]]
    if missing:
        raise SoraError(f"data.moving_shapes.occluder_in_caption=true ends captions `behind a bar`, and text.vocab "
                        f"lacks {', '.join(missing)}: add them to text.vocab")
    words = 5 + len(BEHIND_BAR)  # `a red circle bouncing left` + `behind a bar`
    if cfg.text.max_tokens < words + 1:  # and <bos>
        raise SoraError(f"data.moving_shapes.occluder_in_caption=true makes captions of {words} words, and "
                        f"text.max_tokens={cfg.text.max_tokens} cuts them: set text.max_tokens >= {words + 1}")


def _check_machine(cfg) -> None:
    """What needs this machine: a GPU-only attention backend, FP8 (not for a dry run, which plans from anywhere)."""
    if cfg.task.kind != TaskKind.dit or cfg.train.dry_run:
        return
    fp8 = cfg.train.fp8
    if fp8 is not None and (problem := fp8_unavailable(fp8)):
        raise SoraError(problem)
    if cfg.train.param_dtype != "fp32" and cfg.train.precision is None and not torch.cuda.is_available():
        raise SoraError(f"train.param_dtype={cfg.train.param_dtype} needs bf16 autocast: the default precision on a "
                        "CPU is 32-true, so set train.precision=bf16-mixed too")
    device = "cpu" if str(cfg.train.accelerator) == "cpu" else None
    if problem := backend_unavailable(cfg.dit.attention_backend.value, device):
        raise SoraError(problem)


# ---------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------


def check_config(cfg, schema) -> None:
    """Keys, missing values, every field's range and each section's own rules (sora/settings.py)."""
    check_keys(cfg, schema)
    check_no_missing(cfg)
    check_settings(cfg, schema)


def resolve_init_from(cfg) -> None:
    """dit.init_from=PATH: the checkpoint's own config decides the DiT's architecture. train.py calls this beside the
    data paths, before anything is built (it reads config.json, or a ComfyUI file's header, and every shard's
    presence); the architecture is written into cfg.dit, so the bucket checks and the checkpoints see it."""
    from dataclasses import fields
    from enum import Enum

    from sora.models.dit_args import DiTArgs
    from sora.models.wan import find_checkpoint, wan_dit_args

    args = wan_dit_args(find_checkpoint(cfg.dit.init_from).config,
                        DiTArgs(**OmegaConf.to_container(cfg.dit, resolve=True)), f"dit.init_from={cfg.dit.init_from}")
    for f in fields(args):
        value = getattr(args, f.name)
        OmegaConf.update(cfg, f"dit.{f.name}", value.value if isinstance(value, Enum) else value, force_add=True)


def check_train_config(cfg) -> None:
    """Everything about a composed train config that can be known without building a model."""
    check_config(cfg, TrainConfig)
    _check_sections_agree(cfg)
    _check_machine(cfg)


def check_against_vae(cfg, geometry) -> None:
    """Buckets against the VAE's frame rule and the patch size; their token counts against sequence parallelism."""
    where = "data.buckets" if cfg.data.buckets else "data.num_frames, data.height, data.width"
    rows = cfg.data.buckets or [[cfg.data.num_frames, cfg.data.height, cfg.data.width]]
    sp = cfg.train.sequence_parallel_size if cfg.task.kind == TaskKind.dit else 1
    for frames, height, width in rows:
        geometry.check(frames, height, width, where)
        tokens = geometry.num_tokens(frames, height, width)
        if tokens % sp:
            raise SoraError(f"{where}: [{frames}, {height}, {width}] has {tokens} tokens, which do not split over "
                            f"train.sequence_parallel_size={sp}")


def check_sample_config(cfg) -> None:
    """sample.py's settings (null ones come from the checkpoint and were checked when it trained)."""
    check_config(cfg, SampleConfig)


def check_eval_config(cfg) -> None:
    """`python -m sora.eval`'s settings (data.* left null come from the checkpoint, checked when it trained)."""
    check_config(cfg, EvalConfig)
