"""Multi-head self- and cross-attention with QK-norm, over torch's scaled_dot_product_attention.

QK-norm (RMSNorm on queries and keys per head; Dehghani et al. 2023, ViT-22B) keeps attention logits bounded,
which is what lets video DiTs train in bf16 at high learning rates without loss spikes.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from sora.rope import apply_rope


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True):
        super().__init__()
        assert dim % num_heads == 0, f"hidden_size {dim} does not divide by num_heads {num_heads}"
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x: b n dim; rope: (cos, sin), each n head_dim/2."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        q, k = apply_rope(self.q_norm(q), *rope), apply_rope(self.k_norm(k), *rope)
        out = F.scaled_dot_product_attention(q, k, v)  # b h n d
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Video tokens attend to text tokens; padded text tokens are masked out."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, qk_norm: bool = True):
        super().__init__()
        assert dim % num_heads == 0, f"hidden_size {dim} does not divide by num_heads {num_heads}"
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.q_norm = nn.RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """x: b n dim; context: b m context_dim; context_mask: b m bool, True = a real token (>= 1 per row)."""
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        mask = rearrange(context_mask, "b m -> b 1 1 m")
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v, attn_mask=mask)  # b h n d
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))
