"""Attention: one function over four backends, and the self-, cross- and joint-attention layers built on it.

Backends (`dit.attention_backend`), all taking q, k, v as `b h n d` and an optional `Segments` mask:
  sdpa     torch's scaled_dot_product_attention (flash / memory-efficient kernels on GPU); the default
  xformers xformers.ops.memory_efficient_attention, with its block-diagonal bias for packed sequences (GPU)
  flex     torch FlexAttention, the mask as a block mask built from segment ids
  math     softmax(q k^T / sqrt(d)) v written out: the reference the others are tested against

Packed variable-length batches (NaViT, Dehghani et al. 2023) put several clips into one sequence; `Segments`
says which query and key tokens belong to which clip, plus which text keys are padding, and each backend turns
that into its own mask. QK-norm (RMSNorm on queries and keys per head; Dehghani et al. 2023, ViT-22B) keeps
attention logits bounded in bf16 at high learning rates.
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from sora.distributed.sequence import heads_to_seq, seq_to_heads
from sora.errors import SoraError
from sora.models.norms import RMSNorm
from sora.models.rope import apply_rope

BACKENDS = ("sdpa", "xformers", "flex", "math")

# ---------------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Segments:
    """Which clip each query and key token belongs to (b n, b m int), and which keys are real (b m bool).

    A query attends to a key when both belong to the same clip and the key is real. With one clip a row
    and no padding this is no mask at all, and backends take their unmasked path.
    """

    q_ids: Optional[torch.Tensor] = None  # b n
    k_ids: Optional[torch.Tensor] = None  # b m
    k_valid: Optional[torch.Tensor] = None  # b m bool
    q_lens: Optional[list[int]] = None  # packed: tokens per clip, for xformers' block-diagonal bias
    k_lens: Optional[list[int]] = None

    def dense(self) -> Optional[torch.Tensor]:
        """b 1 n m bool (True = attend), or None when nothing is masked."""
        mask = None
        if self.q_ids is not None:
            mask = self.q_ids[:, None, :, None] == self.k_ids[:, None, None, :]  # b 1 n m
        if self.k_valid is not None:
            valid = self.k_valid[:, None, None, :]  # b 1 1 m
            mask = valid if mask is None else mask & valid
        return mask


def _math(q, k, v, seg: Optional[Segments]):
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])  # b h n m
    mask = seg.dense() if seg else None
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).to(q.dtype)  # b h n d


def _sdpa(q, k, v, seg: Optional[Segments]):
    mask = seg.dense() if seg else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


_compiled_flex = None


def _flex_attention():
    """FlexAttention compiled once on GPU (its fused kernel); eager elsewhere (a reference-speed path)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if not torch.cuda.is_available():
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def _flex(q, k, v, seg: Optional[Segments]):
    import warnings

    block = None
    if seg is not None and (seg.q_ids is not None or seg.k_valid is not None):
        block = _flex_block_mask(q, k, seg)
    with warnings.catch_warnings():  # eager FlexAttention on CPU warns that it is not compiled: that is intended
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return _flex_attention()(q, k, v, block_mask=block)


def _flex_block_mask(q, k, seg: Segments):
    """FlexAttention's block mask for a segment mask (same clip, real key)."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, n, m = q.shape[0], q.shape[2], k.shape[2]
    q_ids = seg.q_ids if seg.q_ids is not None else torch.zeros(b, n, dtype=torch.long, device=q.device)
    k_ids = seg.k_ids if seg.k_ids is not None else torch.zeros(b, m, dtype=torch.long, device=q.device)
    k_valid = seg.k_valid if seg.k_valid is not None else torch.ones(b, m, dtype=torch.bool, device=q.device)

    def mask_mod(bi, hi, qi, ki):
        return (q_ids[bi, qi] == k_ids[bi, ki]) & k_valid[bi, ki]

    return create_block_mask(mask_mod, b, None, n, m, device=q.device)


def _xformers(q, k, v, seg: Optional[Segments]):
    try:
        import xformers.ops as xops
    except ImportError:
        raise SoraError("dit.attention_backend=xformers needs the xformers extra: pip install -e '.[xformers]' "
                        "(GPU only)") from None
    q, k, v = (rearrange(x, "b h n d -> b n h d") for x in (q, k, v))
    bias = None
    if seg is not None and seg.q_lens is not None:  # packed: block-diagonal over clips
        bias = xops.fmha.BlockDiagonalMask.from_seqlens(seg.q_lens, seg.k_lens)
    elif seg is not None and seg.k_valid is not None:  # padded text keys: an additive bias b h n m
        (b, n, h, _), m = q.shape, k.shape[1]
        # xformers wants the bias's last dimension 8-aligned in memory: allocate padded, then slice.
        bias = torch.zeros(b, h, n, -(-m // 8) * 8, dtype=q.dtype, device=q.device)[..., :m]
        bias.masked_fill_(~seg.k_valid[:, None, None, :], float("-inf"))
    try:
        out = xops.memory_efficient_attention(q, k, v, attn_bias=bias)
    except NotImplementedError as e:  # e.g. a wheel built for another torch: it imports, but loads no kernels
        raise SoraError(f"dit.attention_backend=xformers: xformers has no kernel for these inputs on torch "
                        f"{torch.__version__} ({str(e).splitlines()[0]}); install an xformers built for this torch, "
                        f"or use dit.attention_backend=sdpa") from None
    return rearrange(out, "b n h d -> b h n d")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa",
              seg: Optional[Segments] = None) -> torch.Tensor:
    """q: b h n d, k and v: b h m d -> b h n d, with the named backend and an optional segment mask."""
    if backend == "sdpa":
        return _sdpa(q, k, v, seg)
    if backend == "math":
        return _math(q, k, v, seg)
    if backend == "flex":
        return _flex(q, k, v, seg)
    if backend == "xformers":
        return _xformers(q, k, v, seg)
    raise SoraError(f"dit.attention_backend={backend!r}: choose one of {', '.join(BACKENDS)}")


# ---------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------


def _qk_norm(head_dim: int, on: bool) -> nn.Module:
    return RMSNorm(head_dim) if on else nn.Identity()


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, backend: str = "sdpa"):
        super().__init__()
        assert dim % num_heads == 0, f"hidden_size {dim} does not divide by num_heads {num_heads}"
        self.num_heads, self.head_dim, self.backend = num_heads, dim // num_heads, backend
        self.sp_group = None  # set by DiT.enable_sequence_parallel: x holds this rank's slice of the tokens
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm, self.k_norm = _qk_norm(self.head_dim, qk_norm), _qk_norm(self.head_dim, qk_norm)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope, seg: Optional[Segments] = None) -> torch.Tensor:
        """x: b n dim; rope: complex n head_dim/2 rotations (sora/models/rope.py)."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        q, k = apply_rope(self.q_norm(q), rope), apply_rope(self.k_norm(k), rope)
        if self.sp_group is not None:  # Ulysses: all tokens, a share of the heads, then back (sora/distributed/sequence.py)
            q, k, v = (seq_to_heads(x, self.sp_group) for x in (q, k, v))  # b h/P n d
            out = heads_to_seq(attention(q, k, v, self.backend, seg), self.sp_group)  # b h n/P d
        else:
            out = attention(q, k, v, self.backend, seg)  # b h n d
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Video tokens attend to text tokens; padded text tokens (and, packed, other clips' text) are masked out."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, qk_norm: bool = True, backend: str = "sdpa"):
        super().__init__()
        assert dim % num_heads == 0, f"hidden_size {dim} does not divide by num_heads {num_heads}"
        self.num_heads, self.head_dim, self.backend = num_heads, dim // num_heads, backend
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.q_norm, self.k_norm = _qk_norm(self.head_dim, qk_norm), _qk_norm(self.head_dim, qk_norm)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, seg: Segments) -> torch.Tensor:
        """x: b n dim; context: b m context_dim; seg: which text keys each query may see (>= 1 per query)."""
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        out = attention(self.q_norm(q), self.k_norm(k), v, self.backend, seg)  # b h n d
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))
