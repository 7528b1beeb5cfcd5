"""ODE samplers for flow models. All share one signature:

    sampler(velocity_fn, noise, times, callback=None) -> x at times[-1]

where velocity_fn(x, t) returns dx/dt for a batch x at scalar time t (a float in [0, 1]), `times` is the schedule
the sampler visits (sora/diffusion/schedules.py: from 1.0, noise, down to 0.0, data), and callback(step, num_steps)
is called after every step (a progress bar). Guidance, conditioning and the model live in velocity_fn, the time
grid in the schedule; a new sampler is one function here and one entry in SAMPLERS.
"""

from typing import Callable, Optional

import torch

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
