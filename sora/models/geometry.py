"""Latent geometry: how a clip's frames and pixels map to latent frames and DiT tokens.

One object, derived from the VAE and the DiT's patch size, answers every shape question the framework asks:
the latent shape of a clip (sampling noise, the latent cache), its token grid (batch sizes per bucket, packing,
FLOPs), and whether a size can be cut at all (buckets, sample.py). The VAE's frame rule lives in the VAE object
(`temporal_compression` and `first_frame_alone`), so a VAE with another rule (1 + 8k frames, or k * 4 without a
causal first frame) plugs in without touching any caller.
"""

import math
from dataclasses import dataclass

import torch

from sora.errors import SoraError


@dataclass(frozen=True)
class LatentGeometry:
    latent_channels: int
    temporal_compression: int
    spatial_compression: int
    first_frame_alone: bool  # causal VAEs encode frame 0 alone: 1 + k * tc frames -> 1 + k latent frames
    patch_size: tuple[int, int, int] = (1, 1, 1)

    @classmethod
    def of(cls, vae, patch_size=(1, 1, 1)) -> "LatentGeometry":
        """The geometry of a VAE object (PixelVAE, CausalVAE, a pretrained one) and a patch size."""
        return cls(vae.latent_channels, vae.temporal_compression, vae.spatial_compression,
                   bool(getattr(vae, "first_frame_alone", False)), tuple(int(p) for p in patch_size))

    # -- frames, pixels -> latent ------------------------------------------------------------------------------

    def latent_frames(self, num_frames: int) -> int:
        tc = self.temporal_compression
        if tc == 1:
            return num_frames
        return 1 + (num_frames - 1) // tc if self.first_frame_alone else num_frames // tc

    def latent_index(self, num_frames: int) -> torch.Tensor:
        """T -> the latent frame each pixel frame falls in (frame 0 alone, then groups of tc; or groups of tc)."""
        f, tc = torch.arange(num_frames), self.temporal_compression
        return (f + tc - 1) // tc if self.first_frame_alone else f // tc

    def frame_rule(self) -> str:
        """The clip lengths the VAE takes, in words (for error messages)."""
        tc = self.temporal_compression
        if tc == 1:
            return "any number of frames"
        return f"1 + k * {tc} frames" if self.first_frame_alone else f"k * {tc} frames"

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(c, t, h, w) of a clip's latent."""
        cs = self.spatial_compression
        return self.latent_channels, self.latent_frames(num_frames), height // cs, width // cs

    # -- latent -> tokens --------------------------------------------------------------------------------------

    def grid_of_latent(self, latent_shape) -> tuple[int, int, int]:
        """(.., t, h, w) latent shape -> (t, h, w) token grid."""
        t, h, w = latent_shape[-3:]
        pt, ph, pw = self.patch_size
        return t // pt, h // ph, w // pw

    def token_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(t, h, w) token grid of a clip after the VAE and the patchifier."""
        return self.grid_of_latent(self.latent_shape(num_frames, height, width))

    def num_tokens(self, num_frames: int, height: int, width: int) -> int:
        return math.prod(self.token_grid(num_frames, height, width))

    # -- what can be cut ---------------------------------------------------------------------------------------

    def problems(self, num_frames: int, height: int, width: int) -> list[str]:
        """Why a clip of this size cannot be encoded and patched exactly; empty when it can."""
        tc, cs = self.temporal_compression, self.spatial_compression
        pt, ph, pw = self.patch_size
        out = []
        if num_frames < 1 or height < 1 or width < 1:
            return [f"every size must be >= 1, got {num_frames} frames of {height}x{width}"]
        if tc > 1 and (num_frames - 1 if self.first_frame_alone else num_frames) % tc:
            out.append(f"the VAE takes {self.frame_rule()} (temporal compression {tc}), not {num_frames}")
        elif self.latent_frames(num_frames) % pt:
            out.append(f"{self.latent_frames(num_frames)} latent frames do not divide by patch_size[0]={pt}")
        if height % (cs * ph) or width % (cs * pw):
            out.append(f"height and width must divide by {cs}x{ph} and {cs}x{pw} (VAE x patch), got {height}x{width}")
        return out

    def check(self, num_frames: int, height: int, width: int, where: str) -> None:
        """SoraError naming `where` (the keys that set this size) when the size cannot be cut."""
        problems = self.problems(num_frames, height, width)
        if problems:
            raise SoraError(f"{where}: [{num_frames}, {height}, {width}] (frames, height, width): "
                            + "; ".join(problems))
