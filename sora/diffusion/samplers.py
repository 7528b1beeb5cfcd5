"""ODE samplers for flow models. All share one signature:

    sampler(velocity_fn, noise, times, callback=None) -> x at times[-1]

where velocity_fn(x, t) returns dx/dt for a batch x at scalar time t (a float in [0, 1]), `times` is the schedule
the sampler visits (sora/diffusion/schedules.py: from 1.0, noise, down to 0.0, data), and callback(step, num_steps)
is called after every step (a progress bar). Guidance, conditioning and the model live in velocity_fn, the time
grid in the schedule; a new sampler is one function here and one entry in SAMPLERS.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from sora.diffusion.schedules import SCHEDULES
from sora.settings import Settings, setting

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]
Callback = Optional[Callable[[int, int], None]]


@torch.no_grad()
def euler(velocity_fn: VelocityFn, noise: torch.Tensor, times: list[float], callback: Callback = None) -> torch.Tensor:
    """Explicit Euler: x <- x + (t_next - t) v(x, t). First order; exact on straight paths."""
    x = noise
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        x = x + (t_next - t) * velocity_fn(x, t)
        if callback is not None:
            callback(i + 1, len(times) - 1)
    return x


@torch.no_grad()
def heun(velocity_fn: VelocityFn, noise: torch.Tensor, times: list[float], callback: Callback = None) -> torch.Tensor:
    """Heun's second-order method (EDM, Karras et al. 2022, alg. 1), with an Euler last step into t = 0."""
    x, num_steps = noise, len(times) - 1
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        v = velocity_fn(x, t)
        x_euler = x + (t_next - t) * v
        if t_next == 0.0:
            x = x_euler
        else:
            x = x + (t_next - t) * 0.5 * (v + velocity_fn(x_euler, t_next))
        if callback is not None:
            callback(i + 1, num_steps)
    return x


SAMPLERS = {"euler": euler, "heun": heun}

# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SamplerArgs(Settings):
    """`sampler.*`: how a run's samples are drawn (training samples, the end-of-run scores, sample.py's defaults)."""

    name: str = setting("euler", choices=lambda: SAMPLERS)
    steps: int = setting(25, ge=1)
    # Classifier-free guidance scale (1: none). The quick start's held-out direction at cfg 4 / 7 / 10 / 14 was
    # 0.75 / 0.84 / 0.94 / 0.91 (64 videos, one checkpoint): strong guidance for a small, briefly trained model.
    cfg: float = setting(10.0, ge=0)
    schedule: str = setting("uniform", choices=lambda: SCHEDULES)  # or shifted (SD3 eq. 23)
    shift: float = setting(3.0, gt=0)  # schedule=shifted: t' = shift t / (1 + (shift - 1) t); SD3 uses 3 at 1024^2
