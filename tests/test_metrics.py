"""Video metrics against closed forms."""

import math

import torch

from sora.eval.metrics import psnr, ssim


def test_psnr_of_a_known_error():
    x = torch.zeros(1, 3, 2, 8, 8)
    assert math.isclose(float(psnr(x, x + 0.2)), 10 * math.log10(4 / 0.04), rel_tol=1e-5)


def test_ssim_closed_forms():
    x = torch.rand(2, 3, 3, 24, 24) * 2 - 1
    assert math.isclose(float(ssim(x, x)), 1.0, rel_tol=1e-6)
    # Two flat frames: variances and covariance vanish, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.25, 0.75, 0.01**2
    flat_a, flat_b = torch.full((1, 1, 1, 16, 16), 2 * a - 1), torch.full((1, 1, 1, 16, 16), 2 * b - 1)
    # rel_tol: float32 variances
    assert math.isclose(float(ssim(flat_a, flat_b)), (2 * a * b + c1) / (a * a + b * b + c1), rel_tol=1e-3)
    # Noise lowers it, more noise lowers it more.
    g = torch.Generator().manual_seed(0)
    noisy = [(x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1) for s in (0.05, 0.3)]
    assert 1.0 > float(ssim(x, noisy[0])) > float(ssim(x, noisy[1])) > 0.0
