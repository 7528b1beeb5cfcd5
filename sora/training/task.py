"""The base of every training task: what the DiT and the VAE tasks share, written once.

A task is a LightningModule that holds what trains and defines its loss; this base adds the rest of a run:
AdamW with the configured schedule, skipping non-finite steps on every rank alike, the RNG state and run
record in every checkpoint (all loadable with weights_only=True), and putting the RNG back on resume.

It also says what train.py needs to know of it, so train() has one path for every task: how it is built from a
checked config (`from_config`, which checks the buckets against the VAE before building what trains), the
callbacks it adds, how many ranks share a clip's tokens, and what it reports at the end of a run.
"""

from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from sora.config import check_against_vae, to_plain
from sora.data.preflight import preflight
from sora.inference.checkpoint import FORMAT
from sora.training.optim import adamw, training_progress
from sora.training.resilience import (
    NonFiniteGuard,
    grads_finite,
    rng_state,
    set_rng_state,
)


def model_params(optimizer) -> list:
    """The module's parameters an optimizer steps (MasterWeightAdamW's param_groups hold its fp32 copies instead)."""
    return getattr(optimizer, "model_params", None) or [p for group in optimizer.param_groups for p in group["params"]]


class Task(L.LightningModule):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.guard = NonFiniteGuard(cfg.train.max_nonfinite_steps)
        self.run_record: dict | None = None  # set by train.py; saved in checkpoints
        self._pending_rng = None

    def trained_parameters(self):
        """The parameters the optimizer updates."""
        raise NotImplementedError

    # -- what train.py asks of a task ------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg) -> "Task":
        """The task for a checked config; `check_buckets` runs before anything big is built."""
        raise NotImplementedError

    @staticmethod
    def check_buckets(cfg, geometry) -> None:
        """Every bucket against the VAE's frame rule and the patch size, then whether the shards' metadata says
        any clip can fill it (a dry run counts every clip itself)."""
        check_against_vae(cfg, geometry)
        if not cfg.train.dry_run:
            preflight(OmegaConf.to_object(cfg.data))

    def describe(self) -> str:
        """One line for the log: the parameter counts of what it holds."""
        raise NotImplementedError

    def callbacks(self, run_dir: Path, buckets) -> list:
        """The callbacks this task adds to every run's (checkpoints, progress, data report)."""
        return []

    @property
    def sequence_parallel_size(self) -> int:
        """Ranks that share each clip's tokens (they read the same batches)."""
        return 1

    def check_before_training(self) -> None:
        """What needs the built model and can still fail before the first step (a latent cache's fingerprint)."""

    def prepare_final(self) -> None:
        """Called on every rank after training, before rank 0 runs `final_results` (a sharded run gathers here)."""

    def final_results(self, run_dir: Path) -> dict:
        """Rank 0, after training with train.final_samples: the end-of-run samples and scores."""
        return {}

    # -- optimizer -------------------------------------------------------------------------------------------

    def configure_optimizers(self):
        return adamw(self.trained_parameters(), self.cfg.optim, self.progress)

    def progress(self) -> float:
        return training_progress(self._trainer, self.cfg.train.max_minutes)

    # -- non-finite steps ------------------------------------------------------------------------------------

    def all_ranks_agree(self, ok: bool) -> bool:
        """True only if `ok` on every rank: a step is skipped everywhere or nowhere (else DDP/FSDP would hang)."""
        trainer = self._trainer
        return ok if trainer is None else bool(trainer.strategy.reduce_boolean_decision(ok, all=True))

    def loss_is_finite(self, loss: torch.Tensor) -> bool:
        """False (and counted) when this step's loss is NaN/Inf on any rank: the step is then skipped."""
        return self.guard.check("loss", self.all_ranks_agree(bool(torch.isfinite(loss))), self.global_step)

    def on_before_optimizer_step(self, optimizer):
        """Drop this step's gradients when any is NaN/Inf: AdamW then leaves every weight as it was."""
        params = model_params(optimizer)
        if all(p.grad is None for p in params):  # training_step skipped this step already (non-finite loss)
            return
        # Under FSDP each rank holds a shard of every gradient: each checks its own, then all agree.
        if not self.guard.check("gradient", self.all_ranks_agree(grads_finite(params)), self.global_step):
            for p in params:
                p.grad = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip the module's gradients by their global norm (optim.grad_clip), here rather than in Lightning's
        precision plugin: its mixed-precision plugin refuses any fused optimizer (it assumes the optimizer unscales
        fp16 gradients itself), and with fp32 master weights the optimizer's own copies get their gradients only in
        step(). Under a GradScaler (train.precision=16-mixed) the gradients are unscaled first, as torch's AMP
        recipe clips them; the scaler's step then knows they are."""
        if not gradient_clip_val:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model_params(optimizer), gradient_clip_val)

    # -- checkpoints and resume ------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Plain config, RNG state, non-finite counters and the run record: all loadable with weights_only=True."""
        checkpoint["sora_format"] = FORMAT
        checkpoint["sora_config"] = to_plain(self.cfg)
        checkpoint["sora_rng"] = rng_state()
        checkpoint["sora_guard"] = self.guard.state_dict()
        if self.run_record is not None:
            checkpoint["sora_run"] = self.run_record

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # The RNG state is put back just before the first resumed step (on_train_batch_start), not now:
        # building the DataLoader iterator in between draws from torch's generator, which the uninterrupted
        # run did not.
        self._pending_rng = checkpoint.get("sora_rng")
        if "sora_guard" in checkpoint:
            self.guard.load_state_dict(checkpoint["sora_guard"])

    def on_train_batch_start(self, batch, batch_idx):
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None
