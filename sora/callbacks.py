"""What runs beside training: sample videos every N steps, and the evaluation at the end of a run."""

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch

from sora.pipeline import generate_to_dir

log = logging.getLogger(__name__)


def read_prompts(path: str | None) -> list[str]:
    if not path or not Path(path).is_file():
        return []
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def sample_settings(cfg) -> dict:
    """The frame count, size, steps, guidance and sampler that a run's samples use by default."""
    return dict(num_frames=cfg.data.num_frames, height=cfg.data.height, width=cfg.data.width,
                steps=cfg.sampler.steps, cfg=cfg.sampler.cfg, sampler=cfg.sampler.name.value, fps=cfg.data.sample_fps)


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
        paths = generate_to_dir(module.pipeline(ema=True), self.prompts, self.out_dir / f"step_{step:07d}", seed=0,
                                **sample_settings(module.cfg))
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
    """Logs perf/tokens_per_s, perf/tflops (model FLOPs, sora/flops.py) and perf/mfu when the GPU's peak is known."""

    def __init__(self, window: int = 25):
        self.window, self.t0, self.steps, self.tokens, self.flops = window, None, 0, 0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.t0 is None:
            self._sync(module)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        from sora.flops import device_peak_flops, dit_train_flops, mfu, num_tokens

        shapes = getattr(module, "last_step_shapes", None)
        if shapes is None or self.t0 is None:
            return
        sp = module.cfg.train.sequence_parallel_size  # a sequence-parallel group shares one batch's work
        self.steps += 1
        for grid, text_len, batch_size in shapes:  # one entry, or one per clip of a packed batch
            self.tokens += num_tokens(grid) * batch_size / sp
            self.flops += dit_train_flops(module.dit, grid, text_len, batch_size) / sp
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


# ---------------------------------------------------------------------------------------------------------------
# End of run
# ---------------------------------------------------------------------------------------------------------------


def evaluate_dit(module, run_dir: Path) -> dict:
    """Sample every eval and train prompt `samples_per_prompt` times; score with the moving-shapes probe."""
    from sora.probe import score_dir

    cfg, results = module.cfg, {}
    for split, path in (("heldout", cfg.data.eval_prompts), ("train", cfg.data.train_prompts)):
        prompts = read_prompts(path) * cfg.train.samples_per_prompt
        if not prompts:
            continue
        out = run_dir / "samples" / "final" / split
        generate_to_dir(module.pipeline(ema=True), prompts, out, seed=0, **sample_settings(cfg))
        (out / "prompts.txt").write_text("".join(p + "\n" for p in prompts))
        try:
            scores = score_dir(out, prompts)
        except Exception as e:  # prompts that are not moving-shapes captions: samples written, no probe
            log.info("probe skipped for %s: %s", split, e)
            continue
        results[split] = {k: v for k, v in scores.items() if k != "videos"}
        (out / "probe.json").write_text(json.dumps(scores, indent=1))
    return results


@torch.no_grad()
def evaluate_vae(module, loader, run_dir: Path, num_batches: int = 8) -> dict:
    """Reconstruction PSNR (dB) over a few batches of held-out clips; writes one input|reconstruction mp4."""
    from sora.module import psnr
    from sora.video_io import write_mp4

    module.eval()
    values = []
    for i, batch in zip(range(num_batches), loader):
        video = batch["video"].to(module.device)
        recon = module.reconstruct(video)
        values.append(psnr(recon, video).item())
        if i == 0:
            write_mp4(run_dir / "samples" / "final" / "reconstruction.mp4", torch.cat([video[0], recon[0]], dim=-1),
                      module.cfg.data.sample_fps)
    return {"reconstruction_psnr_db": sum(values) / max(len(values), 1), "num_batches": len(values)}
