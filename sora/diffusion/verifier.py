"""The model as a verifier of its own samples: its denoising error on a candidate, for a best-of-N search.

A search over samples (inference-time scaling, Ma et al. 2025) needs a verifier. Here it is the model itself: the
denoising error of a clean candidate x0 under its condition,

    E_{t, eps} |x0 - x0_hat(x_t, t, cond)|^2,   x_t = (1 - t) x0 + t eps,

the training loss without its weighting, a bound on the candidate's likelihood (Kingma et al. 2021; Li et al. 2023
use it to classify). x0_hat comes from a sampler's velocity function (sora/diffusion/guidance.py): the model under
the condition alone for the search (`long.candidates`), or under guidance as bench/self_verifier.py also asks.
Each (level, draw) noise is one tensor shared by every candidate of a batch (common random numbers), so two
candidates' errors differ only by the candidates. On the long-video preset it ranks first windows by whether they
pass the drift score better than chance and far from perfectly (docs/results/LONG_VIDEO.md).
"""

import torch

from sora.diffusion.objectives import frames_like
from sora.diffusion.samplers import VelocityFn
from sora.models.conditioning import Conditioning

# The levels the error is taken at: mid-to-high noise, where a window's layout and motion are decided.
LEVELS = (0.3, 0.5, 0.7)
DRAWS = 2  # noises a level


@torch.no_grad()
def denoising_error(objective, velocity_fn: VelocityFn, x0: torch.Tensor, cond: Conditioning, seed: int,
                    levels: tuple[float, ...] = LEVELS, draws: int = DRAWS) -> torch.Tensor:
    """b candidates (b c t h w) -> b: their mean squared error of x0_hat over levels x draws, on the frames the
    condition does not give (cond's frame mask; given frames are kept as given, as the sampler keeps them).
    velocity_fn(x, t) is the sampler's view of the model (guidance.py), under cond."""
    b = x0.shape[0]
    made = torch.ones(b, x0.shape[2], dtype=torch.bool, device=x0.device)  # b t: the frames scored
    if cond.has_frames:
        made = ~cond.frame_mask.to(x0.device)
    weight = frames_like(made, x0).to(x0.dtype).expand_as(x0)  # b c t h w: 1 on a made frame
    errors = []
    for k, t in enumerate(level for level in levels for _ in range(draws)):
        g = torch.Generator().manual_seed(seed + k)
        eps = torch.randn(x0.shape[1:], generator=g).to(x0)[None].expand_as(x0)  # b c t h w: one noise for all
        xt = objective.noised(x0, eps, torch.full((b,), t, device=x0.device))
        v = velocity_fn(xt, t)  # zero on given frames
        x0_hat = objective.with_given_frames(xt - t * v, cond)  # rectified flow: v = eps - x0
        err = ((x0_hat - x0).float().pow(2) * weight).flatten(1).sum(1)  # b
        errors.append(err / weight.flatten(1).sum(1).clamp(min=1))
    return torch.stack(errors, 1).mean(1)  # b
