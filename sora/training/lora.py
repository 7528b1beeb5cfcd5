"""LoRA training (`train.lora.rank > 0`): what DiTTask does differently when only an adapter trains.

The wrapping itself and our LoRA file are in sora/models/lora.py (sampling and export read them too). Here:
- `LoRATraining.prepare`: peft wraps the DiT's targeted linears, everything else is frozen (a trainable word
  encoder too: only adapter weights train), and `train.lora.init_from` is loaded;
- the adapter as its own module (`adapters`): what the optimizer steps, what the EMA copies and averages (the
  frozen base has no EMA: at 1.3B that copy alone would be 5.7 GB of fp32 for nothing);
- checkpoints hold the adapter, its EMA and its optimizer state, not the frozen base: a resume rebuilds the base
  from the run's config as the first start did (train.py seeds every generator before building it; a released
  base comes from `dit.init_from`), so the continuation is exact;
- the DiT the samples and the validation loss use: the base with the EMA adapter merged in;
- `SaveLoRA`: RUN/lora.safetensors (the adapter) and RUN/lora_ema.safetensors (its EMA) when the run ends.

FSDP shards the wrapped DiT as it shards a plain one (frozen base weights included: FSDP2 takes units with frozen
and trained parameters) and the EMA adapter as one unit; each adapter tensor is gathered whole where a file or a
sampling copy needs it.
"""

import contextlib
import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn as nn

from sora.models.lora import (
    adapter_modules,
    adapter_state,
    add_lora,
    base_state,
    load_lora,
    merge_lora,
    write_lora,
)

log = logging.getLogger(__name__)


def whole(t: torch.Tensor) -> torch.Tensor:
    """A tensor in full: a sharded (DTensor) one gathered from every rank (every rank must call), else itself."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def reshard(module: nn.Module) -> None:
    """Every FSDP unit of `module` back to its shards: a unit left gathered after a forward (FSDP2 keeps the root's
    parameters gathered) would run on its gathered copy, not on values just written into the shards."""
    from torch.distributed.fsdp import FSDPModule

    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


@contextlib.contextmanager
def swapped(live: nn.Module, ema: nn.Module, sharded: nn.Module | None = None):
    """Inside the block the live adapter holds the EMA's values (shard by shard), after it its own again, bit for
    bit: a sharded run evaluates its EMA adapter on the sharded DiT without a second copy of the base. `sharded`:
    the FSDP module holding `live`, resharded on the way in and out."""
    if sharded is not None:
        reshard(sharded)
    pairs = list(zip(live.parameters(), ema.parameters()))
    with torch.no_grad():
        saved = [p.detach().clone() for p, _ in pairs]
        for p, e in pairs:
            p.copy_(e)
    try:
        yield
    finally:
        if sharded is not None:
            reshard(sharded)
        with torch.no_grad():
            for (p, _), value in zip(pairs, saved):
                p.copy_(value)


class LoRATraining:
    """The LoRA side of a DiT task: prepare the bundle, name what trains, strip and merge."""

    def __init__(self, args):
        self.args = args  # a LoRAArgs

    def prepare(self, bundle) -> None:
        """Wrap the DiT, freeze everything else (a trainable text encoder too), load train.lora.init_from."""
        if bundle.text.trainable:
            bundle.text.trainable = False  # this instance only: frozen, so checkpoints reload it as the base
        bundle.text.requires_grad_(False)
        bundle.vae.requires_grad_(False)
        names = add_lora(bundle.dit, self.args)
        if self.args.init_from:
            load_lora(bundle.dit, self.args.init_from)
        trained = sum(p.numel() for p in adapter_modules(bundle.dit).parameters())
        log.info("LoRA rank %d, alpha %g on %d linears of the DiT: %.2fM trained parameters%s", self.args.rank,
                 self.args.alpha, len(names), trained / 1e6,
                 f", from {self.args.init_from}" if self.args.init_from else "")

    @staticmethod
    def adapters(dit: nn.Module) -> nn.ModuleDict:
        """The DiT's adapters as one module (shared with the DiT, not a copy)."""
        return adapter_modules(dit)

    @staticmethod
    def strip_base(state_dict: dict) -> None:
        """A checkpoint's state dict without the frozen DiT base (in place): its adapters and EMA stay."""
        for key in [k for k in state_dict if k.startswith("model.dit.") and ".lora_" not in k]:
            del state_dict[key]

    @staticmethod
    def fill_base(state_dict: dict, dit: nn.Module) -> None:
        """Put the rebuilt base back into a checkpoint's state dict (in place), so it loads strictly."""
        for key, value in dit.state_dict().items():
            state_dict.setdefault(f"model.dit.{key}", value)

    def merged_state(self, dit_state: dict, ema_tensors: dict) -> dict:
        """A wrapped DiT's state dict (its keys as `dit.state_dict()` names them) with the EMA adapter merged in: the
        plain DiT's state dict."""
        base, _ = base_state(dit_state)
        return merge_lora(base, ema_tensors, self.args.rank, self.args.alpha, "EMA adapter")


class SaveLoRA(L.Callback):
    """When training ends (not when preempted): RUN/lora.safetensors, the adapter, and RUN/lora_ema.safetensors,
    its EMA, in our LoRA file's format (sora/models/lora.py). Every rank gathers; rank 0 writes."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_train_end(self, trainer, module):
        if getattr(trainer, "sora_preempted", None):
            return
        raw, ema = adapter_state(module.trained_module(), whole), adapter_state(module.ema.model, whole)
        if trainer.is_global_zero:
            for name, tensors in (("lora.safetensors", raw), ("lora_ema.safetensors", ema)):
                write_lora(tensors, module.model.dit.lora_args, self.run_dir / name)
            log.info("LoRA adapter written to %s (its EMA to lora_ema.safetensors)", self.run_dir / "lora.safetensors")

