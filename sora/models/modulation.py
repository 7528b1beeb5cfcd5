"""adaLN: how the conditioning vector (timestep + pooled caption) modulates the DiT's tokens.

Each block normalizes its tokens and shifts, scales and gates them by vectors mapped from the conditioning vector
c (adaLN-Zero, Peebles & Xie 2023). Three pieces:
  AdaLN               SiLU then one linear map: c -> n modulation vectors (a block's own map, the joint text
                      stream's, the final layer's, or adaLN-single's map shared by every block)
  AdaLNStep           one normalize-modulate-gate step's shift, scale and gate
  AdaLNConditioning   the conditioning vectors of a forward pass and which tokens take which: built once, read by
                      every block: a row per clip, per given token frame, per token frame (a timestep
                      per frame: Diffusion Forcing) or per token
"""

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
import torch.nn as nn
from einops import rearrange

from sora.models.block_ops import gated_residual, norm_modulate


class AdaLN(nn.Sequential):
    """c: r d -> r (n d): n modulation vectors of each row of conditioning vectors (DiT's adaLN).

    Zeroed at init (`zero_`): every gate starts at 0, so every block starts as the identity (adaLN-Zero).
    """

    def __init__(self, dim: int, n: int):
        super().__init__(nn.SiLU(), nn.Linear(dim, n * dim))

    def zero_(self) -> None:
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


def _units(x: torch.Tensor, u: int) -> torch.Tensor:
    return rearrange(x, "b (u s) d -> b u s d", u=u)  # a view: u units of s tokens


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b u s d -> b (u s) d")


@dataclass
class AdaLNStep:
    """One adaLN step's shift, scale and gate (the final layer has no gate), each b u 1 d: one row per unit of
    tokens; a clip's n tokens are u units of n/u consecutive tokens, viewed as b u s d (no b n d copy is made)."""

    shift: torch.Tensor
    scale: torch.Tensor
    gate: Optional[torch.Tensor] = None

    def modulate(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """norm(x) (1 + scale) + shift; x: b n d -> b n d."""
        return _tokens(norm_modulate(norm, _units(x, self.shift.shape[1]), self.shift, self.scale))

    def residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x + gate * y (adaLN-Zero's gated residual); x, y: b n d -> b n d."""
        u = self.gate.shape[1]
        return _tokens(gated_residual(_units(x, u), self.gate, _units(y, u)))


# ---------------------------------------------------------------------------------------------------------------
# The conditioning vectors of a forward pass
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class AdaLNConditioning:
    """The conditioning vectors adaLN reads in one forward pass, and which tokens take which.

    `rows` are groups of conditioning vectors, each r d: (c,) with c one vector per clip (its timestep's embedding
    plus the pooled caption), or (c, c_given) when frames are given (c_given: the same with the given frames'
    timestep `frame_t`). `index` (b u, long) names, for each of u units of a clip's tokens, its row among the groups
    stacked: u = 1 when every token of a clip takes its clip's c, u = t (a unit per token frame, s = h w tokens) in a
    batch with given frames, u = n (a unit per token) in a pack or in a rank's slice of the tokens. A modulation is
    mapped from each row once (never per token) and each unit takes its row's: no b n d modulation tensor is made
    for a batch.

    A timestep per token frame (Diffusion Forcing, Chen et al. 2024; History-Guided Video Diffusion, Song et al. 2025)
    is t given as b T (one per latent frame, equal within a token frame): `of_batch` embeds the b t token frames'
    timesteps (t[:, ::pt]) as one group of rows and sets `index` to arange(b t) viewed b t. The blocks and the final
    layer modulate each token frame by its own timestep through the same b t s d view, with no per-token matmul and
    no b n d tensor. Given frames are then frames whose timestep is frame_t (their rows take it), the special case
    they are. `per_clip` (the joint text stream's modulation, which has no frames) takes a clip-level vector kept
    in `clip_rows`: the embedding of the clip's noisiest frame's timestep (the clip's t when all are equal).
    """

    rows: tuple[torch.Tensor, ...]
    index: torch.Tensor  # b u
    clip_rows: Optional[torch.Tensor] = None  # b d: a clip-level vector when rows are per frame (None: rows[0])

    @classmethod
    def of_batch(cls, t_embed: nn.Module, pooled: torch.Tensor | float, t: torch.Tensor,
                 frame_t: Optional[torch.Tensor] = None, frame_mask: Optional[torch.Tensor] = None,
                 pt: int = 1) -> "AdaLNConditioning":
        """b clips at timesteps t (b, or b T: one per latent frame); with frames given (frame_mask: b T latent frames,
        frame_t: b), the token frames whose first latent frame is given take frame_t's vector. pooled: b d, or 0 (no
        pooled caption)."""
        if t.ndim == 2:  # a timestep per token frame: a row each
            return cls._per_frame(t_embed, pooled, t[:, ::pt], frame_t, frame_mask, pt)  # t: b t
        c = t_embed(t) + pooled  # b d
        clips = torch.arange(c.shape[0], device=c.device)[:, None]  # b 1
        if frame_mask is None:
            return cls((c,), clips)
        given = frame_mask[:, ::pt]  # b t: a token frame is given when its first latent frame is
        return cls((c, t_embed(frame_t) + pooled), clips + c.shape[0] * given.long())  # b t

    @classmethod
    def _per_frame(cls, t_embed: nn.Module, pooled: torch.Tensor | float, t: torch.Tensor,
                  frame_t: Optional[torch.Tensor] = None, frame_mask: Optional[torch.Tensor] = None,
                  pt: int = 1) -> "AdaLNConditioning":
        """b clips of t token frames, each at its own timestep (t: b t): b t rows, the given frames' at frame_t."""
        b, u = t.shape
        clip = t_embed(t.amax(1)) + pooled  # b d: the clip's noisiest frame, as the clip-level vector
        if frame_mask is not None:
            t = torch.where(frame_mask[:, ::pt], frame_t[:, None].to(t.dtype), t)  # b t
        pooled = pooled if not torch.is_tensor(pooled) else pooled.repeat_interleave(u, dim=0)  # (b t) d
        c = t_embed(t.reshape(b * u)) + pooled  # (b t) d
        return cls((c,), torch.arange(b * u, device=c.device).view(b, u), clip)  # index b t

    @classmethod
    def of_pack(cls, t_embed: nn.Module, pooled: torch.Tensor | float, t, clip: torch.Tensor,
                frame_t: Optional[torch.Tensor] = None, frame_masks: Optional[list[torch.Tensor]] = None,
                grids: Optional[list[tuple[int, int, int]]] = None, pt: int = 1) -> "AdaLNConditioning":
        """k clips packed into one sequence (b = 1; clip: N, each token's clip): each token its clip's row, or its
        clip's frame_t row for the token frames its frame mask (T latent frames) gives. t: k, or a list of k
        tensors of T_i timesteps (one per latent frame: each token frame its own row; grids needed)."""
        if isinstance(t, (list, tuple)):
            return cls._pack_per_frame(t_embed, pooled, t, frame_t, frame_masks, grids, pt)
        c = t_embed(t) + pooled  # k d
        if frame_masks is None:
            return cls((c,), clip[None])  # 1 N
        given = torch.cat([m[::pt].repeat_interleave(h * w) for m, (_, h, w) in zip(frame_masks, grids)])  # N
        return cls((c, t_embed(frame_t) + pooled), (clip + c.shape[0] * given.long())[None])  # 1 N

    @classmethod
    def _pack_per_frame(cls, t_embed, pooled, ts, frame_t, frame_masks, grids, pt) -> "AdaLNConditioning":
        """A pack whose clips each have a timestep per latent frame: a row per token frame of every clip."""
        rows, index, clip_rows, start = [], [], [], 0
        for i, (ti, (u, h, w)) in enumerate(zip(ts, grids)):
            tu = ti[::pt]  # u: the clip's token frames
            pi = pooled[i] if torch.is_tensor(pooled) else pooled
            clip_rows.append(t_embed(ti.amax()[None])[0] + pi)  # d: the clip's noisiest frame
            if frame_masks is not None:
                tu = torch.where(frame_masks[i][::pt], frame_t[i].to(tu.dtype), tu)
            ci = t_embed(tu) + pi  # u d
            rows.append(ci)
            index.append((start + torch.arange(u, device=ci.device)).repeat_interleave(h * w))  # u h w tokens
            start += u
        return cls((torch.cat(rows),), torch.cat(index)[None], torch.stack(clip_rows))  # rows R d, index 1 N

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "AdaLNConditioning":
        """The same tokens' rows through fn (adaLN-single's shared map, once a row for all blocks)."""
        return replace(self, rows=tuple(fn(r) for r in self.rows))

    def modulations(self, layer: Callable[[torch.Tensor], torch.Tensor], n: int) -> list[AdaLNStep]:
        """layer (rows r d -> r (n d)) on every row once, each unit its row's: n/3 steps (shift, scale, gate)."""
        table = torch.cat([layer(r) for r in self.rows])  # R (n d); each group mapped alone, as its own batch
        per_unit = table[self.index][:, :, None]  # b u 1 (n d)
        return _steps(per_unit.chunk(n, dim=-1))

    def per_clip(self, layer: Callable[[torch.Tensor], torch.Tensor], n: int) -> list[AdaLNStep]:
        """As `modulations`, every token of a clip taking the clip's c (`clip_rows` with a row per token frame): for
        streams without frames (joint text)."""
        clip = self.rows[0] if self.clip_rows is None else self.clip_rows  # b d
        return _steps(layer(clip)[:, None, None].chunk(n, dim=-1))  # each b 1 1 d

    def split(self, take: Callable[[torch.Tensor, int], torch.Tensor], n: int) -> "AdaLNConditioning":
        """This rank's share when the n tokens of each clip are split by `take(x, dim)` (sequence parallelism)."""
        u = self.index.shape[1]
        if u == 1:  # a clip's tokens all take its row, whichever tokens this rank holds
            return self
        return replace(self, index=take(self.index.repeat_interleave(n // u, dim=1), 1))  # b n/P: a unit a token


def _steps(chunks) -> list[AdaLNStep]:
    """n modulation chunks -> steps of (shift, scale, gate); a last pair has no gate."""
    return [AdaLNStep(*chunks[i : i + 3]) for i in range(0, len(chunks), 3)]
