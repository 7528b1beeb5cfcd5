"""The model as a whole: VAE + text encoder + DiT + objective, with the config that built them.

`ModelBundle` is what a text-to-video checkpoint holds and what everything after training uses: sampling
(sora/inference/pipeline.py), export (`save`), evaluation. It needs no Lightning and holds one copy of the DiT's
weights, the EMA or the raw ones as asked. Training wraps it (sora/training/dit_task.py) and adds what only
training needs: the EMA copy, the optimizer, the loss step.
"""

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from sora.config import to_plain, typed
from sora.diffusion.objectives import RectifiedFlow
from sora.errors import SoraError
from sora.inference.checkpoint import (
    load_checkpoint,
    load_vae,
    read_safetensors,
    submodule_state,
)
from sora.models.attention import backend_unavailable
from sora.models.conditioning import Conditioning
from sora.models.dit import DiT
from sora.models.geometry import LatentGeometry
from sora.models.lora import merge_lora, read_lora
from sora.models.text import build_text_encoder
from sora.models.vae import build_vae

log = logging.getLogger(__name__)

EXPORT_FORMAT = "sora-dit-v1"


def vae_from_config(cfg):
    """(VAE, cfg): a trained VAE from vae.ckpt (cfg.vae then records the architecture it has), else a new one."""
    if cfg.vae.ckpt:
        vae, vae_cfg = load_vae(cfg.vae.ckpt)
        cfg = cfg.copy()
        cfg.vae = OmegaConf.merge(vae_cfg, {"ckpt": cfg.vae.ckpt})
    else:
        vae = build_vae(cfg.vae)
    return vae.eval().requires_grad_(False), cfg


class ModelBundle(nn.Module):
    def __init__(self, cfg, vae: nn.Module, text: nn.Module, dit: DiT, weights: str = "init"):
        super().__init__()
        self.cfg = typed(cfg)
        self.vae, self.text, self.dit = vae, text, dit
        self.objective = RectifiedFlow(OmegaConf.to_object(self.cfg.objective), int(self.cfg.dit.patch_size[0]))
        self.geometry = LatentGeometry.of(vae, self.cfg.dit.patch_size)
        self.weights = weights  # which weights the DiT holds: "init", "init_from" (dit.init_from's), "raw" or "ema"

    # -- building --------------------------------------------------------------------------------------------

    @classmethod
    def build(cls, cfg, vae: nn.Module | None = None) -> "ModelBundle":
        """A new model from a checked config: a fresh DiT (and word encoder); the VAE from vae.ckpt or `vae`."""
        cfg = typed(cfg)
        if vae is None:
            vae, cfg = vae_from_config(cfg)
        text = build_text_encoder(cfg.text)
        if cfg.dit.init_from:  # released Wan2.1 weights; their config decides the architecture (cfg records it)
            from sora.models.wan import load_wan

            dit, dit_args = load_wan(cfg.dit.init_from, vae.latent_channels, text.dim, OmegaConf.to_object(cfg.dit))
            cfg = OmegaConf.merge(cfg, {"dit": OmegaConf.structured(dit_args)})
            return cls(cfg, vae, text, dit, weights="init_from")
        dit = DiT(vae.latent_channels, text.dim, OmegaConf.to_object(cfg.dit))  # a DiTArgs
        return cls(cfg, vae, text, dit)

    @classmethod
    def from_checkpoint(cls, path: str, ema: bool = True) -> "ModelBundle":
        """The model of a task=dit checkpoint (.ckpt) or of an export (.safetensors), one copy of the DiT's weights.

        The networks are built on the meta device and take the checkpoint's (memory-mapped) tensors as they are,
        so no random initialisation runs and no second copy of any weight is made.
        """
        if str(path).endswith(".safetensors"):
            tensors, meta = read_safetensors(path)
            if meta.get("format") != EXPORT_FORMAT:
                raise SoraError(f"{path!r} is a safetensors file but not a sora export (no {EXPORT_FORMAT!r} metadata)")
            cfg, weights = typed(json.loads(meta["sora_config"]), from_checkpoint=True), meta.get("weights", "ema")
            parts = {name: submodule_state(tensors, name + ".") for name in ("vae", "text", "dit")}
        else:
            ckpt = load_checkpoint(path)
            cfg = typed(ckpt["sora_config"], from_checkpoint=True)
            if cfg.task.kind.value != "dit":
                raise SoraError(f"ckpt={path!r} is a {cfg.task.kind.value!r} checkpoint; sampling needs a "
                                "text-to-video (task=dit) checkpoint")
            state, weights = ckpt["state_dict"], "ema" if ema else "raw"
            if cfg.train.lora.rank > 0:  # the adapter alone: the base is rebuilt as the run built it
                return cls.from_lora_checkpoint(cfg, state, ema, str(path))
            trained = "ema.model." if ema else "model."
            parts = {"vae": submodule_state(state, "model.vae."), "dit": submodule_state(state, trained + "dit."),
                     "text": submodule_state(state, trained + "text.")}
        return cls.assemble(cfg, parts, weights=weights, where=str(path))

    @classmethod
    def from_lora_checkpoint(cls, cfg, state: dict, ema: bool, where: str) -> "ModelBundle":
        """A LoRA run's checkpoint holds its adapter (raw and EMA), not the frozen base: the base is rebuilt from the
        run's config and seed as train.py built it (the same random init, or dit.init_from's weights), and the
        adapter merged in."""
        lora = OmegaConf.to_object(cfg.train.lora)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)  # train.py seeds every generator with it before building the model
            vae, built = vae_from_config(cfg)
            bundle = cls.build(built, vae=vae)
        names = [k[len("model.dit."):].replace(".lora_A.default.weight", "")
                 for k in state if k.startswith("model.dit.") and k.endswith(".lora_A.default.weight")]
        if ema:  # the EMA copy's keys: ema.model.blocks-0-attn-qkv.lora_A.weight
            tensors = {f"{n}.{ab}.weight": state[f"ema.model.{n.replace('.', '-')}.{ab}.weight"]
                       for n in names for ab in ("lora_A", "lora_B")}
        else:
            tensors = {f"{n}.{ab}.weight": state[f"model.dit.{n}.{ab}.default.weight"]
                       for n in names for ab in ("lora_A", "lora_B")}
        bundle.dit.load_state_dict(merge_lora(bundle.dit.state_dict(), tensors, lora.rank, lora.alpha, where),
                                   assign=True)
        bundle.weights = "ema" if ema else "raw"
        return bundle.eval().requires_grad_(False)

    def with_lora(self, path: str, at: str = "lora") -> "ModelBundle":
        """Merge our LoRA file into the DiT's weights, in place (sample.py lora=FILE; export --merge-lora FILE)."""
        tensors, rank, alpha = read_lora(path, at)
        merged = merge_lora(self.dit.state_dict(), tensors, rank, alpha, f"{at}={path!r}")
        self.dit.load_state_dict(merged, assign=True)  # new tensors for the merged weights; the rest as they were
        self.weights = f"{self.weights}+lora"
        return self

    @classmethod
    def assemble(cls, cfg, parts: dict[str, dict], vae: nn.Module | None = None, text: nn.Module | None = None,
                 weights: str = "ema", where: str = "weights") -> "ModelBundle":
        """A bundle from state dicts {"vae", "dit", "text"}. The VAE and the DiT are built on the meta device and
        take the given tensors as they are (memory-mapped ones stay on disk), so no random initialisation runs and
        no second copy of their weights is made. `vae` and `text` reuse modules already built instead; a trainable
        text encoder is loaded from parts["text"], a frozen one from text.path."""
        cfg = typed(cfg)
        text = text if text is not None else build_text_encoder(cfg.text)
        dit_args = OmegaConf.to_object(cfg.dit)  # a DiTArgs
        if problem := backend_unavailable(dit_args.attention_backend):  # the weights do not depend on it
            log.warning("%s: %s; this model runs with dit.attention_backend=sdpa here", where, problem)
            dit_args = replace(dit_args, attention_backend="sdpa")
        with torch.device("meta"):
            new_vae = build_vae(cfg.vae) if vae is None else None
            dit = DiT((vae or new_vae).latent_channels, text.dim, dit_args)
        for name, module in (("vae", new_vae), ("dit", dit)):
            if module is not None:
                _load(module, parts.get(name, {}), f"{where}: {name}", assign=True)
        if text.trainable:
            _load(text, parts.get("text", {}), f"{where}: text", assign=False)
        return cls(cfg, vae or new_vae, text, dit, weights).eval().requires_grad_(False)

    # -- parts -----------------------------------------------------------------------------------------------

    def trainable(self) -> nn.ModuleDict:
        """What training updates (and averages in its EMA): the DiT, and the text encoder when it is trainable."""
        return nn.ModuleDict({"dit": self.dit, **({"text": self.text} if self.text.trainable else {})})

    def train(self, mode: bool = True) -> "ModelBundle":
        """The frozen VAE and a frozen text encoder stay in eval mode whatever a trainer asks."""
        super().train(mode)
        self.vae.eval()
        if not self.text.trainable:
            self.text.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    def encode_text(self, captions: list[str]) -> Conditioning:
        """Captions -> the text part of a conditioning (b rows)."""
        return Conditioning(*self.text(list(captions)))

    # -- saving ----------------------------------------------------------------------------------------------

    def tensors(self) -> dict[str, torch.Tensor]:
        """What an export holds: `dit.*`, `vae.*`, and `text.*` for a trained word encoder (a frozen one is
        reloaded from text.path)."""
        parts = {"dit": self.dit, "vae": self.vae, **({"text": self.text} if self.text.trainable else {})}
        return {f"{name}.{k}": v.detach().cpu().contiguous()
                for name, m in parts.items() for k, v in m.state_dict().items()}

    def save(self, path: str, step: int | None = None, source: str | None = None) -> dict:
        """Write the bundle to safetensors (tensors and string metadata only: loading it cannot run code)."""
        from safetensors.torch import save_file

        tensors = self.tensors()
        metadata = {"format": EXPORT_FORMAT, "sora_config": json.dumps(to_plain(self.cfg)), "weights": self.weights,
                    "step": str(step if step is not None else ""), "source": str(source or "")}
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(out)  # atomic: a reader never sees half a file
        return {"out": str(out), "tensors": len(tensors), "step": step, "weights": self.weights}


def _load(module: nn.Module, state: dict, where: str, assign: bool) -> None:
    """Give a module the checkpoint's tensors (assign: take them as they are, for a meta-device module); a
    one-line error when they do not fit it."""
    try:
        module.load_state_dict(state, assign=assign)
    except RuntimeError as e:
        raise SoraError(f"{where}: the checkpoint's weights do not fit the model its config describes "
                        f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})") from None
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise SoraError(f"{where}: the checkpoint has no weights for {left[0]}")
