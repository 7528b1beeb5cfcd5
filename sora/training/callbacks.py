"""What runs beside training: sample videos every N steps, skipped-sample reports, throughput, a profile."""

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch

from sora.data.stream import DROPPED
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
    """Logs the loader's skipped samples by reason (data/skipped/REASON; data.min_scores' drops as
    data/skipped/min_scores.NAME) and sums them up when training ends, the dropped apart from the bad."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        dm = trainer.datamodule
        if dm is not None and getattr(dm, "skipped", None) and trainer.global_step % trainer.log_every_n_steps == 0:
            module.log_dict({f"data/skipped/{k}": float(v) for k, v in dm.skipped.items()})

    def on_train_end(self, trainer, module):
        dm = trainer.datamodule
        counts = dict(getattr(dm, "skipped", {}) or {})
        dropped = {k[len(DROPPED):]: v for k, v in counts.items() if k.startswith(DROPPED)}
        skipped = {k: v for k, v in counts.items() if not k.startswith(DROPPED)}
        if dropped:
            log.info("data: dropped %d sample(s) below data.min_scores on rank %d: %s", sum(dropped.values()),
                     trainer.global_rank, ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())))
        if skipped:
            log.warning("data: skipped %d sample(s) on rank %d: %s; every one is in %s", sum(skipped.values()),
                        trainer.global_rank, ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())),
                        getattr(dm, "skipped_path", None))
        else:
            log.info("data: no sample skipped on rank %d", trainer.global_rank)


class Throughput(L.Callback):
    """Logs perf/tokens_per_s, perf/tflops (model FLOPs, sora/models/flops.py) and perf/mfu when the GPU's peak is
    known."""

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
        metrics = {"perf/tokens_per_s": self.tokens * world / seconds,
                   "perf/tflops_per_device": self.flops / seconds / 1e12}
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

            videos = [wandb.Video(str(p), caption=c, format="mp4") for p, c in zip(paths, prompts)]
            logger.experiment.log({"samples": videos}, step=step)


class Profile(L.Callback):
    """`steps` whole steps under torch.profiler from global step `start`:
    RUN/profile/{table.txt, summary.json, trace.json}.

    A window runs from one step's start to the start of the step `steps` later, so it holds everything a step
    costs: the wait for data, the step itself, and the callbacks after it. The summary's device_busy_share is
    summed kernel time over wall time. Below 1, the GPU idles: it waits on the host (Python, syncs, data), and
    no faster kernel wins that time back."""

    def __init__(self, out_dir: Path, start: int, steps: int):
        self.out_dir, self.start, self.steps = Path(out_dir), start, steps
        self.prof = self.t0 = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        step = trainer.global_step
        if self.prof is None and step == self.start and trainer.is_global_zero:
            from torch.profiler import ProfilerActivity, profile

            on_gpu = module.device.type == "cuda"
            self.prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else []))
            Throughput._sync(module)
            self.prof.__enter__()
            self.t0 = time.perf_counter()
        elif self.prof is not None and self.t0 is not None and step == self.start + self.steps:
            self._finish(module)

    def on_train_end(self, trainer, module):
        if self.prof is not None and self.t0 is not None:  # the run ended inside the window
            self._finish(module, steps=trainer.global_step - self.start)

    def _finish(self, module, steps: int | None = None) -> None:
        Throughput._sync(module)
        wall_s = time.perf_counter() - self.t0
        self.prof.__exit__(None, None, None)
        steps, self.t0 = self.steps if steps is None else steps, None
        from torch.autograd import DeviceType

        events = self.prof.key_averages()
        on_gpu = module.device.type == "cuda"
        key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
        # The device's own events (kernels, copies), as the profiler's table totals them; an op's row repeats its
        # kernels.
        kernels = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
        busy_us = sum(e.self_device_time_total for e in kernels) if on_gpu else None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        table = events.table(sort_by=key, row_limit=40, max_name_column_width=80)
        (self.out_dir / "table.txt").write_text(table)
        top = sorted(kernels if on_gpu else events, key=lambda e: getattr(e, key, 0), reverse=True)[:15]
        summary = {"steps": steps, "start_step": self.start, "wall_ms_per_step": round(1e3 * wall_s / max(steps, 1), 2),
                   "device_busy_ms_per_step": None if busy_us is None else round(busy_us / 1e3 / max(steps, 1), 2),
                   "device_busy_share": None if busy_us is None else round(busy_us / 1e6 / wall_s, 3),
                   "top_ms_per_step": {e.key: round(getattr(e, key, 0) / 1e3 / max(steps, 1), 3) for e in top}}
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        self.prof.export_chrome_trace(str(self.out_dir / "trace.json"))
        log.info("profile of steps %d-%d: %.1f ms a step%s; %s", self.start, self.start + steps - 1,
                 summary["wall_ms_per_step"], "" if busy_us is None else
                 f", the device busy {summary['device_busy_ms_per_step']} ms ({summary['device_busy_share']:.0%})",
                 self.out_dir)
