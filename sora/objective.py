"""Rectified flow (Liu et al. 2023; Esser et al. 2024): straight paths from data to noise, velocity loss.

x_t = (1 - t) x_0 + t * eps, with t = 1 pure noise; the velocity is v = eps - x_0 = dx_t/dt, and the sampler
integrates dx/dt = v from t = 1 down to t = 0. Training timesteps are logit-normal (SD3, eq. 19).

What the network outputs is a switch, `prediction`:
- "velocity": the network predicts v directly (SD3, Flux).
- "x0": the network predicts the clean x_0 and v = (x_t - x_0) / t (JiT: Li & He 2025, "Back to Basics: Let
  Denoising Generative Models Denoise"). The loss stays on v. A network narrower than its patches (hidden size
  < pt*ph*pw*c) cannot carry the noise eps through to its output, but it can output the clean signal, which
  lies on a low-dimensional manifold; so x0 prediction is what makes large patches work.
"""

import torch
import torch.nn.functional as F

PREDICTIONS = ("velocity", "x0")


class RectifiedFlow:
    def __init__(self, logit_normal_mean: float = 0.0, logit_normal_std: float = 1.0, prediction: str = "velocity",
                 t_min: float = 0.05):
        assert logit_normal_std > 0, f"logit_normal_std must be > 0, got {logit_normal_std}"
        prediction = getattr(prediction, "value", prediction)
        assert prediction in PREDICTIONS, f"prediction must be one of {PREDICTIONS}, got {prediction!r}"
        assert 0 < t_min < 1, f"t_min must be in (0, 1), got {t_min}"
        self.mean, self.std, self.prediction, self.t_min = logit_normal_mean, logit_normal_std, prediction, t_min

    def sample_t(self, batch_size: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """b timesteps in (0, 1), t = sigmoid(n) with n ~ N(mean, std^2)."""
        n = torch.randn(batch_size, device=device, generator=generator)
        return torch.sigmoid(self.mean + self.std * n)

    def velocity(self, model, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """The sampler's prediction: dx/dt at (x, t) for x: b c t h w and t: b."""
        out = model(x, t, context, context_mask)
        if self.prediction == "velocity":
            return out
        # v = (x_t - x_0) / t; t is floored so the division stays bounded near the data end (JiT, sec. 4).
        t_ = t.clamp(min=self.t_min).view(-1, *([1] * (x.ndim - 1)))  # b 1 1 1 1
        return (x - out) / t_

    def loss(self, model, x0: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """Mean squared velocity error for clean latents x0 (b c t h w)."""
        t = self.sample_t(x0.shape[0], x0.device)
        eps = torch.randn_like(x0)
        t_ = t.view(-1, *([1] * (x0.ndim - 1)))  # b 1 1 1 1
        xt = (1 - t_) * x0 + t_ * eps
        return F.mse_loss(self.velocity(model, xt, t, context, context_mask).float(), (eps - x0).float())

    def loss_packed(self, model, x0s: list[torch.Tensor], context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """The same loss for clips of different shapes (x0s[i]: c t h w) run as one packed sequence.

        Every element of every clip weighs the same, as if the clips were one batch.
        """
        t = self.sample_t(len(x0s), x0s[0].device)  # k
        eps = [torch.randn_like(x) for x in x0s]
        xts = [(1 - ti) * x + ti * e for x, e, ti in zip(x0s, eps, t)]
        outs = model.forward_packed(xts, t, context, context_mask)  # [c t h w]
        if self.prediction == "x0":
            outs = [(xt - o) / ti.clamp(min=self.t_min) for xt, o, ti in zip(xts, outs, t)]
        err = sum(F.mse_loss(o.float(), (e - x).float(), reduction="sum") for o, e, x in zip(outs, eps, x0s))
        return err / sum(x.numel() for x in x0s)
