"""Timestep schedules for sampling: the times a sampler visits, from t = 1 (noise) down to t = 0 (data).

A schedule is a function `schedule(num_steps, shift) -> list of num_steps + 1 floats` from 1.0 to 0.0; samplers
take the list, so a new schedule is one function here and one entry in SCHEDULES.

`shifted` is SD3's resolution-dependent shift (Esser et al. 2024, sec. 5.3.2, eq. 23): t' = s t / (1 + (s - 1) t).
With s > 1 the sampler spends more of its steps at high noise, where large and long videos (many tokens, so a
noisier-looking signal at the same t) still have their coarse structure to settle; SD3 uses s = sqrt(m / n) for
m tokens against a base of n, and s = 3 at 1024^2.
"""

import torch


def uniform(num_steps: int, shift: float = 1.0) -> list[float]:
    """num_steps equal steps from 1 to 0 (`shift` is ignored)."""
    assert num_steps >= 1, f"num_steps must be >= 1, got {num_steps}"
    return torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64).tolist()


def shifted(num_steps: int, shift: float = 3.0) -> list[float]:
    """Uniform times mapped through t' = s t / (1 + (s - 1) t) (SD3, eq. 23); s = 1 is uniform."""
    assert shift > 0, f"shift must be > 0, got {shift}"
    return [shift * t / (1 + (shift - 1) * t) for t in uniform(num_steps)]


def flow_sigmas(num_steps: int, shift: float = 5.0) -> list[float]:
    """Wan2.1's and diffusers' flow sigmas (`use_flow_sigmas=True`, 1000 training timesteps): num_steps times equally
    spaced from 1 down to 1/1000, each shifted as in `shifted`, then 0. Wan samples text to video at shift 5."""
    assert num_steps >= 1 and shift > 0, f"num_steps >= 1 and shift > 0, got {num_steps}, {shift}"
    base = torch.linspace(1.0, 1 / 1000, num_steps + 1, dtype=torch.float64)[:-1].tolist()
    return [shift * t / (1 + (shift - 1) * t) for t in base] + [0.0]


SCHEDULES = {"uniform": uniform, "shifted": shifted, "flow_sigmas": flow_sigmas}


def make_schedule(name: str, num_steps: int, shift: float = 1.0) -> list[float]:
    """The named schedule's times (config names are checked against SCHEDULES before anything runs)."""
    return SCHEDULES[name](num_steps, shift)
