"""What the DiT is conditioned on, besides the noisy latent and its timestep: one object, from the training step or
the prompt to the model's embedding.

The same `Conditioning` goes through `DiT.forward` / `forward_packed`, the objective, classifier-free guidance,
the sampling pipeline and the training step, so a new kind of condition is a new field here and a new use of it
in the DiT's embedding, not a new argument in every signature. Rows are clips: a batch of b clips, or the k
clips of a pack (whose per-clip fields are then lists, one entry a clip, since clips differ in shape).

Two kinds of condition:
- text: the text encoder's tokens and which of them are real;
- frames (optional): clean latent frames given as a condition (an image to animate, the clip to extend, the
  two ends to connect, keyframes). `frame_mask` marks which latent frames of the clip are given; those tokens
  carry their own timestep `frame_t` (0, or the small noise level they were trained with, as CogVideoX and
  LTX-Video add), the others the sampler's t: per-token timesteps (Open-Sora 1.2's frame masks). The objective
  writes `frames` into the noisy latent at the given frames and leaves them out of the loss; the sampler keeps
  them fixed. With a timestep per frame (t given to the DiT as b T: Diffusion Forcing) they are the special case
  of a per-frame t that is `frame_t` on the given frames (sora/models/modulation.py).
"""

from dataclasses import dataclass, fields, replace

import torch

Frames = torch.Tensor | list[torch.Tensor]  # b c t h w (or a pack's [c t h w])
FrameMask = torch.Tensor | list[torch.Tensor]  # b t bool (or a pack's [t])


@dataclass
class Conditioning:
    """What the DiT is conditioned on, one row per clip: text, and optionally frames given as a condition."""

    text: torch.Tensor  # b m d: the text encoder's tokens
    text_mask: torch.Tensor  # b m bool: True for real tokens
    frames: Frames | None = None  # clean latent frames (only the ones frame_mask marks are read)
    frame_mask: FrameMask | None = None  # which latent frames are given as a condition
    frame_t: torch.Tensor | None = None  # b: the timestep of the given frames' tokens

    def __post_init__(self):
        assert self.text.ndim == 3 and self.text_mask.shape == self.text.shape[:2], (
            f"text b m d with a b m mask, got {tuple(self.text.shape)} and {tuple(self.text_mask.shape)}")
        assert (self.frames is None) == (self.frame_mask is None) == (self.frame_t is None), (
            "frames, frame_mask and frame_t come together")

    def __len__(self) -> int:
        return self.text.shape[0]

    @property
    def has_frames(self) -> bool:
        return self.frame_mask is not None

    def _map(self, fn) -> "Conditioning":
        """Apply fn to every tensor (each clip's, for a pack); fields that are None stay None."""
        def apply(x):
            return None if x is None else [fn(v) for v in x] if isinstance(x, list) else fn(x)

        return replace(self, **{f.name: apply(getattr(self, f.name)) for f in fields(self)})

    def to(self, device=None, dtype=None) -> "Conditioning":
        """Move every tensor; `dtype` casts the floating ones (masks stay bool)."""
        return self._map(lambda x: x.to(device=device, dtype=dtype if x.is_floating_point() else None))

    def rows(self, index) -> "Conditioning":
        """The rows (clips) of a batch conditioning selected by an index, slice or bool mask."""
        return self._map(lambda x: x[index])

    def with_text(self, rows: torch.Tensor, other: "Conditioning") -> "Conditioning":
        """Row i's text from `other` where rows[i], else its own (caption dropout); `other` has 1 row or len(self)."""
        r = rows.to(self.text.device)
        text = torch.where(r[:, None, None], other.text.to(self.text.device, self.text.dtype), self.text)  # b m d
        mask = torch.where(r[:, None], other.text_mask.to(self.text.device), self.text_mask)  # b m
        return replace(self, text=text, text_mask=mask)

    def with_frames(self, frames: Frames, frame_mask: FrameMask, frame_t: torch.Tensor) -> "Conditioning":
        return replace(self, frames=frames, frame_mask=frame_mask, frame_t=frame_t)

    def without_frames(self) -> "Conditioning":
        """The same text with no frame given: every frame's mask False (kept as tensors, so batches still stack)."""
        if not self.has_frames:
            return self
        none = [torch.zeros_like(m) for m in self.frame_mask] if isinstance(self.frame_mask, list) else \
            torch.zeros_like(self.frame_mask)
        return replace(self, frame_mask=none)

    @staticmethod
    def cat(conds: list["Conditioning"]) -> "Conditioning":
        """Stack the rows of several batch conditionings (as classifier-free guidance runs them in one batch)."""
        first = conds[0]
        return replace(first, **{f.name: torch.cat([getattr(c, f.name) for c in conds])
                                 for f in fields(first) if getattr(first, f.name) is not None})
