"""The DiT's transformer blocks: one class per variant, chosen by `BLOCKS[attention_layout, text_conditioning]`.

  CrossBlock       full self-attention over all spacetime tokens, then cross-attention to the text (PixArt-alpha)
  FactorizedBlock  spatial attention within each frame, then temporal attention at each position (Latte, Ma et al.
                   2024; STDiT in Open-Sora), then cross-attention to the text
  JointBlock       video and text tokens in one attention, each stream with its own weights (MM-DiT, SD3, Esser
                   et al. 2024)
Each is adaLN-Zero-modulated attention and MLP with 3D RoPE and QK-norm, and takes the same three arguments:
the video tokens, the text tokens, and the `BlockContext` every block of a forward pass shares; it returns both
streams (only the joint block changes the text's). The attribute names are the checkpoints' state-dict keys, and
their order the parameters' order (an optimizer's state follows it): a new variant adds names, never renames.
"""

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
import torch.nn as nn
from einops import rearrange

from sora.errors import SoraError
from sora.models.attention import CrossAttention, Segments, SelfAttention, attention
from sora.models.block_ops import qk_norm_rope
from sora.models.dit_args import AttentionLayout, DiTArgs, FinalModulation, Modulation, QKNormScope, TextConditioning
from sora.models.modulation import AdaLN, AdaLNConditioning
from sora.models.norms import LayerNorm
from sora.models.rope import rope_for_grid

# ---------------------------------------------------------------------------------------------------------------
# What every block of a forward pass reads
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class BlockContext:
    """Everything a block reads besides the two token streams; made once a forward pass (DiT._context)."""

    rope: torch.Tensor  # n head_dim/2 complex: each video token's rotation
    text_seg: Segments  # which text keys each video token may see
    adaln: AdaLNConditioning  # what modulates the video tokens (with adaLN-single: the shared map's rows)
    grid: Optional[tuple[int, int, int]] = None  # (t, h, w) of a batch's tokens; None for a pack
    self_seg: Optional[Segments] = None  # a pack: which clip each token belongs to (block-diagonal attention)

    def split(self, take: Callable[[torch.Tensor, int], torch.Tensor], n: int) -> "BlockContext":
        """This rank's share when every clip's n tokens are split by `take(x, dim)` (sequence parallelism)."""
        if self.self_seg is not None:
            raise SoraError("data.packing=true does not combine with train.sequence_parallel_size > 1")
        return replace(self, rope=take(self.rope, 0), adaln=self.adaln.split(take, n))  # n/P head_dim/2


# ---------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------


def mlp(dim: int, ratio: float, width: int = 0) -> nn.Sequential:
    hidden = width or int(dim * ratio)  # dit.mlp_width, else the ratio's
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


def _norm(dim: int) -> LayerNorm:
    return LayerNorm(dim, elementwise_affine=False, eps=1e-6)


class Block(nn.Module):
    """What every variant has: attention (norm1, attn), the MLP (norm2, mlp) and its adaLN modulation. A variant's
    forward(x: b n d video tokens, text: b m d text tokens, ctx: BlockContext) returns both streams."""

    n_mod = 6  # modulation vectors: (shift, scale, gate) for attention, then for the MLP

    def _attention(self, a: DiTArgs) -> None:
        self.norm1 = _norm(a.hidden_size)
        self.attn = SelfAttention(a.hidden_size, a.num_heads, a.qk_norm, a.attention_backend, _all_heads(a))

    def _cross(self, a: DiTArgs) -> None:
        self.norm_cross = LayerNorm(a.hidden_size, eps=1e-6)  # with affine: Wan2.1's norm3 (diffusers' norm2)
        self.cross = CrossAttention(a.hidden_size, a.hidden_size, a.num_heads, a.qk_norm, a.attention_backend,
                                    _all_heads(a))

    def _mlp_and_modulation(self, a: DiTArgs) -> None:
        self.norm2 = _norm(a.hidden_size)
        self.mlp = mlp(a.hidden_size, a.mlp_ratio, a.mlp_width)
        self.shares_modulation = a.modulation == Modulation.single
        if self.shares_modulation:  # adaLN-single: the DiT's shared map gives c as n_mod d values; this block's table
            self.modulation_table = nn.Parameter(torch.zeros(self.n_mod * a.hidden_size))
        else:
            self.adaLN_modulation = AdaLN(a.hidden_size, self.n_mod)

    def modulation(self, c: torch.Tensor) -> torch.Tensor:
        """Rows of c -> this block's n_mod d values a row: its own map of c, or with adaLN-single (c then the
        shared map's output, PixArt-alpha sec. 2.3) c plus its learned table."""
        return c + self.modulation_table if self.shares_modulation else self.adaLN_modulation(c)


class CrossBlock(Block):
    """Full self-attention over every spacetime token, then cross-attention to the text."""

    def __init__(self, a: DiTArgs):
        super().__init__()
        self._attention(a)
        self._cross(a)
        self._mlp_and_modulation(a)

    def forward(self, x, text, ctx: BlockContext):
        sa, ff = ctx.adaln.modulations(self.modulation, self.n_mod)
        x = sa.residual(x, self.attn(sa.modulate(self.norm1, x), ctx.rope, ctx.self_seg))
        x = x + self.cross(self.norm_cross(x), text, ctx.text_seg)
        return ff.residual(x, self.mlp(ff.modulate(self.norm2, x))), text


class FactorizedBlock(Block):
    """Spatial attention within each frame, temporal attention at each position, then cross-attention."""

    n_mod = 9  # + (shift, scale, gate) of the temporal attention

    def __init__(self, a: DiTArgs):
        super().__init__()
        self.rope_theta = a.rope_theta
        self._attention(a)  # spatial
        self.norm_t = _norm(a.hidden_size)
        self.attn_t = SelfAttention(a.hidden_size, a.num_heads, a.qk_norm, a.attention_backend, _all_heads(a))
        self._cross(a)
        self._mlp_and_modulation(a)

    def forward(self, x, text, ctx: BlockContext):
        sa, ff, ta = ctx.adaln.modulations(self.modulation, self.n_mod)
        x = sa.residual(x, self._spatial(sa.modulate(self.norm1, x), ctx.grid))
        x = ta.residual(x, self._temporal(ta.modulate(self.norm_t, x), ctx.grid))
        x = x + self.cross(self.norm_cross(x), text, ctx.text_seg)
        return ff.residual(x, self.mlp(ff.modulate(self.norm2, x))), text

    def _spatial(self, h, grid):
        t, hh, ww = grid
        rope = rope_for_grid((1, hh, ww), self.attn.head_dim, self.rope_theta, h.device)
        out = self.attn(rearrange(h, "b (t s) d -> (b t) s d", t=t), rope)  # (b t) (h w) d
        return rearrange(out, "(b t) s d -> b (t s) d", t=t)

    def _temporal(self, h, grid):
        t, hh, ww = grid
        rope = rope_for_grid((t, 1, 1), self.attn_t.head_dim, self.rope_theta, h.device)
        out = self.attn_t(rearrange(h, "b (t s) d -> (b s) t d", t=t), rope)  # (b h w) t d
        return rearrange(out, "(b s) t d -> b (t s) d", s=hh * ww)


class JointBlock(Block):
    """Video and text tokens in one attention, each stream with its own projections, MLP and modulation (MM-DiT);
    RoPE on video tokens only. The text stream is modulated per clip."""

    def __init__(self, a: DiTArgs):
        super().__init__()
        self._attention(a)
        self.text_norm1 = _norm(a.hidden_size)
        self.text_attn = SelfAttention(a.hidden_size, a.num_heads, a.qk_norm, a.attention_backend)  # qkv, norms, proj
        self.text_norm2 = _norm(a.hidden_size)
        self.text_mlp = mlp(a.hidden_size, a.mlp_ratio, a.mlp_width)
        self.text_adaLN_modulation = AdaLN(a.hidden_size, 6)
        self._mlp_and_modulation(a)

    def forward(self, x, text, ctx: BlockContext):
        sa, ff = ctx.adaln.modulations(self.modulation, self.n_mod)
        attn_x, text = self._joint(sa.modulate(self.norm1, x), text, ctx)
        x = sa.residual(x, attn_x)
        return ff.residual(x, self.mlp(ff.modulate(self.norm2, x))), text

    def _joint(self, h, text, ctx: BlockContext):
        """Modulated video tokens h: b n d, text: b m d -> the video stream's attention output, the new text."""
        a, ta = self.attn, self.text_attn
        t_sa, t_ff = ctx.adaln.per_clip(self.text_adaLN_modulation, 6)
        y = t_sa.modulate(self.text_norm1, text)  # b m d
        q, k, v = rearrange(a.qkv(h), "b n (three h d) -> three b h n d", three=3, h=a.num_heads)
        q, k = qk_norm_rope(q, a.q_norm, ctx.rope), qk_norm_rope(k, a.k_norm, ctx.rope)
        tq, tk, tv = rearrange(ta.qkv(y), "b m (three h d) -> three b h m d", three=3, h=ta.num_heads)
        tq, tk = ta.q_norm(tq), ta.k_norm(tk)
        n, seg, text_valid = q.shape[2], Segments(), ctx.text_seg.k_valid
        if text_valid is not None:  # padded captions: mask their padding keys, never the video keys
            seg.k_valid = torch.cat([torch.ones(q.shape[0], n, dtype=torch.bool, device=q.device), text_valid], 1)
        out = attention(torch.cat([q, tq], 2), torch.cat([k, tk], 2), torch.cat([v, tv], 2), a.backend,
                        seg)  # b h (n+m) d
        out = rearrange(out, "b h l d -> b l (h d)")
        x_out, y_out = a.proj(out[:, :n]), ta.proj(out[:, n:])
        text = t_sa.residual(text, y_out)
        return x_out, t_ff.residual(text, self.text_mlp(t_ff.modulate(self.text_norm2, text)))


def _all_heads(a: DiTArgs) -> bool:
    return a.qk_norm_scope == QKNormScope.all_heads


BLOCKS: dict[tuple[AttentionLayout, TextConditioning], type[Block]] = {
    (AttentionLayout.full, TextConditioning.cross): CrossBlock,
    (AttentionLayout.factorized, TextConditioning.cross): FactorizedBlock,
    (AttentionLayout.full, TextConditioning.joint): JointBlock,
}  # factorized + joint is refused by DiTArgs.check


class FinalLayer(nn.Module):
    """adaLN-modulated norm, then the linear map back to patches (through a GELU layer `hidden_width` wide first,
    if > 0: dit.head_mlp_width). The (shift, scale) come from the layer's own adaLN map of c, or
    (final_modulation=table: PixArt-alpha's T2IFinalLayer, Wan's head) from a learned table added to c itself, the
    raw time embedding."""

    def __init__(self, dim: int, out_dim: int, modulation: FinalModulation = FinalModulation.adaln,
                 hidden_width: int = 0):
        super().__init__()
        self.norm = _norm(dim)
        self.hidden = nn.Sequential(nn.Linear(dim, hidden_width), nn.GELU(approximate="tanh")) if hidden_width else None
        self.linear = nn.Linear(hidden_width or dim, out_dim)
        self.table = modulation == FinalModulation.table
        if self.table:
            self.modulation_table = nn.Parameter(torch.zeros(2 * dim))
        else:
            self.adaLN_modulation = AdaLN(dim, 2)

    def modulation(self, c: torch.Tensor) -> torch.Tensor:
        """Rows of c (r d) -> r (2 d): the shift's and the scale's rows."""
        return self.modulation_table + c.repeat(1, 2) if self.table else self.adaLN_modulation(c)

    def forward(self, x: torch.Tensor, adaln: AdaLNConditioning) -> torch.Tensor:
        (step,) = adaln.modulations(self.modulation, 2)
        x = step.modulate(self.norm, x)  # b n dim
        if self.hidden is not None:
            x = self.hidden(x)  # b n hidden_width
        return self.linear(x)  # b n out_dim
