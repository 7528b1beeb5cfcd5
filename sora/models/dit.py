"""Diffusion transformer over spacetime patches (DiT, Peebles & Xie 2023), conditioned on text.

Each block is adaLN-Zero-modulated attention and MLP, with 3D RoPE and QK-norm. Three switches pick the variants
the field compares:
  attention_layout   full: self-attention over all spacetime tokens (Sora, Movie Gen);
                     factorized: spatial attention within each frame, then temporal attention at each
                     position (Latte, Ma et al. 2024; STDiT in Open-Sora)
  text_conditioning  cross: cross-attention to the text tokens after self-attention (PixArt-alpha);
                     joint: text tokens join the self-attention with their own weights (MM-DiT, SD3, Esser et al.
                     2024)
  modulation         per_block: each block maps the conditioning vector to its modulation (DiT's adaLN-Zero);
                     single: one map shared by all blocks, plus a learned table per block (adaLN-single,
                     PixArt-alpha, Chen et al. 2023, sec. 2.3; Wan does the same). It saves depth x 6 d^2 parameters:
                     27% of XL's, which is most of the gap in parameters and peak memory to Wan at equal width
The model maps (noisy latent, timestep, text) to a tensor of the latent's shape; what that tensor means
(velocity, clean latent, ...) is the objective's business, not the backbone's. `forward_packed` runs clips of
different shapes as one packed sequence with block-diagonal attention.
"""

import math

import torch
import torch.nn as nn
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from sora.distributed.sequence import gather_tokens, shard_tokens
from sora.models.attention import BACKENDS, CrossAttention, Segments, SelfAttention, attention
from sora.models.block_ops import gated_residual, norm_modulate, qk_norm_rope
from sora.models.conditioning import Conditioning
from sora.models.norms import LayerNorm
from sora.models.patchify import check_patchable, patchify, unpatchify
from sora.models.rope import rope_for_grid

LAYOUTS = ("full", "factorized")
TEXT_MODES = ("cross", "joint")
MODULATIONS = ("per_block", "single")

# ---------------------------------------------------------------------------------------------------------------
# Conditioning
# ---------------------------------------------------------------------------------------------------------------


def modulations(layer: nn.Module, c: torch.Tensor, n: int, alt=None) -> tuple[torch.Tensor, ...]:
    """c: b d (per clip) or b n d (per token) -> n tensors of b 1 d or b n d.

    alt = (c_alt: b d, tokens: b n bool): per-token timesteps with two values a clip (the given frames' and the
    rest's). Both modulations are computed per clip and the marked tokens take c_alt's, so a per-token timestep
    costs no per-token matmul.
    """
    out = layer(c)
    out = out[:, None] if out.ndim == 2 else out  # b 1 (n d) or b N (n d)
    if alt is not None:
        c_alt, tokens = alt
        out = torch.where(tokens[..., None], layer(c_alt)[:, None], out)  # b N (n d)
    return out.chunk(n, dim=-1)


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


def trim_text_padding(context: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Drop text positions that are padding in every caption; no mask at all when every key left is real.

    SDPA's fastest kernels (flash, cuDNN) take no mask: with one, a joint text-video attention at 16k tokens
    falls back to the memory-efficient kernel, 4x slower on an H100 (bench/attention.py).
    """
    if mask.device.type == "meta":  # shapes only (the preset tests): nothing to look at
        return context, mask
    keep = mask.any(0)  # m
    if not bool(keep.all()):
        context, mask = context[:, keep], mask[:, keep]  # b m' d, b m'
    return context, (None if bool(mask.all()) else mask)


def mlp(dim: int, ratio: float) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


# ---------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qk_norm: bool, layout: str = "full",
                 text_conditioning: str = "cross", backend: str = "sdpa", rope_theta: float = 10000.0,
                 modulation: str = "per_block"):
        super().__init__()
        self.layout, self.text_conditioning, self.backend = layout, text_conditioning, backend
        self.rope_theta = rope_theta
        self.norm1 = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qk_norm, backend)
        n_mod = 6
        if layout == "factorized":
            self.norm_t = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.attn_t = SelfAttention(dim, num_heads, qk_norm, backend)
            n_mod += 3
        if text_conditioning == "cross":
            self.norm_cross = LayerNorm(dim, eps=1e-6)
            self.cross = CrossAttention(dim, dim, num_heads, qk_norm, backend)
        else:  # joint: the text stream's own weights (MM-DiT)
            self.text_norm1 = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.text_attn = SelfAttention(dim, num_heads, qk_norm, backend)  # its qkv, norms and proj
            self.text_norm2 = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.text_mlp = mlp(dim, mlp_ratio)
            self.text_adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.norm2 = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = mlp(dim, mlp_ratio)
        self.n_mod = n_mod
        if modulation == "per_block":
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, n_mod * dim))
        else:  # single: the DiT's shared map gives c as n_mod * dim values; this block adds its own table
            self.modulation_table = nn.Parameter(torch.zeros(n_mod * dim))

    def _modulate(self, c):
        """per_block: c (the conditioning vector) -> this block's modulation; single: c is already the shared one."""
        if hasattr(self, "adaLN_modulation"):
            return self.adaLN_modulation(c)
        return c + self.modulation_table

    def forward(self, x, c, rope, context, self_seg, cross_seg, grid, alt=None):
        """x: b n d video tokens; c: b d or b n d (modulation=single: b (n_mod d) or b n (n_mod d)); context: b m d
        text tokens; grid: (t, h, w) of x; alt: per-token timesteps (see `modulations`)."""
        mods = modulations(self._modulate, c, self.n_mod, alt)
        shift_sa, scale_sa, gate_sa, shift_mlp, scale_mlp, gate_mlp = mods[:6]
        h = norm_modulate(self.norm1, x, shift_sa, scale_sa)
        if self.text_conditioning == "joint":
            attn_x, context = self._joint(h, c, rope, context, cross_seg)
            x = gated_residual(x, gate_sa, attn_x)
        elif self.layout == "factorized":
            x = gated_residual(x, gate_sa, self._spatial(h, grid))
        else:
            x = gated_residual(x, gate_sa, self.attn(h, rope, self_seg))
        if self.layout == "factorized":
            shift_t, scale_t, gate_t = mods[6:]
            x = gated_residual(x, gate_t, self._temporal(norm_modulate(self.norm_t, x, shift_t, scale_t), grid))
        if self.text_conditioning == "cross":
            x = x + self.cross(self.norm_cross(x), context, cross_seg)
        return gated_residual(x, gate_mlp, self.mlp(norm_modulate(self.norm2, x, shift_mlp, scale_mlp))), context

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

    def _joint(self, h, c, rope, context, text_seg):
        """Video and text tokens in one attention, each with its own projections; RoPE on video tokens only."""
        a, ta = self.attn, self.text_attn
        t_shift, t_scale, t_gate, t_shift_mlp, t_scale_mlp, t_gate_mlp = modulations(self.text_adaLN_modulation, c, 6)
        y = norm_modulate(self.text_norm1, context, t_shift, t_scale)  # b m d
        q, k, v = rearrange(a.qkv(h), "b n (three h d) -> three b h n d", three=3, h=a.num_heads)
        q, k = qk_norm_rope(q, a.q_norm, rope), qk_norm_rope(k, a.k_norm, rope)
        tq, tk, tv = rearrange(ta.qkv(y), "b m (three h d) -> three b h m d", three=3, h=ta.num_heads)
        tq, tk = ta.q_norm(tq), ta.k_norm(tk)
        n, seg = q.shape[2], Segments()
        if text_seg.k_valid is not None:  # padded captions: mask their padding keys, never the video keys
            seg.k_valid = torch.cat([torch.ones(q.shape[0], n, dtype=torch.bool, device=q.device), text_seg.k_valid], 1)
        out = attention(torch.cat([q, tq], 2), torch.cat([k, tk], 2), torch.cat([v, tv], 2), self.backend,
                        seg)  # b h (n+m) d
        out = rearrange(out, "b h l d -> b l (h d)")
        x_out, y_out = a.proj(out[:, :n]), ta.proj(out[:, n:])
        context = gated_residual(context, t_gate, y_out)
        y = self.text_mlp(norm_modulate(self.text_norm2, context, t_shift_mlp, t_scale_mlp))  # b m d
        context = gated_residual(context, t_gate_mlp, y)
        return x_out, context


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c, alt=None):
        shift, scale = modulations(self.adaLN_modulation, c, 2, alt)
        return self.linear(norm_modulate(self.norm, x, shift, scale))  # b n out_dim


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


class DiT(nn.Module):
    def __init__(self, in_channels: int, text_dim: int, hidden_size: int = 384, depth: int = 12, num_heads: int = 6,
                 mlp_ratio: float = 4.0, patch_size=(1, 2, 2), qk_norm: bool = True, rope_theta: float = 10000.0,
                 pooled_text: bool = True, attention_layout: str = "full", text_conditioning: str = "cross",
                 attention_backend: str = "sdpa", checkpoint_fraction: float = 0.0, modulation: str = "per_block"):
        super().__init__()
        assert len(patch_size) == 3 and all(p >= 1 for p in patch_size), f"patch_size must be (pt, ph, pw) >= 1, got {patch_size}"
        assert hidden_size % num_heads == 0, f"hidden_size {hidden_size} does not divide by num_heads {num_heads}"
        assert attention_layout in LAYOUTS, f"dit.attention_layout must be one of {LAYOUTS}, got {attention_layout!r}"
        assert text_conditioning in TEXT_MODES, f"dit.text_conditioning must be one of {TEXT_MODES}, got {text_conditioning!r}"
        assert not (attention_layout == "factorized" and text_conditioning == "joint"), (
            "text_conditioning=joint attends over all spacetime tokens: use it with attention_layout=full")
        assert attention_backend in BACKENDS, f"dit.attention_backend must be one of {BACKENDS}, got {attention_backend!r}"
        assert 0.0 <= checkpoint_fraction <= 1.0, f"dit.checkpoint_fraction must be in [0, 1], got {checkpoint_fraction}"
        assert modulation in MODULATIONS, f"dit.modulation must be one of {MODULATIONS}, got {modulation!r}"
        assert not (modulation == "single" and text_conditioning == "joint"), (
            "dit.modulation=single shares the video stream's modulation; use it with text_conditioning=cross")
        self.in_channels, self.patch_size = in_channels, tuple(patch_size)
        self.head_dim, self.rope_theta, self.pooled_text = hidden_size // num_heads, rope_theta, pooled_text
        self.layout, self.text_conditioning = attention_layout, text_conditioning
        self.sp_group = None  # see enable_sequence_parallel
        # Activation checkpointing on the first share of blocks: recompute them in backward, keep only inputs.
        self.num_checkpointed = round(checkpoint_fraction * depth)
        patch_dim = in_channels * math.prod(patch_size)
        self.x_embed = nn.Linear(patch_dim, hidden_size)
        self.t_embed = TimestepEmbedder(hidden_size)
        self.text_embed = nn.Sequential(nn.Linear(text_dim, hidden_size), nn.GELU(approximate="tanh"),
                                        nn.Linear(hidden_size, hidden_size))
        self.pool_embed = nn.Linear(hidden_size, hidden_size) if pooled_text else None
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, qk_norm, attention_layout,
                                              text_conditioning, attention_backend, rope_theta, modulation)
                                     for _ in range(depth)])
        n_mod = self.blocks[0].n_mod
        # adaLN-single: the map every block shares (each adds its own table to it)
        self.adaLN_single = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, n_mod * hidden_size)) if modulation == "single" else None
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
        # Zeroed modulation makes every block the identity at init, and the zeroed output predicts 0. (adaLN-single's
        # tables start at zero where they are made, so its zeroed shared map gives every block zero gates too.)
        for owner in [*self.blocks, self]:
            for name in ("adaLN_modulation", "text_adaLN_modulation", "adaLN_single"):
                if getattr(owner, name, None) is not None:
                    nn.init.zeros_(getattr(owner, name)[-1].weight)
                    nn.init.zeros_(getattr(owner, name)[-1].bias)
        for layer in self.final.adaLN_modulation[-1], self.final.linear:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _condition(self, t, cond: Conditioning):
        """(t: b, cond of b rows) -> c: b hidden, context: b m hidden, and the given frames' c_alt: b hidden."""
        context = self.text_embed(cond.text)  # b m hidden
        pooled = 0.0
        if self.pool_embed is not None:
            weights = cond.text_mask.to(context.dtype)[..., None]  # b m 1
            pooled = self.pool_embed((context * weights).sum(1) / weights.sum(1).clamp(min=1))  # b hidden
        c = self.t_embed(t) + pooled  # b hidden
        c_alt = self.t_embed(cond.frame_t) + pooled if cond.has_frames else None  # b hidden
        return c, context, c_alt

    def given_tokens(self, frame_mask: torch.Tensor, grid) -> torch.Tensor:
        """b T latent-frame mask -> b n token mask (a token is given when its temporal patch's first frame is)."""
        t, h, w = grid
        assert frame_mask.shape[-1] == t * self.patch_size[0], f"a mask of {frame_mask.shape[-1]} frames for {t} token frames"
        per_time = frame_mask[..., :: self.patch_size[0]]  # b t
        return per_time[..., None].expand(*per_time.shape, h * w).flatten(-2)  # b (t h w)

    def _shared_modulation(self, c, alt):
        """What the blocks take as c (and alt): c itself, or with modulation=single the shared map of it, per clip."""
        if self.adaLN_single is None:
            return c, alt
        return self.adaLN_single(c), None if alt is None else (self.adaLN_single(alt[0]), alt[1])

    def _blocks(self, tokens, c, rope, context, self_seg, cross_seg, grid, alt=None):
        for i, block in enumerate(self.blocks):
            if i < self.num_checkpointed and torch.is_grad_enabled():
                tokens, context = checkpoint(block, tokens, c, rope, context, self_seg, cross_seg, grid, alt,
                                             use_reentrant=False)
            else:
                tokens, context = block(tokens, c, rope, context, self_seg, cross_seg, grid, alt)
        return tokens

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """x: b c t h w; t: b in [0, 1]; cond: b rows (text b m text_dim; frames given) -> b c t h w.

        Tokens of the frames `cond.frame_mask` gives are modulated by `cond.frame_t` instead of t: per-token
        timesteps. Writing the given frames into x is the objective's job.
        """
        assert x.shape[1] == self.in_channels, f"DiT built for {self.in_channels} channels, got {x.shape[1]}"
        grid = check_patchable(x.shape, self.patch_size)
        rope = rope_for_grid(grid, self.head_dim, self.rope_theta, x.device)
        tokens = self.x_embed(patchify(x, self.patch_size))  # b n hidden
        c, context, c_alt = self._condition(t, cond)
        given = self.given_tokens(cond.frame_mask, grid) if cond.has_frames else None  # b n
        context, context_mask = trim_text_padding(context, cond.text_mask)  # b m' hidden; None: no padding left
        if self.sp_group is not None:  # this rank keeps n/P tokens (and their RoPE rotations) until the end
            tokens, rope = shard_tokens(tokens, self.sp_group), shard_tokens(rope, self.sp_group, dim=0)  # b n/P hidden
            given = None if given is None else shard_tokens(given, self.sp_group)  # b n/P
        alt = None if given is None else (c_alt, given)
        c_blocks, alt_blocks = self._shared_modulation(c, alt)  # modulation=single: b (n_mod hidden), once for all blocks
        tokens = self._blocks(tokens, c_blocks, rope, context, None, Segments(k_valid=context_mask), grid, alt_blocks)
        out = self.final(tokens, c, alt)  # b n(/P) patch_dim
        if self.sp_group is not None:
            out = gather_tokens(out, self.sp_group)  # b n patch_dim
        return unpatchify(out, self.patch_size, grid)  # b c t h w

    def set_attention_backend(self, backend: str) -> None:
        """Every attention layer's backend (`dit.attention_backend`); the weights do not depend on it."""
        assert backend in BACKENDS, f"dit.attention_backend must be one of {BACKENDS}, got {backend!r}"
        for m in self.modules():
            if isinstance(m, (DiTBlock, SelfAttention, CrossAttention)):
                m.backend = backend

    def enable_sequence_parallel(self, group) -> None:
        """Split every clip's tokens over the ranks of `group` (Ulysses); outputs are whole on every rank."""
        assert self.layout == "full" and self.text_conditioning == "cross", (
            "sequence parallelism supports attention_layout=full with text_conditioning=cross")
        self.sp_group = group
        for block in self.blocks:
            block.attn.sp_group = group

    def forward_packed(self, xs: list[torch.Tensor], t: torch.Tensor, cond: Conditioning) -> list[torch.Tensor]:
        """Clips of different shapes as one sequence: xs[i]: c t h w; t: k; cond: k rows -> [c t h w].

        Self-attention is block-diagonal over clips, each clip's tokens see only its own caption, RoPE
        positions restart at every clip, and each token is modulated by its own clip's timestep (NaViT-style), or
        its clip's frame_t for the frames it gives.
        """
        assert self.layout == "full" and self.text_conditioning == "cross", (
            "forward_packed supports attention_layout=full with text_conditioning=cross")
        assert len(xs) == len(t) == len(cond), f"{len(xs)} clips, {len(t)} timesteps, {len(cond)} conditioning rows"
        grids = [check_patchable((1, *x.shape), self.patch_size) for x in xs]
        lens = [math.prod(g) for g in grids]
        tokens = self.x_embed(torch.cat([patchify(x[None], self.patch_size) for x in xs], dim=1))  # 1 N hidden
        rope = torch.cat([rope_for_grid(g, self.head_dim, self.rope_theta, tokens.device) for g in grids])  # N head_dim/2
        ids = torch.repeat_interleave(torch.arange(len(xs), device=tokens.device), torch.tensor(lens, device=tokens.device))
        c, context, c_alt = self._condition(t, cond)  # k hidden, k m hidden, k hidden
        given = None
        if cond.has_frames:  # tokens of given frames take their clip's frame_t
            given = torch.cat([self.given_tokens(m[None], g)[0] for m, g in zip(cond.frame_mask, grids)])  # N

        def per_token(per_clip, per_clip_alt):  # k e -> 1 N e: each token its clip's row (its frame_t's if given)
            rows = per_clip[ids][None]  # 1 N e
            return rows if given is None else torch.where(given[None, :, None], per_clip_alt[ids][None], rows)

        c_tok = per_token(c, c_alt)  # 1 N hidden
        c_blocks = c_tok  # modulation=single: the shared map per clip, then per token (no per-token matmul)
        if self.adaLN_single is not None:
            c_blocks = per_token(self.adaLN_single(c), None if c_alt is None else self.adaLN_single(c_alt))
        text_lens = cond.text_mask.sum(1)  # k
        text = context[cond.text_mask][None]  # 1 M hidden: the real text tokens of every clip, in order
        text_ids = torch.repeat_interleave(torch.arange(len(xs), device=tokens.device), text_lens)
        self_seg = Segments(ids[None], ids[None], None, lens, lens)
        cross_seg = Segments(ids[None], text_ids[None], None, lens, text_lens.tolist())
        tokens = self._blocks(tokens, c_blocks, rope, text, self_seg, cross_seg, None)
        out = self.final(tokens, c_tok)[0]  # N patch_dim
        return [unpatchify(o[None], self.patch_size, g)[0] for o, g in zip(out.split(lens), grids)]
