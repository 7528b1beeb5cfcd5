"""Metrics on videos in [-1, 1], `b c t h w`."""

import torch


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2, so MAX^2 = 4), over all elements."""
    mse = (x.float() - y.float()).pow(2).mean()
    return 10 * torch.log10(4.0 / mse.clamp(min=1e-10))
