"""Diffusion transformer over spacetime patches (DiT, Peebles & Xie 2023), conditioned on text.

Each block: adaLN-Zero-modulated self-attention over all spacetime tokens with 3D RoPE and QK-norm, then
cross-attention to the text tokens (PixArt-alpha, Chen et al. 2023), then an adaLN-Zero-modulated MLP. The
model maps (noisy latent, timestep, text) to a tensor of the latent's shape; what that tensor means (velocity,
noise, ...) is the objective's business, not the backbone's.
"""

import math

import torch
import torch.nn as nn

from sora.attention import CrossAttention, SelfAttention
from sora.patchify import check_patchable, patchify, unpatchify
from sora.rope import rope_for_grid

# ---------------------------------------------------------------------------------------------------------------
# Conditioning
# ---------------------------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x: b n d; shift, scale: b 1 d."""
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoidal features of 1000 t (as DDPM's integer steps) -> MLP."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000 * t.float()[:, None] * freqs[None]  # b half
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))  # b dim


# ---------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qk_norm)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross = CrossAttention(dim, dim, num_heads, qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c, rope, context, context_mask):
        """x: b n d; c: b d; context: b m d; context_mask: b m."""
        shift_sa, scale_sa, gate_sa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, None].chunk(6, dim=-1)
        x = x + gate_sa * self.attn(modulate(self.norm1(x), shift_sa, scale_sa), rope)
        x = x + self.cross(self.norm_cross(x), context, context_mask)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))  # b n out_dim


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


class DiT(nn.Module):
    def __init__(self, in_channels: int, text_dim: int, hidden_size: int = 384, depth: int = 12, num_heads: int = 6,
                 mlp_ratio: float = 4.0, patch_size=(1, 2, 2), qk_norm: bool = True, rope_theta: float = 10000.0,
                 pooled_text: bool = True):
        super().__init__()
        assert len(patch_size) == 3 and all(p >= 1 for p in patch_size), f"patch_size must be (pt, ph, pw) >= 1, got {patch_size}"
        assert hidden_size % num_heads == 0, f"hidden_size {hidden_size} does not divide by num_heads {num_heads}"
        self.in_channels, self.patch_size = in_channels, tuple(patch_size)
        self.head_dim, self.rope_theta, self.pooled_text = hidden_size // num_heads, rope_theta, pooled_text
        patch_dim = in_channels * math.prod(patch_size)
        self.x_embed = nn.Linear(patch_dim, hidden_size)
        self.t_embed = TimestepEmbedder(hidden_size)
        self.text_embed = nn.Sequential(nn.Linear(text_dim, hidden_size), nn.GELU(approximate="tanh"),
                                        nn.Linear(hidden_size, hidden_size))
        self.pool_embed = nn.Linear(hidden_size, hidden_size) if pooled_text else None
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, qk_norm) for _ in range(depth)])
        self.final = FinalLayer(hidden_size, patch_dim)
        self.initialize_weights()

    def initialize_weights(self):
        """DiT's init: xavier linears, N(0, 0.02) timestep MLP, and zeroed adaLN and output layers (adaLN-Zero)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for layer in self.t_embed.mlp[0], self.t_embed.mlp[2]:
            nn.init.normal_(layer.weight, std=0.02)
        # Zeroed modulation makes every block the identity at init, and the zeroed output predicts 0.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in self.final.adaLN_modulation[-1], self.final.linear:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """x: b c t h w; t: b in [0, 1]; context: b m text_dim; context_mask: b m bool -> b c t h w."""
        assert x.shape[1] == self.in_channels, f"DiT built for {self.in_channels} channels, got {x.shape[1]}"
        grid = check_patchable(x.shape, self.patch_size)
        rope = rope_for_grid(grid, self.head_dim, self.rope_theta, x.device)
        tokens = self.x_embed(patchify(x, self.patch_size))  # b n hidden
        context = self.text_embed(context)  # b m hidden
        c = self.t_embed(t)  # b hidden
        if self.pool_embed is not None:
            weights = context_mask.to(context.dtype)[..., None]  # b m 1
            c = c + self.pool_embed((context * weights).sum(1) / weights.sum(1).clamp(min=1))  # b hidden
        for block in self.blocks:
            tokens = block(tokens, c, rope, context, context_mask)
        return unpatchify(self.final(tokens, c), self.patch_size, grid)  # b c t h w
