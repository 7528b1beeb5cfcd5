"""Size and duration buckets: each clip trains at (about) its native aspect ratio and length, not a square crop.

A bucket is (num_frames, height, width). A clip goes to the bucket nearest its aspect ratio (in log space),
then the longest one it is long enough for, then the one nearest its pixel count; it is resized to cover
the bucket and centre- or randomly cropped, never stretched. A batch holds one bucket, and each bucket's batch
size keeps the DiT's tokens per batch near `tokens_per_batch` (Sora, sec. "Variable durations, resolutions,
aspect ratios"; NaViT-style token budgets, Dehghani et al. 2023). Buckets with num_frames=1 take images.
"""

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from sora.data.decode import BadSample, frames_needed
from sora.models.geometry import LatentGeometry


@dataclass(frozen=True)
class Bucket:
    num_frames: int
    height: int
    width: int

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1


class BucketSet:
    """The configured buckets, how clips are assigned to them, and each one's batch size.

    With a latent geometry (the VAE's frame rule and the patch size) and `data.tokens_per_batch`, each bucket's
    batch size keeps its DiT tokens near that budget; without, every bucket batches `data.batch_size_per_gpu`.
    The config checks (sora/config/checks.py) have made sure every bucket cuts exactly.
    """

    def __init__(self, buckets: list[Bucket], batch_sizes: list[int], tokens_per_batch: int | None = None,
                 geometry: LatentGeometry | None = None):
        assert buckets and len(buckets) == len(batch_sizes), f"{len(buckets)} buckets, {len(batch_sizes)} batch sizes"
        self.buckets, self.batch_sizes = list(buckets), list(batch_sizes)
        self.tokens_per_batch, self.geometry = tokens_per_batch, geometry  # latent caches use these
        # DiT tokens of one clip of each bucket (with a geometry and a token budget)
        self.tokens = ([geometry.num_tokens(b.num_frames, b.height, b.width) for b in buckets] if tokens_per_batch
                       else None)

    @classmethod
    def from_config(cls, data_cfg, geometry: LatentGeometry | None = None) -> "BucketSet":
        """`data.buckets` (or the single num_frames x height x width) with batch sizes from `tokens_per_batch`."""
        rows = data_cfg.buckets or [[data_cfg.num_frames, data_cfg.height, data_cfg.width]]
        buckets = [Bucket(*map(int, row)) for row in rows]
        if data_cfg.tokens_per_batch is None or geometry is None:
            return cls(buckets, [data_cfg.batch_size_per_gpu] * len(buckets), None, geometry)
        sizes = [max(1, data_cfg.tokens_per_batch // geometry.num_tokens(b.num_frames, b.height, b.width))
                 for b in buckets]
        return cls(buckets, sizes, data_cfg.tokens_per_batch, geometry)

    def latent_tokens(self, latent_shape) -> int:
        """DiT tokens of a cached latent of this (c, t, h, w) shape."""
        return max(1, math.prod(self.geometry.grid_of_latent(latent_shape)))

    def assign(self, num_frames_available: int, height: int, width: int, is_image: bool, frame_stride: int) -> int:
        """Index of the bucket for a clip of this shape; BadSample('too_short') when the buckets of its kind are all
        longer than it, BadSample('no_bucket') when there is no bucket of its kind (image or video) at all."""
        aspect = math.log(height / width)
        best, best_key = None, None
        for i, b in enumerate(self.buckets):
            if b.is_image != is_image:
                continue
            if not b.is_image and frames_needed(b.num_frames, frame_stride) > num_frames_available:
                continue
            key = (round(abs(math.log(b.height / b.width) - aspect), 3), -b.num_frames,
                   abs(math.log(b.height * b.width / (height * width))))
            if best_key is None or key < best_key:
                best, best_key = i, key
        if best is not None:
            return best
        if is_image or not any(not b.is_image for b in self.buckets):
            kind, why = ("image", "no bucket has 1 frame") if is_image else ("video", "every bucket has 1 frame")
            raise BadSample("no_bucket", f"no bucket takes a {height}x{width} {kind} ({why})")
        shortest = min(b.num_frames for b in self.buckets if not b.is_image)
        need = frames_needed(shortest, frame_stride)
        raise BadSample("too_short", f"no bucket takes {num_frames_available} frames: the shortest needs {need} "
                                     f"({shortest} at data.frame_stride={frame_stride})")


def resize_crop(frames: torch.Tensor, height: int, width: int, rng: random.Random | None = None) -> torch.Tensor:
    """uint8 t h w c -> float c t h w in [-1, 1]: scale to cover (height, width) keeping aspect, then crop."""
    t, h, w, c = frames.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    # A t c h w view of the t h w c frames is channels-last: torch's uint8 antialiased resize runs on it
    # directly, ~9x faster than on float (bench/data_throughput.py), within one grey level of it.
    x = frames.permute(0, 3, 1, 2)  # t c h w (channels-last memory)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top = rng.randint(0, new_h - height) if rng is not None else (new_h - height) // 2
    left = rng.randint(0, new_w - width) if rng is not None else (new_w - width) // 2
    x = x[:, :, top : top + height, left : left + width]  # t c height width
    return (rearrange(x, "t c h w -> c t h w").float() / 127.5 - 1.0).contiguous()
