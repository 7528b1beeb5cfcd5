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

from sora.decode import BadSample
from sora.errors import SoraError


@dataclass(frozen=True)
class Bucket:
    num_frames: int
    height: int
    width: int

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1


def latent_frames(vae_cfg, num_frames: int) -> int:
    """Latent frames of a clip: the causal VAE encodes the first frame alone (sora/vae.py)."""
    ct = vae_cfg.temporal_compression
    return 1 + (num_frames - 1) // ct if ct > 1 else num_frames


def latent_grid(vae_cfg, patch_size, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Token grid (t, h, w) of a clip after the VAE and the patchifier."""
    cs, t = vae_cfg.spatial_compression, latent_frames(vae_cfg, num_frames)
    pt, ph, pw = patch_size
    return t // pt, height // cs // ph, width // cs // pw


def check_bucket(bucket: Bucket, vae_cfg, patch_size, where: str = "data.buckets") -> None:
    """Fail at start, naming the bucket and the keys that set it, when the VAE and patchifier cannot cut it."""
    ct, cs = vae_cfg.temporal_compression, vae_cfg.spatial_compression
    pt, ph, pw = patch_size
    t = latent_frames(vae_cfg, bucket.num_frames)
    problems = []
    if ct > 1 and (bucket.num_frames - 1) % ct:
        problems.append(f"num_frames-1 must divide by the VAE's temporal compression {ct}")
    if t % pt:
        problems.append(f"{t} latent frames do not divide by patch_size[0]={pt}")
    if bucket.height % (cs * ph) or bucket.width % (cs * pw):
        problems.append(f"height and width must divide by {cs}x{ph} and {cs}x{pw} (VAE x patch)")
    if problems:
        raise SoraError(f"{where}: bucket {list(vars(bucket).values())}: " + "; ".join(problems))


class BucketSet:
    """The configured buckets, how clips are assigned to them, and each one's batch size."""

    def __init__(self, buckets: list[Bucket], batch_sizes: list[int], tokens_per_batch: int | None = None,
                 patch_size=(1, 1, 1)):
        assert buckets, "data.buckets is empty"
        assert len(buckets) == len(batch_sizes)
        self.buckets, self.batch_sizes = list(buckets), list(batch_sizes)
        self.tokens_per_batch, self.patch_size = tokens_per_batch, tuple(patch_size)  # latent caches use these
        self.tokens: list[int] | None = None  # DiT tokens of one clip of each bucket (set with tokens_per_batch)

    @classmethod
    def from_config(cls, data_cfg, vae_cfg=None, patch_size=None) -> "BucketSet":
        """`data.buckets` (or the single num_frames x height x width) with batch sizes from `tokens_per_batch`."""
        rows = data_cfg.buckets or [[data_cfg.num_frames, data_cfg.height, data_cfg.width]]
        buckets = []
        for row in rows:
            if len(row) != 3 or min(row) < 1:
                raise SoraError(f"data.buckets: each bucket is [num_frames, height, width] >= 1, got {list(row)}")
            buckets.append(Bucket(*map(int, row)))
        if vae_cfg is not None:  # every bucket must cut exactly, or the first batch would fail deep in the VAE
            where = "data.buckets" if data_cfg.buckets else "data.num_frames, data.height, data.width"
            for b in buckets:
                check_bucket(b, vae_cfg, patch_size or (1, 1, 1), where)
        if data_cfg.tokens_per_batch is None or vae_cfg is None:
            return cls(buckets, [data_cfg.batch_size_per_gpu] * len(buckets), None, patch_size or (1, 1, 1))
        sizes, tokens = [], []
        for b in buckets:
            tokens.append(math.prod(latent_grid(vae_cfg, patch_size, b.num_frames, b.height, b.width)))
            sizes.append(max(1, data_cfg.tokens_per_batch // tokens[-1]))
        out = cls(buckets, sizes, data_cfg.tokens_per_batch, patch_size)
        out.tokens = tokens
        return out

    def assign(self, num_frames_available: int, height: int, width: int, is_image: bool, frame_stride: int) -> int:
        """Index of the bucket for a clip of this shape; BadSample('no_bucket') when none fits."""
        aspect = math.log(height / width)
        best, best_key = None, None
        for i, b in enumerate(self.buckets):
            if b.is_image != is_image:
                continue
            if not b.is_image and (b.num_frames - 1) * frame_stride + 1 > num_frames_available:
                continue
            key = (round(abs(math.log(b.height / b.width) - aspect), 3), -b.num_frames,
                   abs(math.log(b.height * b.width / (height * width))))
            if best_key is None or key < best_key:
                best, best_key = i, key
        if best is None:
            kind = "image" if is_image else f"clip of {num_frames_available} frames (stride {frame_stride})"
            raise BadSample("no_bucket", f"no bucket takes a {height}x{width} {kind}")
        return best


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
