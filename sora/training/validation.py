"""The validation loss during training: every val.every_n_steps and once at the end, on every rank at once.

The loss itself (fixed clips, noise and timesteps; its split over ranks) is sora/eval/validation.py. This callback
runs it on the EMA weights (what is sampled and exported), logs `val/loss` and `val/loss_t{t}`, and appends each
evaluation to RUN/val_loss.jsonl with the step and the training seconds so far: the sweep report's curves.

`DriftValidation` scores the drift of long videos (sora/eval/drift.py) every val.drift_every_n_steps on rank 0,
logs `val/drift_all_windows_pass` and `val/drift_median_frames_to_first_failure`, and appends to RUN/drift.jsonl.
"""

import contextlib
import json
import logging
import time
from pathlib import Path

import lightning as L

from sora.eval.drift import drift_prompts, measure_drift
from sora.eval.validation import ValidationLoss
from sora.inference.bundle import ModelBundle
from sora.inference.pipeline import SampleSettings
from sora.training.lora import swapped

log = logging.getLogger(__name__)


class Validation(L.Callback):
    def __init__(self, data_cfg, val_cfg, buckets, out_file: Path):
        self.data_cfg, self.val_cfg, self.buckets, self.out_file = data_cfg, val_cfg, buckets, Path(out_file)
        self.loss: ValidationLoss | None = None
        self.seconds_before = 0.0  # training seconds of the runs this one resumes
        self.t0: float | None = None
        self.last_step: int | None = None
        self.history: list[dict] = []  # this process's evaluations (rank 0 writes them)

    def state_dict(self) -> dict:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state: dict) -> None:
        self.seconds_before = float(state.get("seconds", 0.0))

    def seconds(self) -> float:
        return self.seconds_before + (time.perf_counter() - self.t0 if self.t0 is not None else 0.0)

    def on_train_start(self, trainer, module):
        self.t0 = time.perf_counter()
        # Each rank decodes its own share of the clips, once.
        self.loss = ValidationLoss(self.data_cfg, self.val_cfg, self.buckets, trainer.global_rank, trainer.world_size)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        every = self.val_cfg.every_n_steps
        if every > 0 and trainer.global_step % every == 0:
            self.evaluate(trainer, module)

    def on_train_end(self, trainer, module):
        if not getattr(trainer, "sora_preempted", None):  # a preempted run is not at its end
            self.evaluate(trainer, module)

    def evaluate(self, trainer, module) -> dict | None:
        step = trainer.global_step
        if self.loss is None or step == self.last_step:
            return None
        seconds = self.seconds()  # training time up to here, not counting this evaluation
        t0 = time.perf_counter()
        with ema_bundle(module) as bundle:
            result = self.loss(bundle, sharded=module.sharded)
        self.last_step = step
        row = {"step": step, "train_seconds": round(seconds, 2), **result}
        self.history.append(row)
        if self.t0 is not None:  # the evaluation is not training time
            self.t0 += time.perf_counter() - t0
        if trainer.is_global_zero:
            with open(self.out_file, "a") as f:
                f.write(json.dumps(row) + "\n")
            metrics = {"val/loss": result["loss"], **{f"val/loss_t{t}": v for t, v in result["per_timestep"].items()}}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
            log.info("val loss %.5f at step %d (%d clips x %d timesteps, %.1f s)", result["loss"], step,
                     result["num_clips"], len(result["per_timestep"]), time.perf_counter() - t0)
        return row


class DriftValidation(L.Callback):
    """Every val.drift_every_n_steps: held-out prompts made val.drift_windows trained windows long with the EMA
    weights (generate_long), scored per window; RUN/drift/step_N/ gets the videos, RUN/drift.jsonl a row."""

    def __init__(self, cfg, out_dir: Path):
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.prompts = drift_prompts(cfg.data)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        every, step = self.cfg.val.drift_every_n_steps, trainer.global_step
        if every <= 0 or step % every or not self.prompts:
            return
        module.gather_for_sampling()  # sharded runs: every rank takes part, rank 0 gets the weights
        if not trainer.is_global_zero:
            return
        t0 = time.perf_counter()
        v = self.cfg.val
        scores = measure_drift(module.sampling_bundle(ema=True), self.prompts, self.out_dir / f"step_{step:07d}",
                               SampleSettings.of(module.cfg), v.drift_windows, v.drift_samples_per_prompt)
        with open(self.out_dir.parent / "drift.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **scores}) + "\n")
        metrics = {"val/drift_all_windows_pass": scores["all_windows_pass"],
                   "val/drift_median_frames_to_first_failure": scores["median_frames_to_first_failure"]}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        log.info("drift at step %d: %.2f of %d videos pass every window (%.1f s)", step, scores["all_windows_pass"],
                 scores["n"], time.perf_counter() - t0)


@contextlib.contextmanager
def ema_bundle(module):
    """The EMA weights as a bundle on every rank (sharded ones stay sharded: every rank runs each forward)."""
    if not module.sharded:
        yield module.sampling_bundle(ema=True)
    elif module.lora is not None:  # the sharded DiT itself, its adapter holding the EMA values meanwhile
        with swapped(module.trained_module(), module.ema.model, sharded=module.model.dit):
            yield ModelBundle(module.cfg, module.model.vae, module.model.text, module.model.dit, "ema")
    else:
        parts = module.ema.model
        text = parts["text"] if "text" in parts else module.model.text
        yield ModelBundle(module.cfg, module.model.vae, text, parts["dit"], "ema")
