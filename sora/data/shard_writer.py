"""Folders of videos and images (or a CSV/JSONL manifest) -> webdataset shards of original bytes + probed metadata.

Each sample is `KEY.<ext>` (the file's own bytes; `ext` from what the container really is, so a webm named
.mp4 is stored as .webm), `KEY.txt` (caption) and `KEY.json` (fps, num_frames, height, width, duration_s,
rotation, vfr, is_image, source path, and any extra manifest fields). Files are probed by several worker
processes; what cannot be used is skipped, counted by reason and named in the log and in summary.json.
"""

import csv
import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import webdataset as wds

from sora.data.decode import MEDIA_EXTENSIONS, BadSample, read_media_info
from sora.errors import SoraError

log = logging.getLogger(__name__)

# What FFmpeg calls a container -> the extension we store it under.
FORMAT_EXT = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "mkv", "avi": "avi", "gif": "gif",
              "png_pipe": "png", "jpeg_pipe": "jpg", "webp_pipe": "webp", "image2": "jpg"}


@dataclass
class Source:
    path: str
    caption: str | None
    extra: dict = field(default_factory=dict)


@dataclass
class Filters:
    min_frames: int = 1
    min_duration_s: float = 0.0
    min_side_px: int = 8
    max_aspect: float = 6.0
    allow_images: bool = True


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------


def scan_folder(root: str) -> tuple[list[Source], Counter]:
    """Media files under `root` with a sidecar caption `NAME.txt`; other files are counted as not_media."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise SoraError(f"{root!r} is not a folder")
    sources, skipped = [], Counter()
    for path in sorted(p for p in root_path.rglob("*") if p.is_file()):
        ext = path.suffix.lower().lstrip(".")
        if ext == "txt":
            continue
        if ext not in MEDIA_EXTENSIONS:
            skipped["not_media"] += 1
            log.warning("skipping %s: not_media: extension .%s", path, ext)
            continue
        sidecar = path.with_suffix(".txt")
        caption = sidecar.read_text(encoding="utf-8", errors="replace").strip() if sidecar.is_file() else None
        sources.append(Source(str(path), caption))
    return sources, skipped


def read_manifest(path: str) -> list[Source]:
    """A CSV (header row) or JSONL manifest with `path` and `caption` columns; others go into the json."""
    p = Path(path)
    if not p.is_file():
        raise SoraError(f"manifest {path!r} is not a file")
    if p.suffix.lower() == ".csv":
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif p.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise SoraError(f"{path}:{n}: not a JSON object ({e})") from None
                if not isinstance(row, dict):
                    raise SoraError(f"{path}:{n}: not a JSON object (a {type(row).__name__})")
                rows.append(row)
    else:
        raise SoraError(f"manifest {path!r}: use .csv or .jsonl")
    for n, row in enumerate(rows, 1):
        if "path" not in row:
            raise SoraError(f"manifest {path!r}: row {n} has no 'path' (columns: {', '.join(row) or 'none'})")
    sources = []
    for row in rows:
        file = row.pop("path")
        file = file if os.path.isabs(file) else str(p.parent / file)
        sources.append(Source(file, (row.pop("caption", None) or "").strip() or None, row))
    return sources


# ---------------------------------------------------------------------------------------------------------------
# Probing (in worker processes)
# ---------------------------------------------------------------------------------------------------------------


def _container_ext(container: str, given: str) -> str:
    """The extension to store a file under: what its container really is, or the given one if that agrees."""
    ext = FORMAT_EXT.get(container, given)
    same_family = [{"mp4", "mov"}, {"mkv", "webm"}]  # one demuxer each: the given name is right
    return given if any({ext, given} <= f for f in same_family) else ext


def read_source_info(args: tuple[Source, Filters]) -> tuple[Source, bytes | None, dict | None, str, str]:
    """(source, bytes, metadata, skip reason or '', detail) for one file."""
    src, flt = args
    try:
        if src.caption is None or not src.caption.strip():
            raise BadSample("no_caption", "missing or empty caption")
        given = Path(src.path).suffix.lower().lstrip(".")
        given = "jpg" if given == "jpeg" else given
        try:
            data = Path(src.path).read_bytes()
        except OSError as e:
            raise BadSample("unreadable", str(e)) from None
        info = read_media_info(data, given)
        ext = _container_ext(info.container, given)
        if info.is_image and not flt.allow_images:
            raise BadSample("image", "images are filtered out")
        if not info.is_image and info.num_frames < flt.min_frames:
            raise BadSample("too_short", f"{info.num_frames} frames < {flt.min_frames}")
        if not info.is_image and info.duration_s < flt.min_duration_s:
            raise BadSample("too_short", f"{info.duration_s:.2f} s < {flt.min_duration_s} s")
        if min(info.height, info.width) < flt.min_side_px:
            raise BadSample("too_small", f"{info.height}x{info.width} < {flt.min_side_px} px")
        if max(info.height, info.width) / min(info.height, info.width) > flt.max_aspect:
            raise BadSample("extreme_aspect", f"{info.height}x{info.width} beyond {flt.max_aspect}:1")
        meta = {**asdict(info), "source": src.path, "ext": ext, "renamed": ext != given, **src.extra}
        return src, data, meta, "", ""
    except BadSample as e:
        return src, None, None, e.reason, e.detail


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def check_output_dir(out_dir: str, prefix: str) -> Path:
    """Refuse to mix a new set of shards with an old one."""
    out = Path(out_dir)
    if any(out.glob(f"{prefix}-*.tar")):
        raise SoraError(f"{out} already holds {prefix}-*.tar shards: remove them or choose another --out")
    return out


def write_shards(sources: list[Source], out_dir: str, samples_per_shard: int = 1000, max_shard_mb: float = 1024,
                 workers: int = 4, filters: Filters | None = None, prefix: str = "shard",
                 skipped: Counter | None = None) -> dict:
    """Probe `sources` in `workers` processes and write OUT/PREFIX-NNNNNN.tar; returns (and saves) the summary."""
    assert samples_per_shard >= 1 and max_shard_mb > 0, "samples_per_shard and max_shard_mb must be positive"
    out = check_output_dir(out_dir, prefix)
    out.mkdir(parents=True, exist_ok=True)
    flt, skipped, notes = filters or Filters(), Counter(skipped or {}), Counter()
    t0, written, nbytes = time.time(), 0, 0
    jobs = [(s, flt) for s in sources]
    sink = wds.ShardWriter(str(out / f"{prefix}-%06d.tar"), maxcount=samples_per_shard,
                           maxsize=int(max_shard_mb * 2**20), verbose=0)
    ctx = mp.get_context("spawn") if workers > 1 else None
    pool = ctx.Pool(workers) if ctx else None
    try:
        results = pool.imap(read_source_info, jobs, chunksize=4) if pool else map(read_source_info, jobs)
        for src, data, meta, reason, detail in results:
            if reason:
                skipped[reason] += 1
                log.warning("skipping %s: %s: %s", src.path, reason, detail)
                continue
            for note in ("renamed", "vfr"):
                notes[note] += bool(meta[note])
            notes["rotated"] += meta["rotation"] != 0
            notes["images"] += meta["is_image"]
            sink.write({"__key__": f"{written:09d}", meta["ext"]: data, "txt": src.caption, "json": json.dumps(meta)})
            written, nbytes = written + 1, nbytes + len(data)
    finally:
        if pool:
            pool.close()
            pool.join()
        sink.close()
    shards = sorted(str(p) for p in out.glob(f"{prefix}-*.tar"))
    summary = {"written": written, "skipped": dict(sorted(skipped.items())), "skipped_total": sum(skipped.values()),
               "handled": dict(sorted(notes.items())), "shards": len(shards), "bytes": nbytes,
               "pattern": str(out / f"{prefix}-{{{0:06d}..{max(0, len(shards) - 1):06d}}}.tar"),
               "seconds": round(time.time() - t0, 2)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary

