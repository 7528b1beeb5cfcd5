"""Rectified flow (Liu et al. 2023; Esser et al. 2024): straight paths from data to noise, velocity loss.

x_t = (1 - t) x_0 + t * eps, with t = 1 pure noise; the velocity is v = eps - x_0 = dx_t/dt, and the sampler
integrates dx/dt = v from t = 1 down to t = 0. Training timesteps are logit-normal (SD3, eq. 19).

What the network outputs is a switch, `prediction`:
- "velocity": the network predicts v directly (SD3, Flux).
- "x0": the network predicts the clean x_0 and v = (x_t - x_0) / t (JiT: Li & He 2025, "Back to Basics: Let
  Denoising Generative Models Denoise"). The loss stays on v. A network narrower than its patches (hidden size
  < pt*ph*pw*c) cannot carry the noise eps through to its output, but it can output the clean signal, which
  lies on a low-dimensional manifold; so x0 prediction is what makes large patches work.

An objective has two methods, and both take a batch (`b c t h w`) or a pack (a list of `c t h w` clips of any
shapes, run as one sequence through `DiT.forward_packed`): `loss(model, x0, cond)` for training and
`velocity(model, x, t, cond)` for the samplers. Packs are handled here once, by `each_clip`.

Frames given as a condition (`cond.frame_mask`, sora/models/conditioning.py) are written into the noisy latent
before the model runs; their velocity is zero (the sampler leaves them as given) and the loss covers only the
frames that are not given. In training they carry noise at their own small timestep `cond.frame_t`.
"""

from dataclasses import dataclass
from enum import Enum

import torch

from sora.models.conditioning import Conditioning
from sora.settings import Settings, setting

Latent = torch.Tensor | list[torch.Tensor]  # b c t h w, or a pack: [c t h w]


def each_clip(fn, x: Latent, *per_clip):
    """fn(x, *args) on a batch, or fn(x_i, *args_i) on every clip of a pack (args indexed by clip)."""
    if isinstance(x, list):
        return [fn(xi, *(a[i] for a in per_clip)) for i, xi in enumerate(x)]
    return fn(x, *per_clip)


def frames_like(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A latent-frame mask shaped to broadcast over x: b t -> b 1 t 1 1 for a batch, t -> 1 t 1 1 for a clip."""
    return mask.reshape(*mask.shape[:-1], 1, mask.shape[-1], 1, 1)


def as_list(x: Latent) -> list[torch.Tensor]:
    """A pack as it is, a batch as a list of one tensor: for sums over clips."""
    return x if isinstance(x, list) else [x]


def broadcast_t(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Timesteps shaped to broadcast over x: b -> b 1 1 1 1 for a batch; a clip's 0-d t stays a scalar."""
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


class Prediction(str, Enum):
    velocity = "velocity"  # the network outputs v = eps - x0
    x0 = "x0"  # the network outputs the clean latent; v = (x_t - x0) / t (JiT)


@dataclass
class ObjectiveArgs(Settings):
    """`objective.*`: logit-normal timesteps (Esser et al. 2024, eq. 19) and what the network predicts."""

    logit_normal_mean: float = setting(0.0, unbounded=True)
    logit_normal_std: float = setting(1.0, gt=0)
    # The quick start's 2x8x8 patches hold 384 values a token, more than its DiT is wide: only the clean signal,
    # which lies on a low-dimensional manifold, fits through (JiT). Velocity suits patches narrower than the DiT.
    prediction: Prediction = Prediction.x0
    t_min: float = setting(0.05, gt=0, lt=1)  # x0 prediction: floor of t in v = (x_t - x0) / t
    # Training timesteps shifted towards noise, t' = s t / (1 + (s - 1) t) (SD3 eq. 23, on the drawn t): fine-tuning
    # a model that samples at a shift (Wan: 5) at that shift; 1: no shift.
    timestep_shift: float = setting(1.0, gt=0)


# ---------------------------------------------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------------------------------------------


class RectifiedFlow:
    def __init__(self, args: ObjectiveArgs | None = None):
        args = args if args is not None else ObjectiveArgs()
        self.args = args
        self.mean, self.std, self.prediction, self.t_min = (args.logit_normal_mean, args.logit_normal_std,
                                                            args.prediction, args.t_min)

    def sample_t(self, num_clips: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """One timestep per clip in (0, 1): t = sigmoid(n) with n ~ N(mean, std^2), then shifted (timestep_shift)."""
        n = torch.randn(num_clips, device=device, generator=generator)
        t = torch.sigmoid(self.mean + self.std * n)
        s = self.args.timestep_shift
        return t if s == 1 else s * t / (1 + (s - 1) * t)

    @staticmethod
    def noised(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) x0 + t eps (t broadcast over the clip or batch)."""
        t_ = broadcast_t(t, x0)
        return (1 - t_) * x0 + t_ * eps

    def _to_velocity(self, x: torch.Tensor, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction == Prediction.velocity:
            return out
        # v = (x_t - x_0) / t; t is floored so the division stays bounded near the data end (JiT, sec. 4).
        return (x - out) / broadcast_t(t.clamp(min=self.t_min), x)

    @staticmethod
    def with_given_frames(x: Latent, cond: Conditioning) -> Latent:
        """x with the frames cond gives written in (x itself when none are)."""
        if not cond.has_frames:
            return x
        return each_clip(lambda xi, fi, mi: torch.where(frames_like(mi, xi), fi.to(xi.dtype), xi), x, cond.frames,
                         cond.frame_mask)

    def velocity(self, model, x: Latent, t: torch.Tensor, cond: Conditioning) -> Latent:
        """The sampler's dx/dt at (x, t): x a batch (t: b) or a pack (t: one per clip); zero on given frames."""
        x = self.with_given_frames(x, cond)
        out = model.forward_packed(x, t, cond) if isinstance(x, list) else model(x, t, cond)
        v = each_clip(self._to_velocity, x, out, t)
        if cond.has_frames:
            v = each_clip(lambda vi, mi: vi.masked_fill(frames_like(mi, vi), 0.0), v, cond.frame_mask)
        return v

    def loss(self, model, x0: Latent, cond: Conditioning) -> torch.Tensor:
        """Mean squared velocity error over every latent element the condition does not give (each element weighs
        the same, so a pack's loss is the loss its clips would have as one batch)."""
        num_clips = len(x0) if isinstance(x0, list) else x0.shape[0]
        device = x0[0].device if isinstance(x0, list) else x0.device
        t = self.sample_t(num_clips, device)
        eps = each_clip(torch.randn_like, x0)
        xt = each_clip(self.noised, x0, eps, t)
        if cond.has_frames:  # the given frames at their own small timestep (noise augmentation, CogVideoX / LTX)
            noised_frames = each_clip(self.noised, cond.frames, eps, cond.frame_t)
            cond = cond.with_frames(noised_frames, cond.frame_mask, cond.frame_t)
        v = self.velocity(model, xt, t, cond)
        masks = as_list(cond.frame_mask) if cond.has_frames else [None] * len(as_list(x0))
        err, count = 0.0, 0
        for vi, ei, xi, mi in zip(*(as_list(a) for a in (v, eps, x0)), masks):
            sq = (vi.float() - (ei - xi).float()).square()
            if mi is not None:  # only the frames the model has to make
                keep = ~frames_like(mi, sq)
                sq, n = sq * keep, keep.expand_as(sq).sum()
            else:
                n = xi.numel()
            err, count = err + sq.sum(), count + n
        return err / count.clamp(min=1) if torch.is_tensor(count) else err / count
