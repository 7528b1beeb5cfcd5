"""adaLN: how the conditioning vector (timestep + pooled caption) modulates the DiT's tokens.

Each block normalizes its tokens and shifts, scales and gates them by vectors mapped from the conditioning vector
c (adaLN-Zero, Peebles & Xie 2023). Three pieces:
  AdaLN               SiLU then one linear map: c -> n modulation vectors (a block's own map, the joint text
                      stream's, the final layer's, or adaLN-single's map shared by every block)
  AdaLNStep           one normalize-modulate-gate step's shift, scale and gate
  AdaLNConditioning   the conditioning vectors of a forward pass and which tokens take which: built once, read by
                      every block; what would change for per-frame timesteps (its docstring says how)
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

    A timestep per latent frame (Diffusion Forcing, Chen et al. 2024; Wan2.2-TI2V: t of shape b T) changes only
    what is made here (DiT.forward passes t through as it comes): `of_batch` embeds the b t token frames'
    timesteps (t[:, ::pt], given frames taking frame_t) as the one group of rows and sets `index` to arange(b t)
    viewed b t. The blocks and the final layer then modulate each token frame by its own timestep through the same
    b t s d view, with no per-token matmul and no b n d tensor. `per_clip` (the joint text stream's modulation)
    would need a clip-level vector (e.g. the mean of the clip's rows): DiT.forward takes b T timesteps with
    text_conditioning=cross only.
    """

    rows: tuple[torch.Tensor, ...]
    index: torch.Tensor  # b u

    @classmethod
    def of_batch(cls, t_embed: nn.Module, pooled: torch.Tensor | float, t: torch.Tensor,
                 frame_t: Optional[torch.Tensor] = None, frame_mask: Optional[torch.Tensor] = None,
                 pt: int = 1) -> "AdaLNConditioning":
        """b clips at timesteps t (b); with frames given (frame_mask: b T latent frames, frame_t: b), the token
        frames whose first latent frame is given take frame_t's vector. pooled: b d, or 0 (no pooled caption).

        t of shape b T (a timestep per latent frame, as Diffusion Forcing and Wan2.2-TI2V take): each token frame
        takes its first latent frame's timestep (or frame_t where that frame is given), one row per token frame."""
        if t.ndim == 2:
            per_frame = t[:, ::pt]  # b t: each token frame's timestep
            if frame_mask is not None:
                per_frame = torch.where(frame_mask[:, ::pt], frame_t[:, None].to(per_frame.dtype), per_frame)
            b, frames = per_frame.shape
            if isinstance(pooled, torch.Tensor):
                pooled = pooled.repeat_interleave(frames, 0)  # (b t) d
            c = t_embed(per_frame.flatten()) + pooled  # (b t) d
            return cls((c,), torch.arange(b * frames, device=c.device).view(b, frames))  # b t
        c = t_embed(t) + pooled  # b d
        clips = torch.arange(c.shape[0], device=c.device)[:, None]  # b 1
        if frame_mask is None:
            return cls((c,), clips)
        given = frame_mask[:, ::pt]  # b t: a token frame is given when its first latent frame is
        return cls((c, t_embed(frame_t) + pooled), clips + c.shape[0] * given.long())  # b t

    @classmethod
    def of_pack(cls, t_embed: nn.Module, pooled: torch.Tensor | float, t: torch.Tensor, clip: torch.Tensor,
                frame_t: Optional[torch.Tensor] = None, frame_masks: Optional[list[torch.Tensor]] = None,
                grids: Optional[list[tuple[int, int, int]]] = None, pt: int = 1) -> "AdaLNConditioning":
        """k clips packed into one sequence (b = 1; clip: N, each token's clip): each token its clip's row, or its
        clip's frame_t row for the token frames its frame mask (T latent frames) gives."""
        c = t_embed(t) + pooled  # k d
        if frame_masks is None:
            return cls((c,), clip[None])  # 1 N
        given = torch.cat([m[::pt].repeat_interleave(h * w) for m, (_, h, w) in zip(frame_masks, grids)])  # N
        return cls((c, t_embed(frame_t) + pooled), (clip + c.shape[0] * given.long())[None])  # 1 N

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "AdaLNConditioning":
        """The same tokens' rows through fn (adaLN-single's shared map, once a row for all blocks)."""
        return replace(self, rows=tuple(fn(r) for r in self.rows))

    def modulations(self, layer: Callable[[torch.Tensor], torch.Tensor], n: int) -> list[AdaLNStep]:
        """layer (rows r d -> r (n d)) on every row once, each unit its row's: n/3 steps (shift, scale, gate)."""
        table = torch.cat([layer(r) for r in self.rows])  # R (n d); each group mapped alone, as its own batch
        per_unit = table[self.index][:, :, None]  # b u 1 (n d)
        return _steps(per_unit.chunk(n, dim=-1))

    def per_clip(self, layer: Callable[[torch.Tensor], torch.Tensor], n: int) -> list[AdaLNStep]:
        """As `modulations`, every token of a clip taking the clip's c: for streams without frames (joint text)."""
        return _steps(layer(self.rows[0])[:, None, None].chunk(n, dim=-1))  # each b 1 1 d

    def split(self, take: Callable[[torch.Tensor, int], torch.Tensor], n: int) -> "AdaLNConditioning":
        """This rank's share when the n tokens of each clip are split by `take(x, dim)` (sequence parallelism)."""
        u = self.index.shape[1]
        if u == 1:  # a clip's tokens all take its row, whichever tokens this rank holds
            return self
        return replace(self, index=take(self.index.repeat_interleave(n // u, dim=1), 1))  # b n/P: a unit a token


def _steps(chunks) -> list[AdaLNStep]:
    """n modulation chunks -> steps of (shift, scale, gate); a last pair has no gate."""
    return [AdaLNStep(*chunks[i : i + 3]) for i in range(0, len(chunks), 3)]
