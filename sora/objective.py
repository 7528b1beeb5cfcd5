"""Rectified flow (Liu et al. 2023; Esser et al. 2024): straight paths from data to noise, velocity target.

x_t = (1 - t) x_0 + t * eps, with t = 1 pure noise. The model predicts v = eps - x_0 = dx_t/dt, and the
sampler integrates dx/dt = v from t = 1 down to t = 0. Training timesteps are logit-normal (SD3, eq. 19),
which puts more weight on the middle of the path, where the velocity is hardest to predict.
"""

import torch
import torch.nn.functional as F


class RectifiedFlow:
    def __init__(self, logit_normal_mean: float = 0.0, logit_normal_std: float = 1.0):
        assert logit_normal_std > 0, f"logit_normal_std must be > 0, got {logit_normal_std}"
        self.mean, self.std = logit_normal_mean, logit_normal_std

    def sample_t(self, batch_size: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """b timesteps in (0, 1), t = sigmoid(n) with n ~ N(mean, std^2)."""
        n = torch.randn(batch_size, device=device, generator=generator)
        return torch.sigmoid(self.mean + self.std * n)

    def loss(self, model, x0: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """Mean squared velocity error for clean latents x0 (b c t h w)."""
        t = self.sample_t(x0.shape[0], x0.device)
        eps = torch.randn_like(x0)
        t_ = t.view(-1, *([1] * (x0.ndim - 1)))  # b 1 1 1 1
        xt = (1 - t_) * x0 + t_ * eps
        return F.mse_loss(model(xt, t, context, context_mask).float(), (eps - x0).float())

    def velocity(self, model, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """The sampler's prediction: dx/dt at (x, t). For rectified flow that is the model's output itself."""
        return model(x, t, context, context_mask)
