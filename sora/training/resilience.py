"""What keeps a run alive: preemption, RNG state, non-finite steps, a checkpoint to resume from, run records.

- `Preemption`: SIGTERM (schedulers' notice) and SIGUSR1 (SLURM's `--signal`) finish the current step, write
  `last.ckpt` and stop cleanly; rerunning the same command resumes from it.
- `rng_state` / `set_rng_state`: torch (CPU and CUDA), Python and NumPy generators go into every checkpoint
  as plain tensors and lists (loadable with weights_only=True), so a resumed run draws the same noise,
  timesteps and caption dropouts as an uninterrupted one.
- `NonFiniteGuard`: a step whose loss or gradients are NaN/Inf is skipped (no update) and counted;
  `max_consecutive` of them in a row write a checkpoint and stop the run with a clear message.
- `AtomicCheckpointIO`: checkpoints are written to a temporary name, then renamed.
- `find_resume_checkpoint`: the newest checkpoint that reads, falling back past a damaged or unsafe `last.ckpt`.
- `run_record`: git commit, package versions, command line and host of a run.
"""

import logging
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sora.errors import SoraError
from sora.inference.checkpoint import checkpoint_problem

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Preemption
# ---------------------------------------------------------------------------------------------------------------


class Preemption(L.Callback):
    """On SIGTERM / SIGUSR1: finish the step, save `last_path`, stop; the trainer then exits normally."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, last_path: Path):
        self.last_path, self.received = Path(last_path), None

    def on_train_start(self, trainer, module):
        # Installed after Lightning's own handlers (registered when fit starts), so ours decide.
        for sig in self.SIGNALS:
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.received = signal.Signals(signum).name

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        received = self.received
        if trainer.world_size > 1:  # every rank stops at the same step, even if only one got the signal
            flag = torch.tensor(float(received is not None), device=module.device)
            any_rank = trainer.strategy.reduce(flag, reduce_op="max") > 0  # every rank joins the all-reduce
            received = received or ("signal on another rank" if any_rank else None)
        if received:
            log.warning("%s received: saving %s at step %d and stopping; rerun the same command to resume",
                        received, self.last_path, trainer.global_step)
            trainer.save_checkpoint(self.last_path, weights_only=False)
            trainer.should_stop = True
            trainer.sora_preempted = received


# ---------------------------------------------------------------------------------------------------------------
# RNG state
# ---------------------------------------------------------------------------------------------------------------


def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------------
# Non-finite steps
# ---------------------------------------------------------------------------------------------------------------


class NonFiniteGuard:
    """Counts skipped steps; the task asks it before each optimizer step (see sora/training/task.py)."""

    def __init__(self, max_consecutive: int):
        self.max_consecutive, self.consecutive, self.total = max_consecutive, 0, 0

    def check(self, what: str, finite: bool, step: int) -> bool:
        """True when the step may go on; False when it is skipped. Raises after too many in a row."""
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.total += 1
        log.warning("step %d: non-finite %s, step skipped (%d in a row, %d in all)", step, what, self.consecutive,
                    self.total)
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteError(f"{self.consecutive} steps in a row had a non-finite {what} (last at step {step}); "
                                 "lower optim.lr, check the data, or raise train.max_nonfinite_steps")
        return False

    def state_dict(self) -> dict:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.consecutive, self.total = state.get("consecutive", 0), state.get("total", 0)


class NonFiniteError(SoraError):
    """Too many non-finite steps in a row."""


def grads_finite(params) -> bool:
    # A sharded (FSDP) gradient is a DTensor: check this rank's shard; the caller makes the ranks agree.
    grads = [g.to_local() if hasattr(g, "to_local") else g for g in (p.grad for p in params) if g is not None]
    if not grads:
        return True
    # One fused norm per tensor (a NaN/Inf anywhere makes its norm non-finite), one sync for the whole check.
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


# ---------------------------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------------------------


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to `NAME.tmp`, then rename: a run killed mid-write leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)


def check_resume_fits(path: Path, module, cfg) -> None:
    """The resume checkpoint holds the weights of the model this command builds; else one line naming the settings
    its run had that this command does not (a setting given then and not now, or a default changed since), before
    the run's config.yaml is rewritten and before Lightning would stop on the state dict."""
    from sora.config.schema import flat_keys, to_plain, typed
    from sora.inference.checkpoint import load_checkpoint, upgrade

    ckpt = upgrade(load_checkpoint(path))  # memory-mapped: only the shapes are read; format-1 names renamed
    saved, own = ckpt.get("state_dict", {}), module.state_dict()
    # Only what the checkpoint holds: a frozen text encoder or a LoRA run's base is rebuilt, not stored.
    misfit = sorted(k for k in saved if k not in own or tuple(own[k].shape) != tuple(saved[k].shape))
    if not misfit:
        return
    was = flat_keys(to_plain(typed(ckpt["sora_config"], from_checkpoint=True))) if "sora_config" in ckpt else {}
    now = flat_keys(to_plain(cfg))
    model_keys = [k for k in sorted(was) if k.split(".")[0] in ("dit", "vae", "text", "task") and
                  was[k] != now.get(k)]
    differ = ", ".join(f"{k}={was[k]!r} (now {now.get(k)!r})" for k in model_keys[:3]) or "no setting we can name"
    raise SoraError(f"cannot resume from {path}: its weights are not those of the model this command builds "
                    f"({misfit[0]}); its run had {differ}. Give those settings again to resume it, or start a new run "
                    "(another hydra.run.dir)")


def find_resume_checkpoint(ckpt_dir: Path) -> Path | None:
    """`last.ckpt` if a resume may use it, else the newest `step*.ckpt` that it may; None when there is none at all.

    A checkpoint is passed over when its write was cut short, or when it holds a pickle that would run code on
    load (sora.inference.checkpoint.checkpoint_problem), each with one warning line naming it.
    """
    def step_of(p: Path) -> int:
        m = re.search(r"(\d+)", p.stem)
        return int(m.group(1)) if m else -1

    candidates = [ckpt_dir / "last.ckpt"] + sorted(ckpt_dir.glob("step*.ckpt"), key=step_of, reverse=True)
    tried = []
    for path in candidates:
        if not path.is_file():
            continue
        problem = checkpoint_problem(path)
        if problem:
            log.warning("cannot resume from %s: %s", path, problem)
            tried.append(path.name)
            continue
        if tried:
            log.warning("resuming from %s instead (%s unreadable)", path, ", ".join(tried))
        return path
    if tried:
        raise SoraError(f"no readable checkpoint in {ckpt_dir} to resume from ({', '.join(tried)} are damaged or "
                        "unsafe); move them away to start afresh")
    return None


# ---------------------------------------------------------------------------------------------------------------
# Run records
# ---------------------------------------------------------------------------------------------------------------

PACKAGES = ("sora", "torch", "lightning", "hydra-core", "omegaconf", "webdataset", "decord", "av", "einops", "numpy",
            "wandb", "transformers", "xformers", "diffusers")


def run_record() -> dict:
    """Where and with what a run ran: git commit (and whether the tree was dirty), versions, command, host."""
    root = Path(__file__).resolve().parents[2]

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    record = {"git_commit": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain")),
              "versions": versions, "python": platform.python_version(), "command": [sys.executable, *sys.argv],
              "host": platform.node(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "cuda": torch.version.cuda,
              "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
              "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    return record
