"""Webdataset clips: shards -> decord decode -> clip of `num_frames` at `frame_stride` -> resize/crop -> c t h w.

Each sample in a shard is `KEY.mp4` (any container decord reads), `KEY.txt` (the caption) and optionally
`KEY.json` (metadata). Shards are shuffled per epoch and split across ranks, then across DataLoader workers.
A sample that cannot be used is skipped and logged with its shard and key, never silently lost.
"""

import glob
import io
import logging
import os
import random
from itertools import count

import braceexpand
import lightning as L
import torch
import torch.nn.functional as F
import webdataset as wds
from einops import rearrange
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sora.errors import SoraError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov")

# ---------------------------------------------------------------------------------------------------------------
# Shard lists
# ---------------------------------------------------------------------------------------------------------------


def expand_shards(pattern: str) -> list[str]:
    """Brace patterns (`a-{000..009}.tar`) and globs (`a-*.tar`) to a sorted list of existing shard files."""
    if not pattern:
        raise SoraError("data.shards is empty: give a shard pattern such as 'shards/train-{000000..000009}.tar'")
    paths = []
    for part in braceexpand.braceexpand(os.path.expanduser(pattern)):
        matches = sorted(glob.glob(part)) if glob.has_magic(part) else ([part] if os.path.exists(part) else [])
        paths += matches
    if not paths:
        raise SoraError(f"data.shards={pattern!r} matches no file (cwd: {os.getcwd()})")
    missing = [p for p in braceexpand.braceexpand(pattern) if not glob.has_magic(p) and not os.path.exists(p)]
    if missing:
        raise SoraError(f"data.shards={pattern!r}: {len(missing)} shard(s) missing, first {missing[0]!r}")
    return sorted(set(paths))


# ---------------------------------------------------------------------------------------------------------------
# Decoding and resizing
# ---------------------------------------------------------------------------------------------------------------


def decode_clip(data: bytes, num_frames: int, frame_stride: int, rng: random.Random | None) -> torch.Tensor:
    """Video bytes -> uint8 t h w c of `num_frames` frames `frame_stride` apart (random start if rng is given)."""
    import decord

    reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
    span = (num_frames - 1) * frame_stride + 1
    if len(reader) < span:
        raise ValueError(f"clip has {len(reader)} frames, needs {span} (num_frames={num_frames}, frame_stride={frame_stride})")
    start = rng.randint(0, len(reader) - span) if rng is not None else 0
    frames = reader.get_batch(list(range(start, start + span, frame_stride))).asnumpy()  # t h w c
    return torch.from_numpy(frames)


def resize_crop(frames: torch.Tensor, height: int, width: int, rng: random.Random | None = None) -> torch.Tensor:
    """uint8 t h w c -> float c t h w in [-1, 1]: scale to cover (height, width) keeping aspect, then crop."""
    t, h, w, c = frames.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    x = rearrange(frames, "t h w c -> t c h w").float()
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top = rng.randint(0, new_h - height) if rng is not None else (new_h - height) // 2
    left = rng.randint(0, new_w - width) if rng is not None else (new_w - width) // 2
    x = x[:, :, top : top + height, left : left + width]  # t c height width
    return rearrange(x / 127.5 - 1.0, "t c h w -> c t h w").clamp(-1, 1)


# ---------------------------------------------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------------------------------------------


class ClipStream(IterableDataset):
    """Endless stream of {"video": c t h w, "caption": str}, shuffled by (seed, epoch), split by rank and worker."""

    def __init__(self, shards: list[str], num_frames: int, frame_stride: int, height: int, width: int,
                 random_start: bool = True, shuffle_buffer: int = 512, seed: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__()
        assert num_frames >= 1 and frame_stride >= 1, f"num_frames={num_frames}, frame_stride={frame_stride} must be >= 1"
        self.shards, self.seed, self.rank, self.world_size = shards, seed, rank, world_size
        self.num_frames, self.frame_stride, self.height, self.width = num_frames, frame_stride, height, width
        self.random_start, self.shuffle_buffer = random_start, shuffle_buffer

    def _my_shards(self, epoch: int) -> list[str]:
        shards = list(self.shards)
        random.Random(self.seed * 100003 + epoch).shuffle(shards)
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        # Shards are the unit of splitting: rank-major, then worker. With fewer shards than readers, readers
        # share them by wrapping around, so every reader always has data.
        readers = self.world_size * num_workers
        me = self.rank * num_workers + worker
        if len(shards) >= readers:
            return shards[me::readers]
        return [shards[me % len(shards)]]

    def _sample(self, raw: dict, rng: random.Random) -> dict | None:
        key = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
        video_ext = next((e for e in VIDEO_EXTENSIONS if e in raw), None)
        if video_ext is None:
            log.warning("skipping %s: no video (%s)", key, "/".join(VIDEO_EXTENSIONS))
            return None
        text = raw.get("txt", b"").decode("utf-8", errors="replace").strip()
        try:
            frames = decode_clip(raw[video_ext], self.num_frames, self.frame_stride, rng if self.random_start else None)
        except Exception as e:  # decord raises several types for corrupt input; every one means "skip this clip"
            log.warning("skipping %s: %s", key, str(e).splitlines()[0] if str(e) else type(e).__name__)
            return None
        return {"video": resize_crop(frames, self.height, self.width), "caption": text}

    def __iter__(self):
        info = get_worker_info()
        rng = random.Random(hash((self.seed, self.rank, info.id if info else 0)))
        for epoch in count():
            urls = iter(wds.SimpleShardList(self._my_shards(epoch)))
            samples = wds.tarfile_to_samples(handler=wds.warn_and_continue)(urls)
            for raw in wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(samples):
                sample = self._sample(raw, rng)
                if sample is not None:
                    yield sample


def make_loader(cfg, seed: int, rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader over `cfg.shards` (a DataConfig) yielding {"video": b c t h w, "caption": [str]}."""
    shards = expand_shards(cfg.shards)
    stream = ClipStream(shards, cfg.num_frames, cfg.frame_stride, cfg.height, cfg.width, cfg.random_start,
                        cfg.shuffle_buffer, seed, rank, world_size)
    return DataLoader(stream, batch_size=cfg.batch_size_per_gpu, num_workers=cfg.num_workers,
                      persistent_workers=cfg.num_workers > 0, pin_memory=torch.cuda.is_available())



class ClipDataModule(L.LightningDataModule):
    """Hands Lightning a loader split for this process's rank (known only once the trainer has set up)."""

    def __init__(self, cfg, seed: int):
        super().__init__()
        self.cfg, self.seed = cfg, seed

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.cfg, self.seed, self.trainer.global_rank, self.trainer.world_size)
