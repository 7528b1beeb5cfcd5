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
frames that are not given. In training they carry noise at their own small timestep `cond.frame_t`, or, in a
share of batches (`history_noise`), at a level drawn from the whole [0, 1], so that the model learns to read
imperfect history (History-Guided Video Diffusion, Song et al. 2025) and history guidance has a branch to guide
from (history fully noised).

A timestep per token frame (Diffusion Forcing, Chen et al. 2024): `frame_timesteps` is a mixture of three ways a
clip's token frames draw their timesteps: synchronous (one t for the clip: the default, and what every run
before it trained), independent (each token frame its own logit-normal t) and non-decreasing (independent draws
sorted along time, later frames noisier: SkyReels-V2's schedule for autoregressive rollout, Chen et al. 2025).
A clip's t is then b T (one per latent frame, equal within a token frame) and the DiT modulates each token frame
by its own (sora/models/modulation.py). Frames given at frame_t are the special case: their t is frame_t.
"""

from dataclasses import dataclass, field
from enum import Enum

import torch

from sora.errors import SoraError
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
    """Timesteps shaped to broadcast over x: b -> b 1 1 1 1 for a batch, b T -> b 1 T 1 1 (a timestep per latent
    frame); a clip's 0-d t stays a scalar, its T -> 1 T 1 1."""
    if t.ndim == x.ndim - 3:  # a timestep per latent frame
        return frames_like(t, x)
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


class Prediction(str, Enum):
    velocity = "velocity"  # the network outputs v = eps - x0
    x0 = "x0"  # the network outputs the clean latent; v = (x_t - x0) / t (JiT)


@dataclass
class FrameTimesteps(Settings):
    """`objective.frame_timesteps.*`: relative shares (normalised by their sum) of the ways a training clip's token
    frames draw their timesteps. The default, synchronous alone, is one t a clip: what every run before trained."""

    synchronous: float = setting(1.0, ge=0)  # one t for every frame of the clip
    independent: float = setting(0.0, ge=0)  # each token frame its own t (Diffusion Forcing, Chen et al. 2024)
    non_decreasing: float = setting(0.0, ge=0)  # independent draws sorted along time (SkyReels-V2)

    def check(self, at: str = "") -> None:
        if self.synchronous + self.independent + self.non_decreasing <= 0:
            raise SoraError(f"{at.rstrip('.')}: the shares must not all be 0 (synchronous: 1 is one t a clip)")

    @property
    def per_frame(self) -> bool:
        """Whether any clip draws a timestep per token frame (what a rolling schedule needs at sampling)."""
        return self.independent + self.non_decreasing > 0


KINDS = ("synchronous", "independent", "non_decreasing")  # FrameTimesteps' fields, in the order draws index them


@dataclass
class ObjectiveArgs(Settings):
    """`objective.*`: logit-normal timesteps (Esser et al. 2024, eq. 19) and what the network predicts."""

    # A mean above 0 moves the draws towards noise, where the layout and the motion are decided; below it, towards
    # the data end, where the shape is. The quick start's 0.25 (width 128, 2560 steps, cfg 6, linear head): held-out
    # direction / shape 1.00 / 0.53, against 0.97 / 0.59 at 0 (image direction 0.88); at -0.5 (cfg 10) direction
    # fell to 0.50 (docs/results/QUICK_START.md, "Width 128 at the same cost"). With the MLP head (cfg 6), 0.5
    # gave shape 0.50 against 0.66 ("An MLP head"). 0 is SD3's.
    logit_normal_mean: float = setting(0.25, unbounded=True)
    logit_normal_std: float = setting(1.0, gt=0)
    # The quick start's 2x8x8 patches hold 384 values a token, more than its DiT is wide: only the clean signal,
    # which lies on a low-dimensional manifold, fits through (JiT). Velocity suits patches narrower than the DiT.
    prediction: Prediction = Prediction.x0
    t_min: float = setting(0.05, gt=0, lt=1)  # x0 prediction: floor of t in v = (x_t - x0) / t
    # x0 prediction: the velocity loss is |x0 - x0_hat|^2 / t^2, so a clip near the data end (t = t_min: 400x
    # the weight of t = 0.5) sets Adam's per-weight step sizes. The loss divides by max(t, loss_t_floor)^2
    # instead (sampling is unchanged): the mid- and high-noise levels, where layout and motion are made, then
    # drive the updates. loss_t_floor = t_min is the plain velocity loss. 0.4: the quick start's (held-out direction
    # 0.31 / 0.22 / 0.47 / 0.34 at floors 0.05 / 0.2 / 0.4 / 0.7 and mean 0, 1300 steps).
    loss_t_floor: float = setting(0.4, gt=0, lt=1)
    frame_timesteps: FrameTimesteps = field(default_factory=FrameTimesteps)
    # Share of batches whose given frames are noised to a level drawn from [0, 1] instead of [0,
    # conditioning.frame_noise]: history may be imperfect (Song et al. 2025). 0: every batch as before.
    history_noise: float = setting(0.0, ge=0, le=1)
    # Training timesteps shifted towards noise, t' = s t / (1 + (s - 1) t) (SD3 eq. 23, on the drawn t): fine-tuning
    # a model that samples at a shift (Wan: 5) at that shift; 1: no shift.
    timestep_shift: float = setting(1.0, gt=0)


# ---------------------------------------------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------------------------------------------


class RectifiedFlow:
    def __init__(self, args: ObjectiveArgs | None = None, frames_per_unit: int = 1):
        """frames_per_unit: latent frames a token frame holds (the DiT's patch_size[0]): per-frame timesteps are
        drawn for whole token frames."""
        args = args if args is not None else ObjectiveArgs()
        self.args, self.frames_per_unit = args, frames_per_unit
        self.mean, self.std, self.prediction, self.t_min = (args.logit_normal_mean, args.logit_normal_std,
                                                            args.prediction, args.t_min)

    def sample_t(self, num_clips: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """One timestep per clip in (0, 1): t = sigmoid(n) with n ~ N(mean, std^2), then shifted (timestep_shift)."""
        n = torch.randn(num_clips, device=device, generator=generator)
        return self._logit_normal(n)

    def _logit_normal(self, n: torch.Tensor) -> torch.Tensor:
        """Standard normal draws -> timesteps: sigmoid(mean + std n), then shifted (timestep_shift)."""
        t = torch.sigmoid(self.mean + self.std * n)
        s = self.args.timestep_shift
        return t if s == 1 else s * t / (1 + (s - 1) * t)

    def sample_frame_t(self, num_clips: int, num_frames: int, device,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(b T timesteps, b kinds): each clip draws a kind from `frame_timesteps` (an index into KINDS), then
        logit-normal t for each of its token frames: all equal (synchronous), as drawn (independent) or sorted
        ascending along time (non-decreasing); spread over the token frame's latent frames."""
        shares = self.args.frame_timesteps
        weights = torch.tensor([getattr(shares, k) for k in KINDS], dtype=torch.float64)
        kinds = torch.multinomial(weights, num_clips, replacement=True, generator=generator)  # b, on the CPU
        units = num_frames // self.frames_per_unit
        n = torch.randn(num_clips, units, device=device, generator=generator)
        t = self._logit_normal(n)  # b u
        kind = kinds.to(device)[:, None]  # b 1
        t = torch.where(kind == 0, t[:, :1].expand_as(t), t)
        t = torch.where(kind == 2, t.sort(dim=1).values, t)
        return t.repeat_interleave(self.frames_per_unit, dim=1), kinds  # b T

    def draw_t(self, x0: Latent, device):
        """Training timesteps: b (one a clip, as every run before per-frame timesteps drew them) when the mixture
        is synchronous alone, else b T for a batch (a list of T_i for a pack)."""
        if not self.args.frame_timesteps.per_frame:
            return self.sample_t(len(x0) if isinstance(x0, list) else x0.shape[0], device)
        if isinstance(x0, list):
            return [self.sample_frame_t(1, xi.shape[1], device)[0][0] for xi in x0]
        return self.sample_frame_t(x0.shape[0], x0.shape[2], device)[0]

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

    def _loss_weight(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
        """Per-clip factor turning |v - v_hat|^2 = |x0 - x0_hat|^2 / max(t, t_min)^2 into a division by
        max(t, loss_t_floor)^2; None where it is 1."""
        if self.prediction != Prediction.x0 or self.args.loss_t_floor <= self.t_min:
            return None
        return broadcast_t((t.clamp(min=self.t_min) / t.clamp(min=self.args.loss_t_floor)).square(), x)

    @staticmethod
    def with_given_frames(x: Latent, cond: Conditioning) -> Latent:
        """x with the frames cond gives written in (x itself when none are)."""
        if not cond.has_frames:
            return x
        return each_clip(lambda xi, fi, mi: torch.where(frames_like(mi, xi), fi.to(xi.dtype), xi), x, cond.frames,
                         cond.frame_mask)

    def velocity(self, model, x: Latent, t: torch.Tensor, cond: Conditioning) -> Latent:
        """The sampler's dx/dt at (x, t): x a batch (t: b, or b T: a timestep per latent frame) or a pack (t: one per
        clip, or a T_i tensor per clip); zero on given frames."""
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
        t = self.draw_t(x0, device)  # b, or a timestep per latent frame
        eps = each_clip(torch.randn_like, x0)
        xt = each_clip(self.noised, x0, eps, t)
        if cond.has_frames and self.args.history_noise > 0 and float(torch.rand(())) < self.args.history_noise:
            # this batch's history anywhere from clean to pure noise (Song et al. 2025), not just slightly noised
            cond = cond.with_frames(cond.frames, cond.frame_mask, torch.rand(num_clips, device=device))
        if cond.has_frames:  # the given frames at their own small timestep (noise augmentation, CogVideoX / LTX)
            noised_frames = each_clip(self.noised, cond.frames, eps, cond.frame_t)
            cond = cond.with_frames(noised_frames, cond.frame_mask, cond.frame_t)
        v = self.velocity(model, xt, t, cond)
        masks = as_list(cond.frame_mask) if cond.has_frames else [None] * len(as_list(x0))
        weights = as_list(each_clip(self._loss_weight, x0, t))
        err, count = 0.0, 0
        for vi, ei, xi, mi, wi in zip(*(as_list(a) for a in (v, eps, x0)), masks, weights):
            sq = (vi.float() - (ei - xi).float()).square()
            if wi is not None:
                sq = sq * wi
            if mi is not None:  # only the frames the model has to make
                keep = ~frames_like(mi, sq)
                sq, n = sq * keep, keep.expand_as(sq).sum()
            else:
                n = xi.numel()
            err, count = err + sq.sum(), count + n
        return err / count.clamp(min=1) if torch.is_tensor(count) else err / count
