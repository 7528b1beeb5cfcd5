"""A rolling (pyramid) schedule: each token frame its own timestep, later frames behind earlier ones.

Diffusion Forcing (Chen et al. 2024) trains each frame at its own noise level and samples with a "pyramid" of
levels: the frames next to the history are cleaner than the frames after them, so each frame is made from frames
that are already more certain than it, as an autoregressive model would, while the whole window is still denoised
jointly. SkyReels-V2 (Chen et al. 2025) calls the lag between consecutive frames `ar_step`: frame k starts ar_step
sampler steps after frame k-1. With ar_step = 0 every frame is at the same level: the synchronous sampler.

    times = make_schedule("uniform", 25)                       # the synchronous schedule, 1.0 -> 0.0
    grid = pyramid(times, lags(made_units, ar_step), frames_per_unit)   # S+1 x T: each latent frame's level
    x = rolling(velocity_fn, noise, grid)                      # velocity_fn(x, t) with t a T tensor

A frame not yet started waits at t = 1 (pure noise) and a finished one stays at t = 0: its step is zero. The
schedule takes N + (K - 1) ar_step model evaluations for K frames made (N for ar_step = 0), the price of the
pyramid. Frames given as a condition are not stepped (their velocity is zero, sora/diffusion/objectives.py).
"""

from typing import Callable, Optional

import torch

FrameVelocityFn = Callable[[torch.Tensor, float | torch.Tensor], torch.Tensor]  # (x: b c T h w, t: T or a float)


def lags(made: torch.Tensor, ar_step: int, reverse: bool = False) -> torch.Tensor:
    """u bool (token frames to make) -> u lags in sampler steps: the k-th frame made (in time order, or from the
    end with `reverse`: a video growing backwards) starts k ar_step steps late; given frames lag 0."""
    order = made.flip(0) if reverse else made
    rank = (order.long().cumsum(0) - 1).clamp(min=0) * order.long()  # u: 0, 1, 2, ... over the made frames
    rank = rank.flip(0) if reverse else rank
    return rank * ar_step


def pyramid(times: list[float], unit_lags: torch.Tensor, frames_per_unit: int = 1) -> torch.Tensor:
    """The synchronous schedule (N + 1 times from 1 to 0) and each token frame's lag -> (S + 1) x T levels, S = N +
    max lag: token frame k at step i is at times[clamp(i - lag_k, 0, N)]; T = u frames_per_unit latent frames."""
    n = len(times) - 1
    steps = n + int(unit_lags.max()) if len(unit_lags) else n
    grid = torch.tensor(times, dtype=torch.float64)  # N + 1
    at = (torch.arange(steps + 1)[:, None] - unit_lags[None]).clamp(0, n)  # (S + 1) u
    return grid[at].repeat_interleave(frames_per_unit, dim=1)  # (S + 1) T


@torch.no_grad()
def rolling(velocity_fn: FrameVelocityFn, noise: torch.Tensor, levels: torch.Tensor,
            callback: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Euler with a timestep per latent frame: x <- x + (t_next - t) v(x, t), t and t_next T vectors (rows of
    `levels`, (S + 1) x T from `pyramid`); x: b c T h w. A step whose frames are all at one level asks the model
    at that one level (a float, as the synchronous sampler does), so rows all equal are the Euler sampler exactly."""
    x, num_steps = noise, levels.shape[0] - 1
    for i in range(num_steps):
        t, t_next = levels[i], levels[i + 1]  # T each, float64, on the CPU
        dt = (t_next - t).to(x.dtype).to(x.device)  # as euler's float step, rounded to x's dtype
        at = float(t[0]) if bool((t == t[0]).all()) else t.to(torch.float32).to(x.device)
        x = x + dt[None, None, :, None, None] * velocity_fn(x, at)
        if callback is not None:
            callback(i + 1, num_steps)
    return x


def num_rolling_steps(num_steps: int, made_units: int, ar_step: int) -> int:
    """Model evaluations a window takes: N steps, plus ar_step for each frame made after the first."""
    return num_steps + max(made_units - 1, 0) * ar_step
