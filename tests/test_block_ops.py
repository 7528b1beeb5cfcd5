"""The block's small ops equal the ops they replace: RoPE in real arithmetic, QK-norm + RoPE as compiled."""

import pytest
import torch

from sora.models.block_ops import gated_residual, norm_modulate, qk_norm_rope, rope_real
from sora.models.norms import LayerNorm, RMSNorm
from sora.models.rope import apply_rope, rope_for_grid


def heads(dtype=torch.float32, d=128):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4 * 6 * 5, d, generator=g).to(dtype)  # b heads n head_dim
    return x, rope_for_grid((4, 6, 5), d, 10000.0, torch.device("cpu"))


@pytest.mark.parametrize("d", [72, 128])
def test_rope_in_real_arithmetic_equals_the_complex_one(d):
    x, freqs = heads(d=d)
    torch.testing.assert_close(rope_real(x, freqs), apply_rope(x, freqs), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("qk_norm", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qk_norm_rope_compiled_form_equals_norm_then_rope(monkeypatch, qk_norm, dtype):
    """The form torch.compile traces (fp32 throughout) against eager's norm, round to dtype, rotate."""
    x, freqs = heads(dtype)
    norm = RMSNorm(128) if qk_norm else torch.nn.Identity()
    if qk_norm:
        torch.nn.init.normal_(norm.weight, 1.0, 0.3)
    eager = qk_norm_rope(x, norm, freqs)
    torch.testing.assert_close(eager, apply_rope(norm(x), freqs), atol=0, rtol=0)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    traced = qk_norm_rope(x, norm, freqs)
    assert traced.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 2e-2  # bf16: eager rounds the norm's output once more
    torch.testing.assert_close(traced.float(), eager.float(), atol=tol, rtol=tol)


def test_norm_modulate_and_gated_residual_equal_their_parts():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 10, 32, generator=g), torch.randn(2, 10, 32, generator=g)
    shift, scale, gate = (torch.randn(2, 1, 32, generator=g) for _ in range(3))
    norm = LayerNorm(32, elementwise_affine=False, eps=1e-6)
    expect = torch.nn.functional.layer_norm(x, (32,), eps=1e-6) * (1 + scale) + shift
    torch.testing.assert_close(norm_modulate(norm, x, shift, scale), expect)
    torch.testing.assert_close(gated_residual(x, gate, y), x + gate * y)
