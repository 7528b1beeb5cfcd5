"""AdamW and its learning-rate schedule: linear warmup, then constant, or warmup-stable-decay (WSD).

WSD (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations") holds
the peak rate and anneals it linearly to zero over the last `decay_fraction` of training. The anneal is
where most of the late loss drop happens, so a run that ends on a wall-clock budget still ends annealed:
progress is the larger of steps done / `max_steps` and minutes trained / `max_minutes`.
"""

from typing import Callable

import torch

from sora.training.master_weights import MasterWeightAdamW


def lr_factor(step: int, progress: float, warmup_steps: int, schedule: str, decay_fraction: float) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` with `progress` in [0, 1] of training done."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    if schedule == "constant" or decay_fraction <= 0:
        return warm
    remaining = (1.0 - min(max(progress, 0.0), 1.0)) / decay_fraction  # > 1 until the decay phase starts
    return warm * min(1.0, remaining)


FUSED_DEVICES = ("cpu", "cuda")  # where torch has a fused AdamW kernel


def adamw(params, cfg, progress: Callable[[], float]) -> dict:
    """AdamW with the configured schedule (`optim.*`, checked by OptimConfig), stepped every optimizer step;
    `progress()` is the share of training done."""
    params = list(params)
    # One fused kernel reads each weight, gradient and moment once. torch's default is, on a GPU, a multi-tensor
    # AdamW that makes several memory-bound passes over them (train.py ran at 0.84x bench/dit_step.py's MFU), and
    # on a CPU a Python loop of about ten ops a tensor (the quick start's optimizer step: 9.6x slower than fused,
    # bench/cpu_step.py).
    fused = bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    # Parameters stored below fp32 (train.param_dtype=bf16) are updated through fp32 master copies.
    cls = MasterWeightAdamW if any(p.dtype != torch.float32 for p in params) else torch.optim.AdamW
    opt = cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, progress(), cfg.warmup_steps, cfg.schedule, cfg.decay_fraction))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def training_progress(trainer, max_minutes: float | None) -> float:
    """Share of training done: the further along of steps and wall-clock time (restored on resume by Lightning's
    Timer)."""
    if trainer is None:
        return 0.0
    done = trainer.global_step / trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else 0.0
    if max_minutes:
        from lightning.pytorch.callbacks import Timer

        for cb in trainer.callbacks:
            if isinstance(cb, Timer):
                done = max(done, cb.time_elapsed("train") / (60.0 * max_minutes))
    return done
