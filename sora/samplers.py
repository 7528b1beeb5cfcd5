"""ODE samplers for flow models. All share one signature:

    sampler(velocity_fn, noise, num_steps) -> x_0

where velocity_fn(x, t) returns dx/dt for a batch x at scalar time t (a float in [0, 1]), and integration runs
from t = 1 (noise) to t = 0 (data). Guidance, conditioning and the model live in velocity_fn, not here.
"""

from typing import Callable

import torch

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]


def _times(num_steps: int) -> list[float]:
    assert num_steps >= 1, f"num_steps must be >= 1, got {num_steps}"
    return torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64).tolist()


@torch.no_grad()
def euler(velocity_fn: VelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Explicit Euler: x <- x + (t_next - t) v(x, t). First order; exact on straight paths."""
    times, x = _times(num_steps), noise
    for t, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t) * velocity_fn(x, t)
    return x


@torch.no_grad()
def heun(velocity_fn: VelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Heun's second-order method (EDM, Karras et al. 2022, alg. 1), with an Euler last step into t = 0."""
    times, x = _times(num_steps), noise
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        v = velocity_fn(x, t)
        x_euler = x + (t_next - t) * v
        if i == num_steps - 1:
            x = x_euler
        else:
            x = x + (t_next - t) * 0.5 * (v + velocity_fn(x_euler, t_next))
    return x


SAMPLERS = {"euler": euler, "heun": heun}


def get_sampler(name: str):
    name = getattr(name, "value", name)
    assert name in SAMPLERS, f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}"
    return SAMPLERS[name]

