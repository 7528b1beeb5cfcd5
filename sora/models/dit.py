"""Diffusion transformer over spacetime patches (DiT, Peebles & Xie 2023), conditioned on text.

Each block is adaLN-Zero-modulated attention and MLP, with 3D RoPE and QK-norm. Three settings of `DiTArgs`
(sora/models/dit_args.py) pick the variants the field compares:
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
The first two pick the block class (sora/models/blocks.py: BLOCKS); the modulation is adaLN's
(sora/models/modulation.py). The model maps (noisy latent, timestep, text) to a tensor of the latent's shape; what
that tensor means (velocity, clean latent, ...) is the objective's business, not the backbone's. `forward` runs a
batch of clips of one shape; `forward_packed` runs clips of different shapes as one packed sequence with
block-diagonal attention. Both embed the tokens, the text and the conditioning vectors, make one `BlockContext`,
and run the same trunk (blocks, final layer). Sequence parallelism is applied from outside
(sora/distributed/sequence.py: parallelize_sequence), through `sequence_split` and each self-attention's core.
"""

import contextlib
import math
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from sora.errors import SoraError
from sora.models.attention import AttentionBackend, CrossAttention, Segments, SelfAttention
from sora.models.blocks import BLOCKS, BlockContext, FinalLayer
from sora.models.conditioning import Conditioning
from sora.models.dit_args import AttentionLayout, DiTArgs, Modulation, TextConditioning
from sora.models.modulation import AdaLN, AdaLNConditioning
from sora.models.patchify import check_patchable, patchify, unpatchify
from sora.models.rope import rope_for_grid

__all__ = ["DiT", "DiTArgs", "TimestepEmbedder", "trim_text_padding"]

# ---------------------------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


class WholeSequence(nn.Module):
    """Every rank holds every token: the identity, where a parallel plan splits the sequence and gathers the output
    (parallelize_sequence in sora/distributed/sequence.py puts its split here). No weights."""

    def forward(self, tokens: torch.Tensor, ctx: BlockContext) -> tuple[torch.Tensor, BlockContext]:
        return tokens, ctx

    def gather(self, out: torch.Tensor) -> torch.Tensor:
        return out


class DiT(nn.Module):
    """The text-conditioned video DiT; `args` (a DiTArgs, checked when it was made) holds every setting."""

    def __init__(self, in_channels: int, text_dim: int, args: DiTArgs):
        super().__init__()
        d = args.hidden_size
        self.args, self.in_channels, self.patch_size = args, in_channels, tuple(args.patch_size)
        self.head_dim, self.rope_theta = d // args.num_heads, args.rope_theta
        # Activation checkpointing on the first share of blocks: recompute them in backward, keep only inputs.
        self.num_checkpointed = round(args.checkpoint_fraction * args.depth)
        patch_dim = in_channels * math.prod(self.patch_size)
        self.x_embed = nn.Linear(patch_dim, d)
        self.t_embed = TimestepEmbedder(d)
        self.text_embed = nn.Sequential(nn.Linear(text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.pool_embed = nn.Linear(d, d) if args.pooled_text else None
        block = BLOCKS[args.attention_layout, args.text_conditioning]
        self.blocks = nn.ModuleList([block(args) for _ in range(args.depth)])
        # adaLN-single: the map every block shares (each adds its own table to it)
        self.adaLN_single = AdaLN(d, block.n_mod) if args.modulation == Modulation.single else None
        self.final = FinalLayer(d, patch_dim, args.final_modulation, args.head_mlp_width)
        self.sequence_split = WholeSequence()
        self.initialize_weights()

    @property
    def layout(self) -> AttentionLayout:
        return self.args.attention_layout

    @property
    def text_conditioning(self) -> TextConditioning:
        return self.args.text_conditioning

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
        for m in self.modules():
            if isinstance(m, AdaLN):
                m.zero_()
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def set_attention_backend(self, backend: AttentionBackend | str) -> None:
        """Every attention layer's backend (`dit.attention_backend`); the weights do not depend on it."""
        self.args = replace(self.args, attention_backend=backend)  # checked: a SoraError names the choices
        for m in self.modules():
            if isinstance(m, (SelfAttention, CrossAttention)):
                m.backend = self.args.attention_backend

    # -- the forward passes ---------------------------------------------------------------------------------

    def _text(self, cond: Conditioning):
        """cond's text -> its tokens (b m hidden) and the pooled caption c adds (b hidden, or 0).

        With dit.text_len = L > 0 (Wan), the captions are zeroed past their length and padded to L tokens (b L
        hidden), every one of which the video attends to.
        """
        text, mask = cond.text, cond.text_mask
        if self.args.text_len:
            pad = self.args.text_len - text.shape[1]
            if pad < 0:
                raise SoraError(f"dit.text_len={self.args.text_len}: the text encoder gave {text.shape[1]} tokens a "
                                f"caption; set text.max_tokens <= {self.args.text_len}")
            text = F.pad(text * mask[..., None].to(text.dtype), (0, 0, 0, pad))  # b L text_dim
            mask = F.pad(mask, (0, pad))  # b L
        context = self.text_embed(text)  # b m hidden
        pooled = 0.0
        if self.pool_embed is not None:
            weights = mask.to(context.dtype)[..., None]  # b m 1
            pooled = self.pool_embed((context * weights).sum(1) / weights.sum(1).clamp(min=1))  # b hidden
        return context, pooled

    def _fp32(self):
        """dit.fp32_residual: what runs inside runs in fp32 whatever autocast says (Wan's time embedding)."""
        if self.args.fp32_residual:
            return torch.autocast(self.x_embed.weight.device.type, enabled=False)
        return contextlib.nullcontext()

    def _embed(self, patches: torch.Tensor) -> torch.Tensor:
        """b n patch_dim -> b n hidden; the residual stream in fp32 with dit.fp32_residual."""
        tokens = self.x_embed(patches)
        return tokens.float() if self.args.fp32_residual else tokens

    def _trunk(self, tokens: torch.Tensor, text: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """The blocks and the final layer: tokens b n hidden, text b m hidden -> b n patch_dim."""
        tokens, ctx = self.sequence_split(tokens, ctx)  # sequence parallelism: this rank's n/P tokens
        final = ctx.adaln
        if self.adaLN_single is not None:  # the shared map once a row of c, for every block
            with self._fp32():
                ctx = replace(ctx, adaln=ctx.adaln.map(self.adaLN_single))
        for i, block in enumerate(self.blocks):
            if i < self.num_checkpointed and torch.is_grad_enabled():
                tokens, text = checkpoint(block, tokens, text, ctx, use_reentrant=False)
            else:
                tokens, text = block(tokens, text, ctx)
        return self.sequence_split.gather(self.final(tokens, final))  # b n patch_dim

    def _check_frames(self, frame_mask: torch.Tensor, t: int) -> None:
        frames = frame_mask.shape[-1]
        assert frames == t * self.patch_size[0], f"a mask of {frames} frames for {t} token frames"

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """x: b c t h w; t: b in [0, 1], or b T (a timestep per latent frame, equal within a token frame: Diffusion
        Forcing); cond: b rows (text b m text_dim; frames given) -> b c t h w.

        Tokens of the frames `cond.frame_mask` gives are modulated by `cond.frame_t` instead of t: per-token
        timesteps. Writing the given frames into x is the objective's job.
        """
        assert x.shape[1] == self.in_channels, f"DiT built for {self.in_channels} channels, got {x.shape[1]}"
        grid = check_patchable(x.shape, self.patch_size)
        assert t.ndim == 1 or t.shape[1] == x.shape[2], (
            f"t of shape {tuple(t.shape)}: b, or b T for the {x.shape[2]} latent frames")
        tokens = self._embed(patchify(x, self.patch_size))  # b n hidden
        context, pooled = self._text(cond)
        if cond.has_frames:
            self._check_frames(cond.frame_mask, grid[0])
        with self._fp32():
            adaln = AdaLNConditioning.of_batch(self.t_embed, pooled, t, cond.frame_t, cond.frame_mask,
                                               self.patch_size[0])
        if self.args.text_len:  # Wan: every one of the text_len tokens is attended, padding included
            context_mask = None
        else:
            context, context_mask = trim_text_padding(context, cond.text_mask)  # b m' hidden; None: no padding
        rope = rope_for_grid(grid, self.head_dim, self.rope_theta, x.device)  # n head_dim/2
        out = self._trunk(tokens, context, BlockContext(rope, Segments(k_valid=context_mask), adaln, grid))
        return unpatchify(out, self.patch_size, grid)  # b c t h w

    def forward_packed(self, xs: list[torch.Tensor], t: torch.Tensor, cond: Conditioning) -> list[torch.Tensor]:
        """Clips of different shapes as one sequence: xs[i]: c t h w; t: k (or k tensors of T_i: a timestep per latent
        frame); cond: k rows -> [c t h w].

        Self-attention is block-diagonal over clips, each clip's tokens see only its own caption, RoPE
        positions restart at every clip, and each token is modulated by its own clip's timestep (NaViT-style), or
        its clip's frame_t for the frames it gives.
        """
        assert self.layout == AttentionLayout.full and self.text_conditioning == TextConditioning.cross, (
            "forward_packed supports attention_layout=full with text_conditioning=cross")
        assert len(xs) == len(t) == len(cond), f"{len(xs)} clips, {len(t)} timesteps, {len(cond)} conditioning rows"
        grids = [check_patchable((1, *x.shape), self.patch_size) for x in xs]
        lens = [math.prod(g) for g in grids]
        tokens = self._embed(torch.cat([patchify(x[None], self.patch_size) for x in xs], dim=1))  # 1 N hidden
        rope = torch.cat([rope_for_grid(g, self.head_dim, self.rope_theta, tokens.device) for g in grids])  # N hd/2
        clips = torch.arange(len(xs), device=tokens.device)  # k
        ids = torch.repeat_interleave(clips, torch.tensor(lens, device=tokens.device))  # N: each token's clip
        context, pooled = self._text(cond)  # k m hidden
        if cond.has_frames:
            for mask, g in zip(cond.frame_mask, grids):
                self._check_frames(mask, g[0])
        with self._fp32():
            adaln = AdaLNConditioning.of_pack(self.t_embed, pooled, t, ids, cond.frame_t, cond.frame_mask, grids,
                                              self.patch_size[0])
        text_mask = cond.text_mask
        if self.args.text_len:  # Wan: each clip attends to all text_len tokens of its caption
            text_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)  # k L
        text_lens = text_mask.sum(1)  # k
        text = context[text_mask][None]  # 1 M hidden: the attended text tokens of every clip, in order
        text_ids = torch.repeat_interleave(clips, text_lens)  # M
        self_seg = Segments(ids[None], ids[None], None, lens, lens)
        text_seg = Segments(ids[None], text_ids[None], None, lens, text_lens.tolist())
        out = self._trunk(tokens, text, BlockContext(rope, text_seg, adaln, None, self_seg))[0]  # N patch_dim
        return [unpatchify(o[None], self.patch_size, g)[0] for o, g in zip(out.split(lens), grids)]
