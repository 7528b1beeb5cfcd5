"""Webdataset shards -> bucketed batches, split across ranks and workers, resumable to the exact sample.

A shard sample is `KEY.<media>` (sora/data/decode.py lists the extensions), `KEY.txt` (caption) and optionally
`KEY.json` (probed metadata, written by data/make_shards.py), or, in a latent cache (sora/data/latent_cache.py),
`KEY.latent.npy`, `KEY.alone.npy` (latent frames made alone, for frame conditioning) and the text encoder's
`KEY.context.npy` / `KEY.mask.npy`.

Splitting: every (rank, worker) pair is one *reader*. With at least as many shards as readers, each reader
takes whole shards (`shards[reader::readers]`, shards shuffled per epoch); with fewer, every reader opens all
shards and keeps every readers-th sample. Either way, an epoch gives each sample to exactly one reader.

Exact resume: a reader's stream is a pure function of (seed, epoch, reader), so its position is small: the
epoch, how many raw samples it has pulled, the indices waiting in its shuffle and bucket buffers, and its RNG
state. Each batch carries the position *after* it; the DataModule keeps the latest one per reader and saves it
in the checkpoint. On resume a reader re-reads its shards up to that point without decoding (tar bytes only)
and rebuilds its buffers. The DataLoader always asks worker 0 first, so workers are renumbered to make the
reader that was next be asked first: the resumed batch order is the uninterrupted one.

Bad samples raise `BadSample` inside a reader; they are skipped, counted by reason and reported by the trainer,
each one written to a JSON-lines file with its shard and key and summed up in the log (sora/data/skip_log.py),
or, with `data.strict=true`, stop the run naming the file.

`data.min_scores` keeps the samples whose curation scores (the `scores` of their .json, written by data/curate.py
through data/make_shards.py) reach every minimum: a sample below one is dropped before it is decoded and counted as
`min_scores.NAME` beside the skipped samples' reasons (logged at info level, never an error, data.strict or not,
and not written to the skipped samples' file: its scores are in the shards); a sample without the score is a bad
sample (`no_score`), and the check before the first step stops on one (sora/data/preflight.py). Validation and
evaluation read their held-out shards unfiltered.

A `SoraError` in a DataLoader worker (strict mode, a reader that finds no usable sample) reaches the main
process as a batch carrying its message (ERROR), and `strip_bookkeeping` raises it there: torch would re-raise
it as "Caught SoraError in DataLoader worker process N" with the worker's traceback, not the user's one line.
"""

import glob
import io
import json
import logging
import os
import random
import tarfile
from collections import Counter

import braceexpand
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sora.data.buckets import BucketSet, resize_crop
from sora.data.decode import IMAGE_EXTENSIONS, MEDIA_EXTENSIONS, BadSample, DecodedClips, decode_clip, read_media_info
from sora.data.skip_log import SkipLog
from sora.errors import SoraError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Shard lists
# ---------------------------------------------------------------------------------------------------------------


def expand_shards(pattern: str, key: str = "data.shards") -> list[str]:
    """Brace patterns (`a-{000..009}.tar`) and globs (`a-*.tar`) to a sorted list of existing shard files; errors
    name `key`, the setting the pattern came from."""
    if not pattern:
        raise SoraError(f"{key} is empty: give a shard pattern such as 'shards/train-{{000000..000009}}.tar'")
    paths = []
    for part in braceexpand.braceexpand(os.path.expanduser(pattern)):
        matches = sorted(glob.glob(part)) if glob.has_magic(part) else ([part] if os.path.exists(part) else [])
        paths += matches
    if not paths:
        raise SoraError(f"{key}={pattern!r} matches no file (cwd: {os.getcwd()})")
    missing = [p for p in braceexpand.braceexpand(pattern) if not glob.has_magic(p) and not os.path.exists(p)]
    if missing:
        raise SoraError(f"{key}={pattern!r}: {len(missing)} shard(s) missing, first {missing[0]!r}")
    return sorted(set(paths))


def check_shards(paths: list[str]) -> None:
    """Open every shard and read its first header: an unreadable shard stops the run at start, named."""
    for path in paths:
        try:
            with tarfile.open(path, "r:") as tar:
                tar.next()
        except (OSError, tarfile.TarError) as e:
            raise SoraError(f"shard {path!r} is not a readable tar file: {e}") from None


# ---------------------------------------------------------------------------------------------------------------
# One sample's metadata
# ---------------------------------------------------------------------------------------------------------------


def sample_info(raw: dict) -> tuple[str, str, dict | None]:
    """(media extension, caption, its .json metadata or None when it has none usable) of a raw video sample;
    BadSample when it has no media file or no caption. Reads only the .txt and .json members."""
    ext = next((e for e in MEDIA_EXTENSIONS if e in raw), None)
    if ext is None:
        other = [k for k in raw if not k.startswith("__") and k not in ("txt", "json")]
        raise BadSample("not_media", f"no media file (found {', '.join(other) or 'nothing'})")
    caption = (raw.get("txt") or b"").decode("utf-8", errors="replace").strip()
    if not caption:
        raise BadSample("no_caption", "missing or empty .txt")
    try:
        info = json.loads(raw["json"]) if raw.get("json") else None
    except (ValueError, UnicodeDecodeError):
        info = None
    if not isinstance(info, dict) or not {"num_frames", "height", "width"} <= info.keys():
        return ext, caption, None
    return ext, caption, info


DROPPED = "min_scores."  # the reason a sample below data.min_scores is counted under: min_scores.NAME


class Dropped(Exception):
    """A sample data.min_scores leaves out: counted by the score it falls short on, not a bad sample."""

    def __init__(self, score: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = f"{DROPPED}{score}", detail


def check_min_scores_source(cfg) -> None:
    """data.min_scores needs the shards' .json: a latent cache keeps none (its writer applies the filter)."""
    if cfg.min_scores and cfg.latent_cache:
        raise SoraError("data.min_scores reads each sample's .json scores, which a latent cache does not keep: give "
                        "it to data/cache_latents.py, whose cache then holds only the clips it keeps, and leave it off "
                        "when training on the cache")


class MissingScore(BadSample):
    """A sample whose .json has no number for a score data.min_scores names (`score`)."""

    def __init__(self, score: str, detail: str):
        super().__init__("no_score", detail)
        self.score = score


def check_scores(raw: dict, min_scores: dict) -> None:
    """Nothing when the sample's .json `scores` reach every minimum (in the mapping's order); Dropped naming the
    first score below its minimum; MissingScore (a BadSample, no_score) when a score is missing or not a number."""
    try:
        scores = json.loads(raw["json"]).get("scores") if raw.get("json") else None
    except (ValueError, UnicodeDecodeError, AttributeError):
        scores = None
    for name, minimum in min_scores.items():
        value = scores.get(name) if isinstance(scores, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # value != value: NaN
            have = ", ".join(sorted(scores)) if isinstance(scores, dict) and scores else "none"
            raise MissingScore(name, f"no number at scores.{name} in its .json (data.min_scores.{name}; its "
                                     f"scores: {have})")
        if value < minimum:
            raise Dropped(name, f"{name}={value:g} < data.min_scores.{name}={minimum:g}")


def clip_shape(ext: str, info: dict) -> tuple[int, int, int, bool]:
    """(frames, height, width, is_image) of a clip from its metadata."""
    is_image = bool(info.get("is_image")) or ext in IMAGE_EXTENSIONS
    return int(info["num_frames"]), int(info["height"]), int(info["width"]), is_image


def strict_error(where: str, reason: str, detail: str) -> SoraError:
    """What data.strict=true stops with at the first bad sample (the loader, and the check before the first step)."""
    return SoraError(f"{where}: {reason}: {detail} (data.strict=true stops at the first bad sample)")


# ---------------------------------------------------------------------------------------------------------------
# One reader's stream
# ---------------------------------------------------------------------------------------------------------------


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


PACKED = "packed"  # the buffer key of data.packing: one buffer for clips of every bucket
ERROR = "_error"  # a worker's batch that carries a SoraError's message to the main process


class _Reader:
    """The stream of one (rank, worker): raw samples -> shuffle buffer -> decoded -> bucket buffers -> batches."""

    def __init__(self, stream: "ClipStream", reader: int, readers: int, state: dict | None):
        self.s, self.reader, self.readers = stream, reader, readers
        self.state = state or {"epoch": 0, "consumed": 0}
        self.skipped = Counter()  # since the last batch
        self.skip_log = SkipLog(stream.skipped_path, reader)

    def _raw(self, epoch: int):
        """(index, raw sample) of this reader's share of the epoch, in order; tar errors are bad shards."""
        shards = list(self.s.shards)
        random.Random(self.s.seed * 1_000_003 + epoch).shuffle(shards)
        whole = len(shards) >= self.readers
        mine = shards[self.reader :: self.readers] if whole else shards

        def on_tar_error(exn):
            self._bad("bad_shard", str(exn).splitlines()[0][:200], "?", epoch)
            return True  # skip the rest of that shard

        urls = iter([{"url": u} for u in mine])
        samples = wds.tarfile_to_samples(handler=on_tar_error)(urls)
        n = 0
        for i, raw in enumerate(samples):
            if whole or i % self.readers == self.reader:
                yield n, raw
                n += 1

    def _bad(self, reason: str, detail: str, where: str, epoch: int):
        if self.s.strict:
            raise strict_error(where, reason, detail)
        self.skipped[reason] += 1
        self.skip_log.add(reason, detail, where, epoch)

    def _process(self, n: int, raw: dict, epoch: int):
        """(bucket key, item) of one raw sample, or None when it is skipped or dropped (counted)."""
        where = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
        rng = random.Random(f"{self.s.seed}/{epoch}/{self.reader}/{n}")  # per sample: replays identically
        try:
            if self.s.min_scores:  # before decoding: a dropped clip costs its .json alone
                check_scores(raw, self.s.min_scores)
            return self.s.process(raw, rng)
        except Dropped as e:
            self.skipped[e.reason] += 1
            self.skip_log.drop(e.reason, e.detail, where)
            return None
        except BadSample as e:
            self._bad(e.reason, e.detail, where, epoch)
            return None

    def __iter__(self):
        st = self.state
        while True:
            yield from self._epoch(st)
            st = {"epoch": st["epoch"] + 1, "consumed": 0}

    def _epoch(self, st: dict):
        epoch, consumed = st["epoch"], st["consumed"]
        rng = random.Random(self.s.seed * 7919 + epoch * 104729 + self.reader)
        if "rng" in st:
            _set_rng_state(rng, st["rng"])
        shuffle: list = []  # [(n, raw)]
        buckets: dict[str, list] = {}  # key -> [(n, item)]
        ready: list = []  # [(key, [(n, item)])], full batches not yet emitted
        images, total = st.get("images", 0), st.get("total", 0)
        raw_iter = self._raw(epoch)

        if consumed:  # resume: re-read up to the saved position (no decoding), rebuild the buffers
            wanted = (set(st["shuffle"]) | {n for _, ns in st["buckets"] for n in ns}
                      | {n for _, ns in st["ready"] for n in ns})
            kept = {}
            for n, raw in raw_iter:
                if n in wanted:
                    kept[n] = raw
                if n + 1 >= consumed:
                    break
            shuffle = [(n, kept[n]) for n in st["shuffle"]]
            for key, ns in st["buckets"]:
                buckets[key] = [(n, self._process(n, kept[n], epoch)[1]) for n in ns]
            ready = [(key, [(n, self._process(n, kept[n], epoch)[1]) for n in ns]) for key, ns in st["ready"]]

        def position():
            return {"epoch": epoch, "consumed": consumed, "rng": _rng_state(rng), "images": images, "total": total,
                    "shuffle": [n for n, _ in shuffle],
                    "buckets": [[k, [n for n, _ in v]] for k, v in buckets.items() if v],
                    "ready": [[k, [n for n, _ in v]] for k, v in ready]}

        def choose(final: bool) -> int | None:
            """Which ready batch goes next: keeps the share of image batches near data.image_batch_ratio."""
            if not ready:
                return None
            ratio = None if self.s.packing else self.s.image_batch_ratio  # packs mix images and clips already
            if ratio is None or final:
                return 0
            want_image = ratio * (total + 1) - images >= 0.5
            for i, (key, _) in enumerate(ready):
                if self.s.is_image(key) == want_image:
                    return i
            # The wanted kind is not in the data (or is rare): do not hold batches back forever.
            return 0 if len(ready) > 8 else None

        def emit(final: bool = False):
            nonlocal images, total
            while (i := choose(final)) is not None:
                key, members = ready.pop(i)
                images, total = images + self.s.is_image(key), total + 1
                batch = self.s.collate(key, [item for _, item in members])
                batch["_position"] = {"reader": self.reader, **position()}
                batch["_skipped"], self.skipped = dict(self.skipped), Counter()
                yield batch

        def add(n: int, raw: dict):
            out = self._process(n, raw, epoch)
            if out is None:
                return
            key, item = out
            if self.s.packing:  # one pack of any shapes, closed before a clip would take it past the budget
                pack = buckets.setdefault(PACKED, [])
                if pack and sum(it["_tokens"] for _, it in pack) + item["_tokens"] > self.s.buckets.tokens_per_batch:
                    ready.append((PACKED, pack[:]))
                    pack.clear()
                pack.append((n, item))
                return
            bucket = buckets.setdefault(key, [])
            bucket.append((n, item))
            if len(bucket) >= self.s.batch_size(key):
                ready.append((key, bucket[:]))
                bucket.clear()

        for n, raw in raw_iter:
            consumed = n + 1
            shuffle.append((n, raw))
            if len(shuffle) >= self.s.shuffle_buffer:
                j = rng.randrange(len(shuffle))
                shuffle[j], shuffle[-1] = shuffle[-1], shuffle[j]
                add(*shuffle.pop())
                yield from emit()
        while shuffle:  # end of the epoch: drain the shuffle buffer, then the partly filled buckets
            j = rng.randrange(len(shuffle))
            shuffle[j], shuffle[-1] = shuffle[-1], shuffle[j]
            add(*shuffle.pop())
            yield from emit()
        for key in list(buckets):
            if buckets[key]:
                ready.append((key, buckets.pop(key)))
        yield from emit(final=True)
        if total == st.get("total", 0) and not st.get("consumed"):  # a whole epoch without one batch: never will
            raise SoraError(f"data: reader {self.reader} found no usable sample in {len(self.s.shards)} shard(s) "
                            f"({consumed} read; skipped: {dict(self.skipped) or 'none'})")


class ClipStream(IterableDataset):
    """Endless stream of batches of one bucket each: {"video": b c t h w, "caption": [str]} (or cached latents).

    `state` maps reader -> position from a checkpoint; `worker_offset` renumbers workers so that the reader
    due next is asked first; `skipped_path` is the JSON-lines file that gets every skipped sample (None: none).
    """

    def __init__(self, shards: list[str], cfg, buckets: BucketSet, seed: int = 0, rank: int = 0, world_size: int = 1,
                 state: dict | None = None, worker_offset: int = 0, skipped_path: str | None = None):
        super().__init__()
        self.shards, self.seed, self.rank, self.world_size = list(shards), seed, rank, world_size
        self.buckets, self.frame_stride, self.random_start = buckets, cfg.frame_stride, cfg.random_start
        self.shuffle_buffer, self.strict, self.image_batch_ratio = cfg.shuffle_buffer, cfg.strict, cfg.image_batch_ratio
        self.min_side_px, self.max_aspect = cfg.min_side_px, cfg.max_aspect
        self.packing, self.random_crop, self.clip_start_share = cfg.packing, cfg.random_crop, cfg.clip_start_share
        assert not self.packing or buckets.tokens, "data.packing=true packs up to data.tokens_per_batch tokens a pack"
        self.latent = bool(cfg.latent_cache)
        self.min_scores = dict(cfg.min_scores or {})  # only the training readers apply it (_Reader._process)
        self.state, self.worker_offset = state or {}, worker_offset
        self.skipped_path = str(skipped_path) if skipped_path else None
        self.decoded = DecodedClips(cfg.decoded_cache_mb) if cfg.decoded_cache_mb and not self.latent else None

    # -- per-sample work (video shards) -------------------------------------------------------------------------

    def process(self, raw: dict, rng: random.Random):
        if self.latent:
            return self._process_latent(raw)
        ext, caption, info, b = self.locate(raw)
        bucket = self.buckets.buckets[b]
        # A later crop (data.clip_start_share) starts at a random time and is trained as a continuation.
        late = self.random_start and self.clip_start_share is not None and rng.random() >= self.clip_start_share
        start_rng = rng if self.random_start and (late or self.clip_start_share is None) else None
        if self.decoded is not None:
            key = f"{raw.get('__url__', '')}:{raw.get('__key__', '')}"
            frames = self.decoded.decode(key, raw[ext], ext, bucket.num_frames, self.frame_stride, start_rng, info)
        else:
            frames = decode_clip(raw[ext], ext, bucket.num_frames, self.frame_stride, start_rng, info)
        item = {"video": resize_crop(frames, bucket.height, bucket.width, rng if self.random_crop else None),
                "caption": caption}
        if self.clip_start_share is not None:
            item["late"] = late
        if self.packing:
            item["_tokens"] = self.buckets.tokens[b]
        return str(b), item

    def locate(self, raw: dict) -> tuple[str, str, dict, int]:
        """(media extension, caption, metadata, bucket index) of a raw video sample, decoding nothing when the
        shard carries .json metadata; BadSample when it would be skipped (the dry run counts these)."""
        ext, caption, info = sample_info(raw)
        if info is None:
            info = vars(read_media_info(raw[ext], ext))  # shards not written by make_shards.py: probe once here
        return ext, caption, info, self.bucket_of(ext, info)

    def bucket_of(self, ext: str, info: dict) -> int:
        """The bucket of a clip from its metadata; BadSample (too_small, extreme_aspect, too_short, no_bucket) when
        it would be skipped. The loader and the check before the first step (sora/data/preflight.py) both ask this."""
        _, h, w, _ = shape = clip_shape(ext, info)
        if min(h, w) < self.min_side_px:
            raise BadSample("too_small", f"{h}x{w} is under data.min_side_px={self.min_side_px}")
        if max(h, w) / min(h, w) > self.max_aspect:
            raise BadSample("extreme_aspect", f"{h}x{w} is beyond data.max_aspect={self.max_aspect}")
        return self.buckets.assign(*shape, self.frame_stride)

    def _process_latent(self, raw: dict):
        if "latent.npy" not in raw:
            raise BadSample("not_latent", "no .latent.npy in a latent-cache shard")
        item = {"latent": torch.from_numpy(np.load(io.BytesIO(raw["latent.npy"]), allow_pickle=False)),
                "caption": raw.get("txt", b"").decode("utf-8", errors="replace").strip()}
        for name in ("alone", "context", "mask"):
            if f"{name}.npy" in raw:
                item[name] = torch.from_numpy(np.load(io.BytesIO(raw[f"{name}.npy"]), allow_pickle=False))
        key = "x".join(map(str, item["latent"].shape))  # 2c t h w: one bucket per latent shape
        if self.packing:
            item["_tokens"] = self._latent_tokens(key)
        return key, item

    def _latent_tokens(self, key: str) -> int:
        return self.buckets.latent_tokens(tuple(map(int, key.split("x"))))

    def batch_size(self, key: str) -> int:
        if self.latent:  # key is the latent's "2c x t x h x w"
            if not self.buckets.tokens_per_batch:
                return self.buckets.batch_sizes[0]
            return max(1, self.buckets.tokens_per_batch // self._latent_tokens(key))
        return self.buckets.batch_sizes[int(key)]

    def is_image(self, key: str) -> bool:
        if key == PACKED:  # a pack mixes images and clips (choose() ignores image_batch_ratio for packs)
            return False
        if self.latent:
            return int(key.split("x")[1]) == 1
        return self.buckets.buckets[int(key)].is_image

    def collate(self, key: str, items: list[dict]) -> dict:
        batch = {"caption": [it["caption"] for it in items]}
        if "late" in items[0]:  # the crop starts after its clip's first frame (data.clip_start_share); a list, so
            batch["late"] = [it["late"] for it in items]  # it stays on the CPU: masks are drawn there
        for name in ("video", "latent", "alone", "context", "mask"):
            if name in items[0]:
                clips = [it[name] for it in items]
                # A pack keeps its clips apart (each its own shape); cached text has one length, so it stacks.
                packed = key == PACKED and name in ("video", "latent", "alone")
                batch[name] = clips if packed else torch.stack(clips)  # b ...
        return batch

    # -- the stream --------------------------------------------------------------------------------------------

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        worker = (worker + self.worker_offset) % num_workers
        reader = self.rank * num_workers + worker
        try:
            yield from _Reader(self, reader, self.world_size * num_workers, self.state.get(reader))
        except SoraError as e:
            if info is None:  # the main process: the user's one line as it is
                raise
            yield {ERROR: str(e)}  # a worker: raised by strip_bookkeeping in the main process


# ---------------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------------


def make_loader(cfg, seed: int, rank: int = 0, world_size: int = 1, buckets: BucketSet | None = None,
                state: dict | None = None, worker_offset: int = 0, skipped_path: str | None = None) -> DataLoader:
    """A DataLoader over `cfg.shards` (DataArgs) yielding one-bucket batches (see ClipStream); its batches go
    through `strip_bookkeeping`, which also raises a worker's SoraError."""
    check_min_scores_source(cfg)
    shards = expand_shards(f"{cfg.latent_cache.rstrip('/')}/latents-*.tar" if cfg.latent_cache else cfg.shards)
    check_shards(shards)
    stream = ClipStream(shards, cfg, buckets or BucketSet.from_config(cfg), seed, rank, world_size, state,
                        worker_offset, skipped_path)
    return DataLoader(stream, batch_size=None, num_workers=cfg.num_workers,
                      persistent_workers=cfg.num_workers > 0, pin_memory=torch.cuda.is_available())


def raw_samples(paths: list[str]):
    """Every raw (undecoded) sample of the shards, in shard order then file order: what the validation loss and
    the dry run read, with no shuffle and no split over readers."""
    def on_tar_error(exn):
        raise SoraError(f"a shard could not be read: {str(exn).splitlines()[0][:200]}")

    yield from wds.tarfile_to_samples(handler=on_tar_error)(iter([{"url": p} for p in paths]))


def strip_bookkeeping(batch: dict) -> tuple[dict, dict | None, dict]:
    """Split a loader batch into (data, reader position, skipped counts); a worker's error is raised here."""
    if ERROR in batch:
        raise SoraError(batch[ERROR])
    batch = dict(batch)
    return batch, batch.pop("_position", None), batch.pop("_skipped", {}) or {}
