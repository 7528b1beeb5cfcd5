"""Before the first step: can the shards fill every bucket? Answered from the shards' .json metadata, nothing decoded.

`survey` reads each shard's tar headers and its samples' small members (.json, .txt), never the media bytes, and
puts every clip through the loader's own rules (`sample_info`, then `ClipStream.bucket_of`: data.min_side_px,
data.max_aspect, then `BucketSet.assign`'s aspect and length rule), so this check and the loader agree on every
clip. `empty_bucket` says, in one line, which bucket no clip reaches and why, from what the data has ("clips have
16 frames at data.frame_stride=2; the bucket needs 17"). `preflight` is what a run calls: it stops with that line,
or, when it cannot be sure, logs it. The dry run (sora/training/dry_run.py) counts with `survey` too, reading
everything and probing clips that carry no metadata.

How much a run reads: the first SAMPLES_PER_SHARD samples of at most MAX_SHARDS shards, spread evenly over the
list. Python's tarfile parses about 5,000 samples' headers a second (0.43 s for the built-in dataset's 2,048
clips, 6,144 members, on a shared 2-core CPU), so the cap keeps the check to a few seconds however large the
dataset; the built-in dataset (8 shards of 256) and anything up to 32 shards of 512 samples are read whole. Since
a rare clip may sit in the unread part, a bucket that a partial read leaves empty is logged, not a stop; no clip
for any bucket stops the run either way.

Shards without .json metadata (not written by data/make_shards.py or the built-in dataset's writer) get one note
and no check: knowing their clips' lengths means decoding them.

With data.min_scores, every sample read is first put through the loader's score filter (`check_scores`): those it
drops are counted apart (`Survey.dropped`) and fill no bucket, and a sample without a named score stops the run
with one line naming the score and the shard, before training would skip it, or every sample, as `no_score`.
"""

import logging
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field, replace

from webdataset.tariterators import base_plus_ext

from sora.data.buckets import Bucket, BucketSet
from sora.data.decode import BadSample, frames_needed, read_media_info
from sora.data.stream import (
    ClipStream,
    Dropped,
    MissingScore,
    check_min_scores_source,
    check_scores,
    clip_shape,
    expand_shards,
    sample_info,
    strict_error,
)
from sora.errors import SoraError

log = logging.getLogger(__name__)

SAMPLES_PER_SHARD = 512
MAX_SHARDS = 32
EXAMPLES = 3  # skipped samples named per reason
SIZE_REASONS = ("too_small", "extreme_aspect")  # clips the buckets never see
_WDS_META = re.compile(r"__[^/]*__($|/)")  # files webdataset skips (tarfile_to_samples' skip_meta)

# ---------------------------------------------------------------------------------------------------------------
# Reading metadata
# ---------------------------------------------------------------------------------------------------------------


def read_samples(path: str, limit: int | None = None, media: bool = False):
    """A shard's samples grouped as webdataset groups them ({"__key__", "__url__", ext: bytes}), with the .json and
    .txt members read and media members None unless `media`; at most `limit` samples. Returns (as the generator's
    value) True when the shard was read to its end."""
    current, count = None, 0
    with tarfile.open(path, "r:") as tar:  # seekable: a member's data is skipped without reading it
        while (member := tar.next()) is not None:
            if not member.isreg() or _WDS_META.match(member.name):
                continue
            key, ext = base_plus_ext(member.name)
            if key is None:
                continue
            if current is None or key != current["__key__"]:
                if current is not None:
                    yield current
                    count += 1
                    if limit is not None and count >= limit:
                        return False
                current = {"__key__": key, "__url__": path}
                tar.members = []  # keep memory flat over a large shard
            ext = ext.lower()
            current[ext] = tar.extractfile(member).read() if media or ext in ("json", "txt") else None
    if current is not None:
        yield current
    return True


# ---------------------------------------------------------------------------------------------------------------
# Counting clips per bucket
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Survey:
    """What the shards' metadata says about the buckets (see `survey`)."""

    shards_total: int
    shards_read: int = 0
    complete: bool = True  # every sample of every shard was read
    samples: int = 0
    clips: Counter = field(default_factory=Counter)  # bucket index -> clips it takes
    skipped: Counter = field(default_factory=Counter)  # reason -> samples no bucket takes
    examples: dict = field(default_factory=dict)  # reason -> the first few "shard:key: detail"
    unmeasured: int = 0  # samples without .json metadata (their media not read)
    video_frames: Counter = field(default_factory=Counter)  # frames -> videos of a usable size and aspect
    images: int = 0  # images of a usable size and aspect
    dropped: Counter = field(default_factory=Counter)  # score name -> samples below its data.min_scores minimum

    def describe(self, limit: int | None = None) -> str:
        read = f"{self.samples} sample(s) read from {self.shards_read} of {self.shards_total} shard(s)"
        if not self.complete and limit is not None:
            read += f", at most {limit} of each"
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        unmeasured = f"; {self.unmeasured} without .json metadata" if self.unmeasured else ""
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items()))
        dropped = f"; dropped below data.min_scores: {dropped}" if dropped else ""
        return f"{read}; skipped: {skipped}{unmeasured}{dropped}"


def _spread(shards: list[str], at_most: int | None) -> list[str]:
    """`at_most` shards spread evenly over the list (all of them when there are not more)."""
    if at_most is None or len(shards) <= at_most:
        return list(shards)
    return [shards[i * len(shards) // at_most] for i in range(at_most)]


def survey(stream: ClipStream, samples_per_shard: int | None = SAMPLES_PER_SHARD,
           max_shards: int | None = MAX_SHARDS, read_media: bool = False) -> Survey:
    """Clips per bucket and skipped samples per reason of `stream`'s shards, by the loader's rules, from metadata
    (`read_media`: clips without it are read for their media information); None limits read everything. With
    data.strict=true the first bad sample stops it as it would stop the loader."""
    shards = _spread(stream.shards, max_shards)
    s = Survey(shards_total=len(stream.shards), complete=len(shards) == len(stream.shards))

    def skip(reason: str, where: str, detail: str) -> None:
        if stream.strict:
            raise strict_error(where, reason, detail)
        s.skipped[reason] += 1
        if len(s.examples.setdefault(reason, [])) < EXAMPLES:
            s.examples[reason].append(f"{where}: {detail}")

    for path in shards:
        s.shards_read += 1
        samples = read_samples(path, samples_per_shard, read_media)
        try:
            while True:
                raw = next(samples)
                s.samples += 1
                _count(stream, raw, s, skip, read_media)
        except StopIteration as end:
            s.complete &= bool(end.value)
        except (OSError, tarfile.TarError, EOFError) as e:
            skip("bad_shard", path, str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
    return s


def _count(stream: ClipStream, raw: dict, s: Survey, skip, read_media: bool) -> None:
    where = f"{raw['__url__']}:{raw['__key__']}"
    if stream.min_scores:
        try:
            check_scores(raw, stream.min_scores)
        except Dropped as e:
            s.dropped[e.reason.split(".", 1)[1]] += 1
            return
        except MissingScore as e:
            raise SoraError(f"data.min_scores.{e.score}: shard {raw['__url__']!r} has a sample without that score "
                            f"({raw['__key__']}: {e.detail}); data/curate.py's score stage writes the scores "
                            "(docs/CURATION.md)") from None
    try:
        ext, _, info = sample_info(raw)
        if info is None:
            if not read_media:
                s.unmeasured += 1
                return
            info = vars(read_media_info(raw[ext], ext))
        try:
            b = stream.bucket_of(ext, info)
        except BadSample as e:
            if e.reason not in SIZE_REASONS:
                _record_shape(s, ext, info)
            raise
        _record_shape(s, ext, info)
        s.clips[b] += 1
    except BadSample as e:
        skip(e.reason, where, e.detail)


def _record_shape(s: Survey, ext: str, info: dict) -> None:
    frames, _, _, is_image = clip_shape(ext, info)
    if is_image:
        s.images += 1
    else:
        s.video_frames[frames] += 1


# ---------------------------------------------------------------------------------------------------------------
# Buckets no clip reaches
# ---------------------------------------------------------------------------------------------------------------


def buckets_key(data) -> str:
    """The settings that name the buckets."""
    return "data.buckets" if data.buckets else "data.num_frames, data.height, data.width"


def _why_empty(s: Survey, b: Bucket, stride: int) -> str:
    """What the data has that keeps bucket `b` empty."""
    if s.dropped and not s.images and not s.video_frames:
        return f"data.min_scores drops every clip read ({', '.join(f'{k}={v}' for k, v in sorted(s.dropped.items()))})"
    if b.is_image:
        if not s.images:
            return "the data has no images of a usable size (a bucket of 1 frame takes images)"
        return f"its {s.images} image(s) go to buckets nearer their aspect ratio and size"
    if not s.video_frames:
        return "the data has no video clips of a usable size and aspect ratio"
    need, longest = frames_needed(b.num_frames, stride), max(s.video_frames)
    if longest < need:
        have = f"clips have {longest} frames" if len(s.video_frames) == 1 else f"the longest clip has {longest} frames"
        return f"{have} at data.frame_stride={stride}; the bucket needs {need}"
    fit = sum(n for frames, n in s.video_frames.items() if frames >= need)
    return f"the {fit} clip(s) long enough for it go to buckets nearer their aspect ratio, or longer ones"


def empty_bucket(s: Survey, buckets: BucketSet, data, source: str, limit: int | None = None) -> str | None:
    """One line naming the first bucket no clip from `source` (e.g. "data.shards='a-*.tar'") reaches and why, or
    None when every bucket gets clips."""
    empty = [i for i in range(len(buckets.buckets)) if not s.clips.get(i)]
    if not empty:
        return None
    b = buckets.buckets[empty[0]]
    line = (f"{buckets_key(data)}: bucket {[b.num_frames, b.height, b.width]} (frames, height, width) receives no "
            f"clip from {source}: {_why_empty(s, b, data.frame_stride)}")
    if len(empty) > 1:
        line += f" ({len(empty) - 1} more bucket(s) receive none)"
    examples = [e for reason in sorted(s.skipped, key=s.skipped.get, reverse=True)[:1] for e in s.examples[reason][:1]]
    return f"{line} ({s.describe(limit)}{'; e.g. ' + examples[0] if examples else ''})"


# ---------------------------------------------------------------------------------------------------------------
# The run's check
# ---------------------------------------------------------------------------------------------------------------


def _rules_of(data, shards: list[str], buckets: BucketSet, strict: bool, scores: bool = True) -> ClipStream:
    """A stream that only answers which bucket a clip goes to (packing and latent caches do not change that), and,
    with `scores`, which samples data.min_scores drops (the held-out shards are read unfiltered)."""
    return ClipStream(shards, replace(data, packing=False, latent_cache=None, strict=strict,
                                      min_scores=data.min_scores if scores else {}), buckets)


def preflight(data, buckets: BucketSet | None = None) -> Survey | None:
    """Before the first step, on `data` (DataArgs, paths resolved): stop with one line when a bucket of
    data.shards, or the whole run, would get no clip, or when data.eval_shards hold no clip for any bucket.
    None for a latent cache (its latents were cut to their buckets when it was written)."""
    check_min_scores_source(data)
    if data.latent_cache:
        return None
    buckets = buckets or BucketSet.from_config(data)
    s = survey(_rules_of(data, expand_shards(data.shards), buckets, data.strict), SAMPLES_PER_SHARD, MAX_SHARDS)
    if s.samples and s.unmeasured == s.samples:
        log.info("data: the shards of data.shards=%r carry no .json metadata (data/make_shards.py writes it): which "
                 "buckets their clips fill is not checked before the first step", data.shards)
        return s
    problem = empty_bucket(s, buckets, data, f"data.shards={data.shards!r}", SAMPLES_PER_SHARD)
    if problem:
        anything = sum(s.clips.values()) > 0
        if not s.unmeasured and (s.complete or not anything):
            raise SoraError(problem)
        log.warning("data: %s; not certain (%s), so training starts", problem,
                    "part of the data was read" if not s.complete else "some clips carry no .json metadata")
    per_bucket = ", ".join(f"{[b.num_frames, b.height, b.width]}: {s.clips.get(i, 0)}"
                           for i, b in enumerate(buckets.buckets))
    log.info("data: clips per bucket %s (%s)", per_bucket, s.describe(SAMPLES_PER_SHARD))
    if data.eval_shards:  # read as validation reads them: bad samples skipped, whatever data.strict says
        held_out = survey(_rules_of(data, expand_shards(data.eval_shards, key="data.eval_shards"), buckets, False,
                                    scores=False), SAMPLES_PER_SHARD, MAX_SHARDS)
        if not sum(held_out.clips.values()) and not held_out.unmeasured:
            raise SoraError(empty_bucket(held_out, buckets, data, f"data.eval_shards={data.eval_shards!r}",
                                         SAMPLES_PER_SHARD))
    return s
