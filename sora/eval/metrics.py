"""Metrics on videos in [-1, 1], `b c t h w`."""

import torch
import torch.nn.functional as F
from einops import rearrange


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2, so MAX^2 = 4), over all elements."""
    mse = (x.float() - y.float()).pow(2).mean()
    return 10 * torch.log10(4.0 / mse.clamp(min=1e-10))


def _gaussian_window(size: int, sigma: float, device) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma**2))
    return g / g.sum()  # size


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004, eq. 13) of videos in [-1, 1], each frame and channel on its own.

    The standard constants: an 11-tap Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03 on a [0, 1] range, and
    only windows wholly inside the frame ('valid'), as skimage's `structural_similarity(gaussian_weights=True)`.
    Frames smaller than the window use a window as large as the frame.
    """
    assert x.shape == y.shape and x.dim() == 5, (
        f"ssim takes two b c t h w videos of one shape, got {x.shape}, {y.shape}")
    x = rearrange((x.float() + 1) / 2, "b c t h w -> (b c t) 1 h w")
    y = rearrange((y.float() + 1) / 2, "b c t h w -> (b c t) 1 h w")
    size = min(window, x.shape[-1], x.shape[-2])
    g = _gaussian_window(size, sigma, x.device)

    def blur(v):  # separable Gaussian filter, valid positions only: n 1 h w -> n 1 (h - size + 1) (w - size + 1)
        v = F.conv2d(v, g.view(1, 1, -1, 1))
        return F.conv2d(v, g.view(1, 1, 1, -1))

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.pow(2)
    var_y = blur(y * y) - mu_y.pow(2)
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))
    return s.mean()
