"""Classifier-free guidance over a chain of conditionings, all run in one batch.

`conds` goes from least to most conditioned: conds[0] is the unconditional branch (the empty caption), conds[-1]
the full condition, and each scale weighs one step along the chain:

    v = v_0 + sum_i scale_i * (v_i - v_{i-1})

With two conditionings this is classifier-free guidance, v_u + s (v_c - v_u) (Ho & Salimans 2022). With three
(nothing, a visual condition, visual condition + text) it gives the visual condition and the text separate scales
(InstructPix2Pix, Brooks et al. 2023, eq. 3). Scales of 1 telescope to v at the full condition, so that case runs
one forward instead of k.

The time t is a float (every frame at one level) or a T tensor (a level per latent frame, the rolling schedule of
sora/diffusion/rolling.py); every clip of the batch shares it.
"""

import torch

from sora.diffusion.samplers import VelocityFn
from sora.models.conditioning import Conditioning


def batch_t(t: float | torch.Tensor, num_clips: int, device) -> torch.Tensor:
    """A sampler's time for every clip: a float -> b; a T tensor (a level per latent frame) -> b T."""
    if torch.is_tensor(t):
        return t.to(device)[None].expand(num_clips, -1)  # b T
    return torch.full((num_clips,), t, device=device)  # b


def guided_velocity(objective, model, conds: list[Conditioning], scales: list[float]) -> VelocityFn:
    """velocity_fn(x, t) for a sampler: the objective's velocity under guidance, x a batch of len(conds[0]) clips."""
    assert len(scales) == len(conds) - 1, f"{len(conds)} conditionings need {len(conds) - 1} scales, got {len(scales)}"
    while scales and scales[0] == 1.0:  # v_0 + 1 (v_1 - v_0) = v_1: the first link drops out, one forward fewer
        conds, scales = conds[1:], scales[1:]
    if not scales:  # every scale 1: the sum telescopes to the fully conditioned velocity
        cond = conds[-1]
        return lambda x, t: objective.velocity(model, x, batch_t(t, x.shape[0], x.device), cond)
    k, both = len(conds), Conditioning.cat(conds)

    def velocity_fn(x: torch.Tensor, t: float) -> torch.Tensor:
        xs = torch.cat([x] * k)  # (k b) c t h w: every conditioning in one forward
        vs = objective.velocity(model, xs, batch_t(t, xs.shape[0], x.device), both).chunk(k)
        v = vs[0]
        for i, scale in enumerate(scales):
            v = v + scale * (vs[i + 1] - vs[i])
        return v

    return velocity_fn
