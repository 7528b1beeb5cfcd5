"""LoRA on the DiT (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models"), through `peft`.

`train.lora.rank > 0` wraps the DiT's linears that `train.lora.target` names with peft's LoRA layers: each gives
W x + (alpha / rank) B A x, with A (rank x in) drawn as peft draws it (Kaiming-uniform) and B (out x rank) zero, so
the wrapped DiT starts as the base model exactly. Only A and B train; every other weight is frozen.

The default target is what DiffSynth-Studio and musubi-tuner train on Wan: every attention projection (self and
cross: Wan's q, k, v, o) and both FFN linears of every block, written as glob patterns over our module names
(`DiT.named_modules()`). A pattern must match at least one linear layer.

"Our LoRA file" (the format sora/models/wan.py converts to ComfyUI's and diffusers' names): safetensors, two
float32 tensors a wrapped module, `<module>.lora_A.weight` (rank, in) and `<module>.lora_B.weight` (out, rank),
and the metadata {"format": "sora-lora", "rank", "alpha", "target"}. The update is W + (alpha / rank) B A.

This file sits with the models (not with training) because sampling and export read LoRA files too.
"""

import fnmatch
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn as nn

from sora.errors import SoraError
from sora.settings import Settings, setting

LORA_FORMAT = "sora-lora"
ADAPTER = "default"  # peft's adapter name: the one adapter a run trains

# Every attention projection and both FFN linears of every block: full attention (`attn`), factorized attention's
# temporal layer (`attn_t`), cross-attention (`cross`), MM-DiT's text stream (`text_attn`, `text_mlp`).
DEFAULT_TARGET = ["blocks.*.attn.*", "blocks.*.attn_t.*", "blocks.*.cross.*", "blocks.*.mlp.*",
                  "blocks.*.text_attn.*", "blocks.*.text_mlp.*"]

# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class LoRAArgs(Settings):
    """`train.lora.*`: LoRA on the DiT (0 rank: off, the whole DiT trains)."""

    rank: int = setting(0, ge=0)  # r; 0: no LoRA. 16 to 64 is what Wan LoRAs are commonly trained at
    alpha: float = setting(1.0, gt=0)  # the update is scaled by alpha / rank (peft's lora_alpha, no rsLoRA)
    # Glob patterns (fnmatch: `*` matches across dots) over the DiT's module names; only nn.Linear layers match,
    # and each pattern must match one. []: the blocks' attention and FFN linears (DEFAULT_TARGET, for any layout).
    target: List[str] = field(default_factory=list)
    # An existing LoRA file (ours: `sora-lora` safetensors) to continue from; its rank and modules must be these.
    init_from: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    def check(self, at: str = "") -> None:
        if self.init_from and self.rank == 0:
            raise SoraError(f"{at}init_from={self.init_from!r} needs {at}rank > 0 (the file's rank)")
        if self.init_from and not Path(self.init_from).is_file():
            raise SoraError(f"{at}init_from={self.init_from!r} is not a file")


# ---------------------------------------------------------------------------------------------------------------
# Wrapping
# ---------------------------------------------------------------------------------------------------------------


def target_patterns(dit: nn.Module, patterns: list[str], at: str = "train.lora.") -> list[str]:
    """The patterns in effect: the given ones, each of which must match a linear of the DiT, or (none given) those
    of DEFAULT_TARGET this DiT's layout has."""
    linears = [name for name, m in dit.named_modules() if isinstance(m, nn.Linear)]
    if not patterns:
        return [p for p in DEFAULT_TARGET if any(fnmatch.fnmatchcase(name, p) for name in linears)]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in linears):
            raise SoraError(f"{at}target: {pattern!r} matches no linear layer of the DiT (its linears are named "
                            f"like {', '.join(linears[:3])}, ...)")
    return list(patterns)


def target_modules(dit: nn.Module, patterns: list[str]) -> list[str]:
    """The names of the DiT's linears that the patterns match, in module order."""
    return [name for name, m in dit.named_modules()
            if isinstance(m, nn.Linear) and any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def add_lora(dit: nn.Module, args: LoRAArgs, at: str = "train.lora.") -> list[str]:
    """Wrap the targeted linears with peft's LoRA layers in place (B zero: the output is unchanged) and freeze every
    other weight; returns the wrapped modules' names."""
    from peft import LoraConfig, inject_adapter_in_model

    patterns = target_patterns(dit, list(args.target), at)
    names = target_modules(dit, patterns)
    config = LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=names, lora_dropout=0.0, bias="none",
                        use_rslora=False, init_lora_weights=True)
    inject_adapter_in_model(config, dit, adapter_name=ADAPTER)
    for name, p in dit.named_parameters():  # peft freezes the rest; said here, not assumed
        p.requires_grad_(".lora_A." in name or ".lora_B." in name)
    dit.lora_args = replace(args, target=patterns)  # what save_lora writes in the file's metadata
    return names


def lora_layers(dit: nn.Module) -> dict[str, nn.Module]:
    """{module name: peft LoRA layer} of a wrapped DiT, in module order."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in dit.named_modules() if isinstance(m, LoraLayer)}


def adapter_modules(dit: nn.Module) -> nn.ModuleDict:
    """The adapters alone, as modules shared with the DiT: {"blocks-0-attn-qkv": {"lora_A", "lora_B"}}. Its
    parameters are what trains, in a fixed order; the EMA copies this, not the frozen base."""
    return nn.ModuleDict({name.replace(".", "-"): nn.ModuleDict({"lora_A": m.lora_A[ADAPTER],
                                                                  "lora_B": m.lora_B[ADAPTER]})
                          for name, m in lora_layers(dit).items()})


# ---------------------------------------------------------------------------------------------------------------
# Our LoRA file
# ---------------------------------------------------------------------------------------------------------------


def adapter_state(adapters: nn.ModuleDict, gather=lambda t: t) -> dict[str, torch.Tensor]:
    """An adapter_modules() ModuleDict (the live one or its EMA copy) as our LoRA file's tensors (float32, CPU);
    `gather` makes a sharded tensor whole."""
    return {f"{key.replace('-', '.')}.{ab}.weight": gather(adapters[key][ab].weight).detach().float().cpu().contiguous()
            for key in adapters for ab in ("lora_A", "lora_B")}


def write_lora(tensors: dict[str, torch.Tensor], args: LoRAArgs, path: str) -> dict:
    """Our LoRA file from its tensors and the LoRA settings they were trained with; atomic."""
    from safetensors.torch import save_file

    meta = {"format": LORA_FORMAT, "rank": str(args.rank), "alpha": repr(float(args.alpha)),
            "target": ",".join(args.target)}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(out)  # a reader never sees half a file
    return {"out": str(out), "modules": len(tensors) // 2, "rank": args.rank, "alpha": args.alpha}


def save_lora(dit: nn.Module, path: str, adapters: nn.ModuleDict | None = None) -> dict:
    """Write a wrapped DiT's adapter (or `adapters`, e.g. the EMA copy) as our LoRA file."""
    return write_lora(adapter_state(adapters if adapters is not None else adapter_modules(dit)), dit.lora_args, path)


def read_lora(path: str, at: str = "lora") -> tuple[dict[str, torch.Tensor], int, float]:
    """(tensors, rank, alpha) of our LoRA file; one line naming the file for anything else."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise SoraError(f"{at}={path!r} is not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise SoraError(f"{at}={path!r} is not a readable safetensors file: {str(e).splitlines()[0][:200]}") from None
    if meta.get("format") != LORA_FORMAT:
        raise SoraError(f"{at}={path!r} is not a sora LoRA file (no {LORA_FORMAT!r} metadata; convert ComfyUI or "
                        "diffusers LoRAs with python -m sora.models.wan)")
    try:
        rank, alpha = int(meta["rank"]), float(meta["alpha"])
    except (KeyError, ValueError):
        raise SoraError(f"{at}={path!r}: its metadata lacks a numeric rank and alpha") from None
    return tensors, rank, alpha


def modules_of(tensors: dict) -> list[str]:
    """The module names a LoRA file's tensors adapt."""
    return sorted({k.rsplit(".lora_", 1)[0] for k in tensors if ".lora_A." in k or ".lora_B." in k})


def load_lora(dit: nn.Module, path: str, at: str = "train.lora.init_from") -> None:
    """Copy our LoRA file into a wrapped DiT's adapter: same rank and the same modules, or one line saying which
    differs."""
    tensors, rank, alpha = read_lora(path, at)
    args: LoRAArgs = dit.lora_args
    if rank != args.rank:
        raise SoraError(f"{at}={path!r} has rank {rank}; train.lora.rank={args.rank}: set train.lora.rank={rank}")
    if alpha != float(args.alpha):
        raise SoraError(f"{at}={path!r} has alpha {alpha:g}; train.lora.alpha={args.alpha:g}: "
                        f"set train.lora.alpha={alpha:g}")
    layers = lora_layers(dit)
    theirs, ours = set(modules_of(tensors)), set(layers)
    if theirs != ours:
        extra, missing = sorted(theirs - ours), sorted(ours - theirs)
        what = f"adapts {extra[0]}, which train.lora.target does not" if extra else \
            f"has no adapter for {missing[0]}, which train.lora.target names"
        raise SoraError(f"{at}={path!r} {what}: set train.lora.target to the file's modules")
    with torch.no_grad():
        for name, layer in layers.items():
            for ab in ("lora_A", "lora_B"):
                weight, saved = getattr(layer, ab)[ADAPTER].weight, tensors[f"{name}.{ab}.weight"]
                if saved.shape != weight.shape:
                    raise SoraError(f"{at}={path!r}: {name}.{ab}.weight is {list(saved.shape)}, the DiT's is "
                                    f"{list(weight.shape)} (a LoRA of another model)")
                weight.copy_(saved)


# ---------------------------------------------------------------------------------------------------------------
# Merging into the base weights
# ---------------------------------------------------------------------------------------------------------------


def merge_lora(state: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], rank: int, alpha: float,
               where: str = "lora") -> dict[str, torch.Tensor]:
    """A plain DiT state dict with the LoRA merged in: W + (alpha / rank) B A for each adapted module (computed in
    float32, stored in W's dtype); other tensors are passed through unchanged (not copied)."""
    merged = dict(state)
    for name in modules_of(tensors):
        key = f"{name}.weight"
        if key not in merged:
            raise SoraError(f"{where}: the LoRA adapts {name}, which this DiT does not have (a LoRA of another model)")
        a, b, w = tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"], merged[key]
        if a.shape[0] != rank or b.shape != (w.shape[0], rank) or a.shape[1] != w.shape[1]:
            raise SoraError(f"{where}: {name}'s adapter is {list(b.shape)} x {list(a.shape)}, which does not fit its "
                            f"{list(w.shape)} weight at rank {rank} (a LoRA of another model)")
        merged[key] = (w.float() + (alpha / rank) * (b.float() @ a.float())).to(w.dtype)
    return merged


def base_state(wrapped_state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """A wrapped DiT's state dict split into (the plain base's state dict, our LoRA file's tensors)."""
    base, adapters = {}, {}
    for key, value in wrapped_state.items():
        if f".lora_A.{ADAPTER}." in key or f".lora_B.{ADAPTER}." in key:
            adapters[key.replace(f".{ADAPTER}.", ".")] = value
        elif ".lora_" not in key:  # peft's empty containers hold no tensors
            base[key.replace(".base_layer.", ".")] = value
    return base, adapters


def merged_dit_state(dit: nn.Module, adapters: nn.ModuleDict | None = None) -> dict[str, torch.Tensor]:
    """A wrapped DiT's plain state dict with its adapter (or `adapters`, e.g. the EMA copy) merged in; the weights
    no adapter touches are the DiT's own tensors, not copies."""
    base, own = base_state(dit.state_dict())
    tensors = adapter_state(adapters) if adapters is not None else own
    return merge_lora(base, tensors, dit.lora_args.rank, dit.lora_args.alpha)
