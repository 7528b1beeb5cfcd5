"""What the DiT is conditioned on, besides the noisy latent and its timestep: one object, from the training step or
the prompt to the model's embedding.

The same `Conditioning` goes through `DiT.forward` / `forward_packed`, the objective, classifier-free guidance,
the sampling pipeline and the training step, so a new kind of condition is a new field here and a new use of it
in the DiT's embedding, not a new argument in every signature. Rows are clips: a batch of b clips, or the k
clips of a pack.
"""

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Conditioning:
    """Text tokens and which of them are real (padding is False), one row per clip."""

    text: torch.Tensor  # b m d: the text encoder's tokens
    text_mask: torch.Tensor  # b m bool: True for real tokens

    def __post_init__(self):
        assert self.text.ndim == 3 and self.text_mask.shape == self.text.shape[:2], (
            f"text b m d with a b m mask, got {tuple(self.text.shape)} and {tuple(self.text_mask.shape)}")

    def __len__(self) -> int:
        return self.text.shape[0]

    def _map(self, fn) -> "Conditioning":
        """Apply fn to every tensor field (fields that are None stay None)."""
        return replace(self, **{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                                for f in fields(self)})

    def to(self, device=None, dtype=None) -> "Conditioning":
        """Move every tensor; `dtype` casts the floating ones (masks stay bool)."""
        return self._map(lambda x: x.to(device=device, dtype=dtype if x.is_floating_point() else None))

    def rows(self, index) -> "Conditioning":
        """The rows (clips) selected by an index, slice or bool mask."""
        return self._map(lambda x: x[index])

    def where(self, rows: torch.Tensor, other: "Conditioning") -> "Conditioning":
        """Row i from `other` where rows[i], else from self; `other` has one row (broadcast) or as many as self."""
        def pick(name):
            mine, theirs = getattr(self, name), getattr(other, name)
            r = rows.to(mine.device).view(-1, *([1] * (mine.ndim - 1)))  # b 1 ...
            return torch.where(r, theirs.to(mine.device, mine.dtype), mine)

        return replace(self, **{f.name: pick(f.name) for f in fields(self)})

    @staticmethod
    def cat(conds: list["Conditioning"]) -> "Conditioning":
        """Stack the rows of several conditionings (as classifier-free guidance runs them in one batch)."""
        first = conds[0]
        return replace(first, **{f.name: torch.cat([getattr(c, f.name) for c in conds])
                                 for f in fields(first) if getattr(first, f.name) is not None})
