"""Which latent frames a training clip gives as a condition: the mixture of modes (sampling builds its own masks
from files, sora/inference/prompting.py).

One mechanism serves image-to-video, extension forwards and backwards, loops, transitions and keyframes: a mask
over the clip's frames marks the ones given (clean, at their own timestep) and the DiT makes the rest
(sora/models/conditioning.py). Masks are drawn in units of the DiT's temporal patch (a token frame: one DiT token
row in time), then spread over that unit's latent frames, so a given unit is always whole tokens.

Modes (the names `conditioning.modes` takes, with their probabilities):
  none        nothing given: text to video
  first       the first unit: image-to-video (CogVideoX / Wan I2V)
  first_k     the first k units, k uniform in [1, units - 1]: extend forwards
  last_k      the last k units: extend backwards
  first_last  the first and the last unit: connect two clips, loop, interpolate (Open-Sora 2.0's head/tail)
  keyframes   each unit given with probability 1/4, at least one and not all: frames pinned anywhere (LTX-Video)
"""

from dataclasses import dataclass, field

import torch

from sora.errors import SoraError
from sora.settings import Settings, setting


def _first_k(units: int, g: torch.Generator) -> torch.Tensor:
    return torch.arange(units) < int(torch.randint(1, units, (1,), generator=g))


def _last_k(units: int, g: torch.Generator) -> torch.Tensor:
    return _first_k(units, g).flip(0)


def _first_last(units: int, g: torch.Generator) -> torch.Tensor:
    mask = torch.zeros(units, dtype=torch.bool)
    mask[0] = mask[-1] = True
    return mask


def _keyframes(units: int, g: torch.Generator) -> torch.Tensor:
    mask = torch.rand(units, generator=g) < 0.25
    if not mask.any():
        mask[int(torch.randint(units, (1,), generator=g))] = True
    return mask


MASKS_BY_MODE = {
    "none": lambda units, g: torch.zeros(units, dtype=torch.bool),
    "first": lambda units, g: torch.arange(units) < 1,
    "first_k": _first_k,
    "last_k": _last_k,
    "first_last": _first_last,
    "keyframes": _keyframes,
}

# The mixture of a crop from later in its clip (data.clip_start_share): its first k units given, the clip so far, as
# a later window of a long video is given the video before it.
CONTINUE = {"first_k": 1.0}


def gives_frames(probs: dict[str, float]) -> bool:
    """True when a mixture ever gives frames (a mode other than `none` has a probability above 0)."""
    return any(p > 0 for name, p in probs.items() if name != "none")


def units_to_frames(unit_mask: torch.Tensor, frames_per_unit: int) -> torch.Tensor:
    """... u unit mask -> ... (u p) latent-frame mask."""
    return unit_mask.repeat_interleave(frames_per_unit, dim=-1)


def draw_frame_masks(num_clips: int, num_frames: int, frames_per_unit: int, probs: dict[str, float],
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[str]]:
    """(b num_frames latent-frame masks, the mode each clip drew) for a mixture {mode: probability}.

    Drawn from torch's generator (the global one by default), so a resumed run draws what the uninterrupted one
    would have.
    """
    names = [name for name, p in probs.items() if p > 0]
    weights = torch.tensor([probs[n] for n in names], dtype=torch.float64)
    picks = torch.multinomial(weights, num_clips, replacement=True, generator=generator)  # b
    units = num_frames // frames_per_unit
    if units < 2:  # an image (or a one-unit clip): nothing can be given and something still made
        return torch.zeros(num_clips, num_frames, dtype=torch.bool), ["none"] * num_clips
    masks = []
    for i in picks.tolist():
        mask = MASKS_BY_MODE[names[i]](units, generator)
        if mask.all():  # keep something to make (first_last or keyframes on a short clip)
            mask[-1] = False
        masks.append(units_to_frames(mask, frames_per_unit))
    return torch.stack(masks), [names[i] for i in picks.tolist()]


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FrameModes(Settings):
    """Relative probability of each mode of MASKS_BY_MODE (normalised by their sum): the quick start's mixture,
    text to video and every prompting mode of sample.py at once. `conditioning=text` sets none=1, the rest 0."""

    none: float = setting(0.4, ge=0)  # text to video
    first: float = setting(0.2, ge=0)  # the first frame given: image to video
    first_k: float = setting(0.15, ge=0)  # the first k: extend forwards; also what each later window is given
    last_k: float = setting(0.1, ge=0)  # the last k: extend backwards
    first_last: float = setting(0.1, ge=0)  # both ends: connect, loop, interpolate
    keyframes: float = setting(0.05, ge=0)  # frames anywhere

    def check(self, at: str = "") -> None:
        if sum(getattr(self, name) for name in MASKS_BY_MODE) <= 0:
            raise SoraError(f"{at.rstrip('.')}: the probabilities must not all be 0 (none: 1 trains text only)")


@dataclass
class ConditioningArgs(Settings):
    """`conditioning.*`: frames given as a condition in training (sora/training/dit_task.py): the mixture of
    modes, and the noise on the given frames."""

    modes: FrameModes = field(default_factory=FrameModes)
    # The given frames' timestep is drawn from [0, frame_noise] in training (noise augmentation, as CogVideoX and
    # LTX-Video add); sampling gives them clean (t = 0).
    frame_noise: float = setting(0.05, ge=0, lt=1)
