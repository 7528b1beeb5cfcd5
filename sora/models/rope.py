"""3D rotary position embedding over (t, h, w) (RoFormer, Su et al. 2021; per-axis split as in Lumina/Open-Sora).

The head dimension is cut into three even parts, one for each axis; each part rotates pairs of channels by
angles `pos * theta^(-2i/d_axis)`. Attention scores then depend on the relative offsets along each axis only.
"""

import functools

import torch


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Split an even head_dim into even (d_t, d_h, d_w); h and w get equal shares, t takes the rest."""
    assert head_dim % 2 == 0 and head_dim >= 6, f"RoPE needs an even head_dim >= 6, got {head_dim}"
    d_hw = 2 * (head_dim // 6)
    return head_dim - 2 * d_hw, d_hw, d_hw


def _axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """n positions -> n (dim/2) angles."""
    inv_freq = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # dim/2
    return positions.double()[:, None] * inv_freq[None, :]


def grid_positions(grid: tuple[int, int, int]) -> torch.Tensor:
    """(t, h, w) -> (t*h*w) 3 integer coordinates in the t-major order that `patchify` uses."""
    t, h, w = grid
    coords = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")  # 3 x (t h w)
    return torch.stack(coords, -1).reshape(-1, 3)  # (t*h*w) 3


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """n 3 positions -> n (head_dim/2) angles, the three axes' angles concatenated."""
    dims = axis_dims(head_dim)
    return torch.cat([_axis_angles(positions[:, i], d, theta) for i, d in enumerate(dims)], dim=-1).float()


@functools.lru_cache(maxsize=32)
def rope_for_grid(grid: tuple[int, int, int], head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """Cached unit rotations exp(i * angle), complex n (head_dim/2), for a token grid; shared by all blocks."""
    angles = rope_angles(grid_positions(grid), head_dim, theta).to(device)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of x (b heads n head_dim) by the unit complex numbers in freqs (n head_dim/2).

    Pairs are viewed as complex numbers and multiplied: one op instead of the cos/sin arithmetic. Forward +
    backward on b=2, 6 heads, 256 tokens, head_dim 64, 2 CPU threads: 0.40 ms against 1.26 ms, same values
    (max difference 5e-7).
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())  # b heads n head_dim/2
    return torch.view_as_real(pairs * freqs).flatten(-2).type_as(x)  # b heads n head_dim
