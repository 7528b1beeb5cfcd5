"""Checkpoints on disk: safe reads, what a resume may use, the layout of their keys, and trained VAEs.

A checkpoint is a torch.save archive (a zip) read with `weights_only=True`, so a file that would construct
arbitrary objects (run code) is refused. Reads are memory-mapped: tensors stay on disk until something copies
them, so picking one weight set out of a checkpoint (EMA or raw) never holds the others in memory.

Key layout (`sora_format` 2): a DiT task's state is `model.{vae,text,dit}.*` (its ModelBundle), `ema.model.{dit,
text}.*` (the EMA copy) and, for a frozen text encoder, no `model.text.*` at all (it is reloaded from text.path).
Format 1 checkpoints (`dit.*`, `text.*`, `vae.*`) are upgraded on read. A VAE task's state is `vae.*`.
"""

import os
import pickle
import zipfile
from pathlib import Path

import torch

from sora.config import typed
from sora.errors import SoraError

FORMAT = 2
_V1_PREFIXES = ("dit.", "text.", "vae.")


def upgrade(ckpt: dict) -> dict:
    """Rename a format-1 DiT checkpoint's keys to today's layout, in place; other checkpoints pass unchanged."""
    if ckpt.get("sora_format", 1) >= FORMAT or ckpt.get("sora_config", {}).get("task", {}).get("kind") != "dit":
        return ckpt
    state = ckpt["state_dict"]
    for key in [k for k in state if k.startswith(_V1_PREFIXES)]:
        state["model." + key] = state.pop(key)
    ckpt["sora_format"] = FORMAT
    return ckpt


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e).strip() else type(e).__name__


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a sora checkpoint (memory-mapped, weights_only=True); one-line SoraError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise SoraError(f"checkpoint {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise SoraError(f"{str(path)!r} is not a readable checkpoint "
                        "(not a torch.save archive: truncated, or another format)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses pickles that would construct arbitrary objects (i.e. run code) on load.
        raise SoraError(f"{str(path)!r} is not a safe checkpoint: it holds objects beyond tensors and plain "
                        f"types, and loading it could run code ({_first_line(e)})") from None
    except Exception as e:  # torch raises many types for a damaged archive; each means "not readable"
        raise SoraError(f"{str(path)!r} is not a readable checkpoint (truncated or another format): "
                        f"{_first_line(e)}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "sora_config" not in ckpt:
        raise SoraError(f"{str(path)!r} is a torch file but not a sora checkpoint (no state_dict / sora_config)")
    return upgrade(ckpt)


def checkpoint_problem(path: Path) -> str | None:
    """None when a resume may read `path`, else why not: a write cut short, or a pickle that would run code.

    The zip directory sits at the end of the file, so a cut-short write fails the first test. The weights_only
    read is memory-mapped: it parses the pickle and maps the tensors without reading them, cheap for many GB.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as e:
        return f"not a complete torch.save archive ({e})"
    if not any(n.endswith("data.pkl") for n in names):
        return "a zip archive without data.pkl: not a torch checkpoint"
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        return f"it would run code when loaded, so it is refused ({_first_line(e)})"
    except Exception as e:
        return f"not readable ({_first_line(e)})"
    return None


def submodule_state(state: dict, prefix: str) -> dict:
    """The entries of a state dict under `prefix`, with the prefix taken off."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_vae(path: str):
    """A trained VAE from a `task=vae` checkpoint -> (module, its VAEConfig)."""
    from sora.models.vae import build_vae

    ckpt = load_checkpoint(path)
    cfg = typed(ckpt["sora_config"], from_checkpoint=True)
    if cfg.task.kind.value != "vae":
        raise SoraError(f"vae.ckpt={path!r} is a {cfg.task.kind.value!r} checkpoint, not a VAE one (task=vae)")
    vae = build_vae(cfg.vae)
    vae.load_state_dict(submodule_state(ckpt["state_dict"], "vae."))
    return vae, cfg.vae


def read_safetensors(path: str) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file; a one-line SoraError for a damaged one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise SoraError(f"{str(path)!r} is not a readable safetensors file: {_first_line(e)}") from None
