"""The DiT block's small element-wise ops, one function each: the block reads as its equations.

  qk_norm_rope    RMSNorm of each head's queries or keys, then the 3D RoPE rotation
  norm_modulate   LayerNorm, then adaLN's x (1 + scale) + shift
  gated_residual  x + gate * y (adaLN-Zero)
These functions fuse nothing by themselves: eager, each op is its own kernel; under `train.compile`,
torch.compile inlines the calls and inductor fuses the element-wise chains between the matmuls whether or not
they are written as functions. What is specific to compilation is one branch of `qk_norm_rope`: eager, the RoPE
rotation multiplies complex numbers (one op, the fastest eager form: sora/models/rope.py); traced by torch.compile
it is written in real cos / sin arithmetic in fp32 (`rope_real`), which inductor fuses with the norm before it and
the casts around it. The values are the same (tests/test_block_ops.py). No custom kernels.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from sora.models.rope import apply_rope


def rope_real(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """`apply_rope` in real arithmetic: x b heads n head_dim, freqs complex n head_dim/2 -> x's shape and dtype."""
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # b heads n head_dim/2 each: the pairs' two channels
    cos, sin = freqs.real, freqs.imag  # n head_dim/2
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).type_as(x)


def qk_norm_rope(x: torch.Tensor, norm: nn.Module, freqs: torch.Tensor) -> torch.Tensor:
    """norm (an RMSNorm, or Identity with dit.qk_norm=false) then RoPE; x: b heads n head_dim.

    Compiled, one fp32 pass: the norm's output is not rounded to x's dtype before the rotation.
    """
    if not torch.compiler.is_compiling():
        return apply_rope(norm(x), freqs)
    y = x.float()
    if isinstance(norm, nn.RMSNorm):
        y = F.rms_norm(y, norm.normalized_shape, None if norm.weight is None else norm.weight.float(), norm.eps)
    return rope_real(y, freqs).type_as(x)


def norm_modulate(norm: nn.Module, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: norm(x) (1 + scale) + shift; shift and scale broadcast over x (b u 1 d over b u s d: a row for each
    unit of s tokens, sora/models/modulation.py)."""
    return norm(x) * (1 + scale) + shift


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """adaLN-Zero's residual: x + gate * y; gate broadcasts over x and y as norm_modulate's scale does."""
    return x + gate * y
