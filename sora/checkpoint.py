"""Checkpoints: atomic writes, safe reads (`weights_only=True`), and rebuilding models from them."""

import os
import pickle
import zipfile
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sora.errors import SoraError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to `NAME.tmp`, then rename: a run killed mid-write leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a sora checkpoint with weights_only=True; a clear SoraError for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise SoraError(f"checkpoint {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise SoraError(f"{str(path)!r} is not a readable checkpoint (not a torch.save archive: truncated, or another format)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses pickles that would construct arbitrary objects (i.e. run code) on load.
        raise SoraError(f"{str(path)!r} is not a safe checkpoint: it holds objects beyond tensors and plain "
                        f"types, and loading it could run code ({str(e).splitlines()[0][:200]})") from e
    except Exception as e:  # torch raises many types for a damaged archive; each means "not readable"
        raise SoraError(f"{str(path)!r} is not a readable checkpoint (truncated or another format): "
                        f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "sora_config" not in ckpt:
        raise SoraError(f"{str(path)!r} is a torch file but not a sora checkpoint (no state_dict / sora_config)")
    return ckpt


def _submodule_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_vae(path: str):
    """A trained VAE from a `task=vae` checkpoint -> (module, its VAEConfig)."""
    from sora.module import typed
    from sora.vae import build_vae

    ckpt = load_checkpoint(path)
    cfg = typed(ckpt["sora_config"])
    if cfg.task.kind.value != "vae":
        raise SoraError(f"vae.ckpt={path!r} is a {cfg.task.kind.value!r} checkpoint, not a VAE one (task=vae)")
    vae = build_vae(cfg.vae)
    vae.load_state_dict(_submodule_state(ckpt["state_dict"], "vae."))
    return vae, cfg.vae


def load_dit_module(path: str):
    """The DiTModule of a `task=dit` checkpoint, weights loaded (the VAE's come from the checkpoint itself)."""
    from sora.module import DiTModule, typed

    if str(path).endswith(".safetensors"):  # written by sora.export: tensors and JSON metadata only
        from sora.export import load_exported

        return load_exported(path)
    ckpt = load_checkpoint(path)
    cfg = typed(ckpt["sora_config"])
    if cfg.task.kind.value != "dit":
        raise SoraError(f"ckpt={path!r} is a {cfg.task.kind.value!r} checkpoint; sampling needs a text-to-video "
                        "(task=dit) checkpoint")
    module = DiTModule(cfg, load_vae_ckpt=False)
    module.load_state_dict(ckpt["state_dict"])
    return module, cfg
