"""The dedup stage: near-duplicate clips (a re-upload, a re-encode, a resized copy) dropped, the first one kept.

Each clip's key frames (its first, middle and last quarter, by default) get a 64-bit perceptual hash (pHash: the
signs of the lowest 8x8 DCT coefficients of a 32x32 grey image; `imagehash`), which a re-encode or a resize barely
changes. Two clips are duplicates when their key frames differ by at most `max_distance` bits on average, or, with a
CLIP given, when their mean CLIP image embeddings have cosine similarity of at least `min_cosine` (a copy with a
logo, a crop or a colour change). Clips are decided in manifest order against every clip kept before them, in the
main process; the hashing runs in the workers.
"""

import base64
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sora.curation.clip_models import ClipImageEmbedder
from sora.curation.manifest import is_live, key_name
from sora.curation.media import map_clip_frames, sample_indices
from sora.errors import SoraError
from sora.settings import Settings, setting


@dataclass
class DedupArgs(Settings):
    frames: int = setting(3, ge=1, le=16)  # key frames per clip
    max_distance: float = setting(8.0, ge=0, le=64)  # mean Hamming distance (bits of 64) of duplicate key frames
    clip_dir: str | None = None  # a CLIPModel folder: also drop clips whose embeddings are this close
    min_cosine: float = setting(0.95, gt=0, le=1)  # CLIP cosine similarity of duplicates (with clip_dir)


def phash(frame: np.ndarray) -> int:
    """uint8 h w 3 -> the frame's 64-bit perceptual hash."""
    import imagehash

    bits = imagehash.phash(Image.fromarray(frame)).hash.flatten()  # 64 bools
    return int("".join("1" if b else "0" for b in bits), 2)


def pack_embedding(v: np.ndarray) -> str:
    return base64.b64encode(v.astype(np.float16).tobytes()).decode()


def unpack_embedding(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), np.float16).astype(np.float32)


@dataclass
class Hasher:
    """The workers' part: key-frame hashes (and CLIP embeddings) of one source's clips."""

    args: DedupArgs
    clip: ClipImageEmbedder | None = field(default=None, repr=False)

    def setup(self, device: str) -> None:
        if self.args.clip_dir:
            self.clip = ClipImageEmbedder(self.args.clip_dir, device)

    def run(self, source: str, records: list[dict]) -> list[dict]:
        return map_clip_frames(source, records, lambda s, e: sample_indices(s, e, self.args.frames), 256, self._hash)

    def _hash(self, record: dict, frames: np.ndarray) -> dict:
        r = {**record, "phash": [f"{phash(f):016x}" for f in frames]}
        if self.clip is not None:
            r["clip_embedding"] = pack_embedding(self.clip.embed(frames).mean(0).numpy())
        return r


class DuplicateIndex:
    """The clips kept so far; `decide` keeps a clip or names the kept clip it duplicates."""

    def __init__(self, args: DedupArgs):
        self.args = args
        self.buffer = np.zeros((1024, args.frames), np.uint64)  # capacity k, grown by doubling
        self.embeddings: list[np.ndarray] = []
        self.keys: list[str] = []

    @property
    def hashes(self) -> np.ndarray:
        return self.buffer[: len(self.keys)]  # n k

    def _add(self, record: dict) -> None:
        n = len(self.keys)
        if n == len(self.buffer):
            self.buffer = np.concatenate([self.buffer, np.zeros_like(self.buffer)])  # 2n k
        self.buffer[n] = self._hashes(record)
        if self.args.clip_dir:
            e = unpack_embedding(record["clip_embedding"])
            self.embeddings.append(e / max(np.linalg.norm(e), 1e-8))
        self.keys.append(key_name(record))

    def _hashes(self, record: dict) -> np.ndarray:
        h = [int(x, 16) for x in record["phash"]]
        if len(h) != self.args.frames:
            raise SoraError(f"{key_name(record)} has {len(h)} key-frame hashes, this run {self.args.frames}: resume "
                            "with the --frames the manifest was started with")
        return np.array(h, np.uint64)

    def duplicate_of(self, record: dict) -> str | None:
        """The key of a kept clip this one duplicates, or None."""
        if not self.keys:
            return None
        bits = np.bitwise_count(self.hashes ^ self._hashes(record)[None]).mean(axis=1)  # n
        best = int(np.argmin(bits))
        if bits[best] <= self.args.max_distance:
            return self.keys[best]
        if self.args.clip_dir:
            e = unpack_embedding(record["clip_embedding"])
            cos = np.stack(self.embeddings) @ (e / max(np.linalg.norm(e), 1e-8))  # n
            best = int(np.argmax(cos))
            if cos[best] >= self.args.min_cosine:
                return self.keys[best]
        return None

    def decide(self, records: list[dict]) -> list[dict]:
        """Mark each live record kept (and remember it) or dropped as a duplicate, in order."""
        out = []
        for r in records:
            if is_live(r) and "phash" in r:
                dup = self.duplicate_of(r)
                if dup is None:
                    self._add(r)
                    r = {**r, "keep": True}
                else:
                    r = {**r, "keep": False, "dropped_by": ["duplicate"], "duplicate_of": dup}
            out.append(r)
        return out

    def remember(self, done: list[dict]) -> None:
        """The clips an earlier, interrupted run kept (resuming)."""
        for r in done:
            if is_live(r) and "phash" in r:
                self._add(r)
