"""What runs beside training: sample videos every N steps, skipped-sample reports, throughput."""

import logging
import time
from pathlib import Path

import lightning as L
import torch

from sora.inference.pipeline import SampleSettings, generate_to_dir
from sora.models.flops import device_peak_flops, dit_train_flops, mfu, num_tokens

log = logging.getLogger(__name__)


class SampleVideos(L.Callback):
    """Every `every_n_steps`, sample the prompts with the EMA weights to RUN/samples/step_N/ and log them."""

    def __init__(self, prompts: list[str], out_dir: Path, every_n_steps: int):
        self.prompts, self.out_dir, self.every_n_steps = prompts, Path(out_dir), every_n_steps

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not self.prompts or self.every_n_steps <= 0 or step % self.every_n_steps:
            return
        module.gather_for_sampling()  # sharded runs: every rank takes part, rank 0 gets the weights
        if not trainer.is_global_zero:
            return
        paths = generate_to_dir(module.sampling_bundle(ema=True), self.prompts, self.out_dir / f"step_{step:07d}",
                                seed=0, settings=SampleSettings.of(module.cfg))
        log_videos(trainer, paths, self.prompts, step)


class DataReport(L.Callback):
    """Logs the loader's skipped samples by reason (data/skipped/REASON) and sums them up when training ends."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        dm = trainer.datamodule
        if dm is not None and getattr(dm, "skipped", None) and trainer.global_step % trainer.log_every_n_steps == 0:
            module.log_dict({f"data/skipped/{k}": float(v) for k, v in dm.skipped.items()})

    def on_train_end(self, trainer, module):
        dm = trainer.datamodule
        skipped = dict(getattr(dm, "skipped", {}) or {})
        if skipped:
            log.warning("data: skipped %d sample(s) on rank %d: %s", sum(skipped.values()), trainer.global_rank,
                        ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
        else:
            log.info("data: no sample skipped on rank %d", trainer.global_rank)


class Throughput(L.Callback):
    """Logs perf/tokens_per_s, perf/tflops (model FLOPs, sora/models/flops.py) and perf/mfu when the GPU's peak is known."""

    def __init__(self, window: int = 25):
        self.window, self.t0, self.steps, self.tokens, self.flops = window, None, 0, 0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.t0 is None:
            self._sync(module)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        shapes = getattr(module, "last_step_shapes", None)
        if shapes is None or self.t0 is None:
            return
        sp = module.cfg.train.sequence_parallel_size  # a sequence-parallel group shares one batch's work
        self.steps += 1
        for grid, text_len, batch_size in shapes:  # one entry, or one per clip of a packed batch
            self.tokens += num_tokens(grid) * batch_size / sp
            self.flops += dit_train_flops(module.model.dit, grid, text_len, batch_size) / sp
        if self.steps < self.window:
            return
        self._sync(module)
        seconds = time.perf_counter() - self.t0
        world = trainer.world_size
        metrics = {"perf/tokens_per_s": self.tokens * world / seconds, "perf/tflops_per_device": self.flops / seconds / 1e12}
        value = mfu(self.flops, seconds, device_peak_flops(module.device))
        if value is not None:
            metrics["perf/mfu"] = value
        module.log_dict(metrics, rank_zero_only=True)
        self.t0, self.steps, self.tokens, self.flops = time.perf_counter(), 0, 0, 0.0

    @staticmethod
    def _sync(module):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)


def log_videos(trainer, paths, prompts, step: int) -> None:
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            logger.experiment.log({"samples": [wandb.Video(str(p), caption=c, format="mp4") for p, c in zip(paths, prompts)]},
                                  step=step)
