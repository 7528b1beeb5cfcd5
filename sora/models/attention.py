"""Attention: one function over seven backends, and the self-, cross- and joint-attention layers built on it.

Backends (`dit.attention_backend`), all taking q, k, v as `b h n d` and an optional `Segments` mask:
  sdpa     torch's scaled_dot_product_attention, its own kernel choice (flash / cuDNN / memory-efficient); the default
  cudnn    SDPA pinned to cuDNN's fused attention (GPU only)
  flash    SDPA pinned to torch's FlashAttention kernel (FlashAttention-2 on GPU; torch's flash kernel on CPU)
  fa4      FlashAttention-4 (`pip install flash-attn-4`, CuTe DSL; Hopper and Blackwell GPUs, bf16 / fp16)
  xformers xformers.ops.memory_efficient_attention, with its block-diagonal bias for packed sequences (GPU)
  flex     torch FlexAttention, the mask as a block mask built from segment ids
  math     softmax(q k^T / sqrt(d)) v written out: the reference the others are tested against

The pinned kernels (cudnn, flash, fa4) take no mask. A masked call runs them on each group of queries that see the
same keys (`mask_groups`): per clip of a pack (contiguous slices), or per row's real keys (padded text); fa4 runs
all groups in one variable-length call. Unmasked calls, the common case in training (no padding left after
`trim_text_padding`), go straight to the kernel. `backend_unavailable` says in one line why a backend cannot run
here; the config check calls it before anything is built.

`SelfAttention` calls the kernel through `AttentionCore`, a module without weights, so that a parallel plan can wrap
the part between the projections: Ulysses sequence parallelism puts its all-to-alls around it
(sora/distributed/sequence.py: parallelize_sequence); the layer itself knows nothing of it.

Packed variable-length batches (NaViT, Dehghani et al. 2023) put several clips into one sequence; `Segments`
says which query and key tokens belong to which clip, plus which text keys are padding, and each backend turns
that into its own mask. QK-norm (RMSNorm on queries and keys per head; Dehghani et al. 2023, ViT-22B) keeps
attention logits bounded in bf16 at high learning rates.
"""

import functools
import math
from dataclasses import dataclass
from enum import Enum
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from sora.errors import SoraError
from sora.models.block_ops import qk_norm_rope
from sora.models.norms import RMSNorm


class AttentionBackend(str, Enum):
    """`dit.attention_backend`: which kernel computes attention (the module docstring says what each is)."""

    sdpa = "sdpa"  # torch's SDPA, its own kernel choice
    cudnn = "cudnn"  # SDPA pinned to cuDNN attention (GPU)
    flash = "flash"  # SDPA pinned to FlashAttention(-2)
    fa4 = "fa4"  # FlashAttention-4, CuTe DSL (Hopper / Blackwell; the fa4 extra)
    xformers = "xformers"
    flex = "flex"
    math = "math"


GPU_ONLY = (AttentionBackend.cudnn, AttentionBackend.fa4, AttentionBackend.xformers)


def _names() -> str:
    return ", ".join(b.value for b in AttentionBackend)

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

# ---------------------------------------------------------------------------------------------------------------
# Pinned kernels: one call without a mask, one call per group of queries that see the same keys with one
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Group:
    """Queries of one row that see the same keys: each index is a slice (contiguous, packed) or an index tensor."""

    row: int
    q: slice | torch.Tensor
    k: slice | torch.Tensor


def mask_groups(seg: Segments, b: int, n: int, m: int) -> list[Group]:
    """The mask of `seg` as groups of queries with their keys (a query in no group sees no key)."""
    if seg.q_lens is not None and seg.k_valid is None and b == 1:  # a pack: block-diagonal, clips in order
        groups, q0, k0 = [], 0, 0
        for nq, nk in zip(seg.q_lens, seg.k_lens):
            groups.append(Group(0, slice(q0, q0 + nq), slice(k0, k0 + nk)))
            q0, k0 = q0 + nq, k0 + nk
        return groups
    groups = []
    for row in range(b):
        valid = seg.k_valid[row] if seg.k_valid is not None else None  # m
        if seg.q_ids is None:
            groups.append(Group(row, slice(0, n), valid.nonzero()[:, 0]))
            continue
        for i in seg.q_ids[row].unique().tolist():
            keys = seg.k_ids[row] == i if valid is None else (seg.k_ids[row] == i) & valid
            groups.append(Group(row, (seg.q_ids[row] == i).nonzero()[:, 0], keys.nonzero()[:, 0]))
    return groups


def _masked(seg: Optional[Segments]) -> bool:
    return seg is not None and (seg.q_ids is not None or seg.k_valid is not None)


def _scatter(q: torch.Tensor, groups: list[Group], outs: list[torch.Tensor]) -> torch.Tensor:
    """Each group's output (1 h n_g d) at its row and queries of a b h n d result; queries in no group are 0."""
    if all(isinstance(g.q, slice) for g in groups) and sum(o.shape[2] for o in outs) == q.shape[2] and q.shape[0] == 1:
        return torch.cat(outs, dim=2)  # a pack: the clips' outputs in order
    out = torch.zeros_like(q)
    for g, o in zip(groups, outs):
        out[g.row][:, g.q] = o[0]  # h n_g d; autograd records the writes (CopySlices)
    return out


def _grouped(kernel, q, k, v, seg: Segments) -> torch.Tensor:
    """kernel(q, k, v) on each group of queries that see the same keys; b h n d."""
    groups = mask_groups(seg, q.shape[0], q.shape[2], k.shape[2])
    outs = [kernel(q[g.row][:, g.q][None], k[g.row][:, g.k][None], v[g.row][:, g.k][None]) for g in groups]  # 1 h n_g d
    return _scatter(q, groups, outs)


def _sdpa_pinned(kernel, name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = getattr(SDPBackend, kernel)

    def run(q, k, v):
        with sdpa_kernel(chosen):
            try:
                return F.scaled_dot_product_attention(q, k, v)
            except RuntimeError as e:  # "No available kernel": the pinned kernel refuses these inputs
                raise SoraError(f"dit.attention_backend={name}: {kernel} has no kernel for q {tuple(q.shape)} "
                                f"{q.dtype} on {q.device.type} ({str(e).strip().splitlines()[0][:160]}); use "
                                f"dit.attention_backend=sdpa") from None

    def attend(q, k, v, seg: Optional[Segments]):
        return _grouped(run, q, k, v, seg) if _masked(seg) else run(q, k, v)

    return attend


_cudnn = _sdpa_pinned("CUDNN_ATTENTION", "cudnn")
_flash = _sdpa_pinned("FLASH_ATTENTION", "flash")


def _fa4_module():
    try:
        from flash_attn import cute
    except ImportError:
        raise SoraError("dit.attention_backend=fa4 needs FlashAttention-4: pip install -e '.[fa4]' (flash-attn-4; "
                        "Hopper or Blackwell GPUs)") from None
    return cute


def _fa4(q, k, v, seg: Optional[Segments]):
    """FlashAttention-4 (b n h d layout); a mask becomes one variable-length call over its groups."""
    if problem := _fa4_gpu_problem(q.device):
        raise SoraError(problem)
    cute = _fa4_module()
    first = lambda r: r[0] if isinstance(r, tuple) else r
    if not _masked(seg):
        q, k, v = (rearrange(x, "b h n d -> b n h d") for x in (q, k, v))
        return rearrange(first(cute.flash_attn_func(q, k, v)), "b n h d -> b h n d")
    groups = mask_groups(seg, q.shape[0], q.shape[2], k.shape[2])
    take = lambda x, ix: [rearrange(x[g.row][:, getattr(g, ix)], "h n d -> n h d") for g in groups]
    qs, ks, vs = take(q, "q"), take(k, "k"), take(v, "k")
    cu = lambda xs: torch.tensor([0] + [x.shape[0] for x in xs], device=q.device).cumsum(0).int()
    # By keyword: 4.0.0b40 put a `qv` argument fourth, and positional lengths then failed on an H200.
    out = first(cute.flash_attn_varlen_func(torch.cat(qs), torch.cat(ks), torch.cat(vs), cu_seqlens_q=cu(qs),
                                            cu_seqlens_k=cu(ks), max_seqlen_q=max(x.shape[0] for x in qs),
                                            max_seqlen_k=max(x.shape[0] for x in ks)))  # N h d
    outs = [rearrange(o, "n h d -> 1 h n d") for o in out.split([x.shape[0] for x in qs])]
    return _scatter(q, groups, outs)


def backend_unavailable(backend: str, device: str | None = None) -> Optional[str]:
    """Why `dit.attention_backend=BACKEND` cannot run on this machine (one line), or None when it can."""
    if backend not in list(AttentionBackend):
        return f"dit.attention_backend={backend!r}: choose one of {_names()}"
    if backend not in GPU_ONLY:
        return None
    if device == "cpu" or not torch.cuda.is_available():
        return _no_gpu(backend)
    if backend == "fa4":
        if problem := _fa4_gpu_problem(torch.device("cuda", torch.cuda.current_device())):
            return problem
        try:
            _fa4_module()
        except SoraError as e:
            return str(e)
    return None


def _off_gpu(backend: str, q: torch.Tensor) -> bool:
    """cuDNN and FA4 kernels run on CUDA tensors only (xformers says so itself)."""
    return backend in ("cudnn", "fa4") and q.device.type != "cuda"


def _no_gpu(backend: str) -> str:
    return f"dit.attention_backend={backend} runs on a CUDA GPU and there is none here; use dit.attention_backend=sdpa"


@functools.lru_cache(maxsize=None)
def _fa4_gpu_problem(device: torch.device) -> Optional[str]:
    """FlashAttention-4's kernels are for Hopper (sm90) and Blackwell (sm100, sm110)."""
    if device.type != "cuda":
        return _no_gpu("fa4")
    major, minor = torch.cuda.get_device_capability(device)
    if major not in (9, 10, 11):
        return (f"dit.attention_backend=fa4 needs a Hopper or Blackwell GPU (compute capability 9.x-11.x); this "
                f"{torch.cuda.get_device_name(device)} is {major}.{minor}: use dit.attention_backend=cudnn or flash")
    return None


B = AttentionBackend
_KERNELS = {B.sdpa: _sdpa, B.cudnn: _cudnn, B.flash: _flash, B.fa4: _fa4, B.xformers: _xformers, B.flex: _flex,
            B.math: _math}  # one per backend; a str-enum member and its value are the same key


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: AttentionBackend | str = "sdpa",
              seg: Optional[Segments] = None) -> torch.Tensor:
    """q: b h n d, k and v: b h m d -> b h n d, with the named backend and an optional segment mask."""
    if q.device.type == "meta" and backend in ("cudnn", "flash", "fa4"):  # shapes only (memory.py): one fused call
        return _sdpa(q, k, v, seg)
    if _off_gpu(backend, q):
        raise SoraError(_no_gpu(backend))
    if kernel := _KERNELS.get(backend):
        return kernel(q, k, v, seg)
    raise SoraError(f"dit.attention_backend={backend!r}: choose one of {_names()}")


# ---------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------


def _qk_norm(head_dim: int, on: bool) -> nn.Module:
    return RMSNorm(head_dim) if on else nn.Identity()


def _qk_norms(num_heads: int, head_dim: int, on: bool, all_heads: bool) -> tuple[nn.Module, nn.Module]:
    """The query and key norms: per head (head_dim channels), or across all heads before the split (Wan2.1's, with
    its eps)."""
    if on and all_heads:
        return RMSNorm(num_heads * head_dim, eps=1e-6), RMSNorm(num_heads * head_dim, eps=1e-6)
    return _qk_norm(head_dim, on), _qk_norm(head_dim, on)


_NO_NORM = nn.Identity()  # the per-head norm's place when the norm ran across heads before the split


class AttentionCore(nn.Module):
    """`attention` between a layer's projections, as a module without weights: what a parallel plan wraps (Ulysses
    sequence parallelism: sora/distributed/sequence.py) while the layer around it stays as it is."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: AttentionBackend,
                seg: Optional[Segments] = None) -> torch.Tensor:
        return attention(q, k, v, backend, seg)  # b h n d


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True,
                 backend: AttentionBackend = AttentionBackend.sdpa, qk_norm_all_heads: bool = False):
        super().__init__()
        assert dim % num_heads == 0, f"hidden_size {dim} does not divide by num_heads {num_heads}"
        self.num_heads, self.head_dim, self.backend = num_heads, dim // num_heads, backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.all_heads = qk_norm and qk_norm_all_heads
        self.q_norm, self.k_norm = _qk_norms(num_heads, self.head_dim, qk_norm, qk_norm_all_heads)
        self.proj = nn.Linear(dim, dim)
        self.core = AttentionCore()

    def forward(self, x: torch.Tensor, rope, seg: Optional[Segments] = None) -> torch.Tensor:
        """x: b n dim; rope: complex n head_dim/2 rotations (sora/models/rope.py)."""
        if self.all_heads:  # Wan2.1: RMSNorm over all heads' channels, then the head split
            q, k, v = self.qkv(x).chunk(3, dim=-1)  # b n dim each
            q, k, v = (rearrange(y, "b n (h d) -> b h n d", h=self.num_heads)
                       for y in (self.q_norm(q), self.k_norm(k), v))
            q, k = qk_norm_rope(q, _NO_NORM, rope), qk_norm_rope(k, _NO_NORM, rope)
        else:
            q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
            q, k = qk_norm_rope(q, self.q_norm, rope), qk_norm_rope(k, self.k_norm, rope)
        out = self.core(q, k, v, self.backend, seg)  # b h n d
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Video tokens attend to text tokens; padded text tokens (and, packed, other clips' text) are masked out."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, qk_norm: bool = True,
                 backend: AttentionBackend = AttentionBackend.sdpa, qk_norm_all_heads: bool = False):
        super().__init__()
        assert dim % num_heads == 0, f"hidden_size {dim} does not divide by num_heads {num_heads}"
        self.num_heads, self.head_dim, self.backend = num_heads, dim // num_heads, backend
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.all_heads = qk_norm and qk_norm_all_heads
        self.q_norm, self.k_norm = _qk_norms(num_heads, self.head_dim, qk_norm, qk_norm_all_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, seg: Segments) -> torch.Tensor:
        """x: b n dim; context: b m context_dim; seg: which text keys each query may see (>= 1 per query)."""
        if self.all_heads:  # Wan2.1: RMSNorm over all heads' channels, then the head split
            k, v = self.kv(context).chunk(2, dim=-1)  # b m dim each
            q = rearrange(self.q_norm(self.q(x)), "b n (h d) -> b h n d", h=self.num_heads)
            k, v = (rearrange(y, "b m (h d) -> b h m d", h=self.num_heads) for y in (self.k_norm(k), v))
            out = attention(q, k, v, self.backend, seg)  # b h n d
            return self.proj(rearrange(out, "b h n d -> b n (h d)"))
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        out = attention(self.q_norm(q), self.k_norm(k), v, self.backend, seg)  # b h n d
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))
