"""The append-only JSONL manifest every curation stage writes: one line per clip, keyed by (source, start, end).

A line is written whole and flushed to disk (fsync) before the next clip's is, so a killed run leaves at most one
truncated last line; reading ignores it, and the rerun does that clip again and nothing before it. Each line names
its stage, so a manifest of another stage is refused as a stage's output (it would mix two stages) and as an input a
stage cannot take.
"""

import json
import os
from pathlib import Path

from sora.errors import SoraError

# The stages, in pipeline order, and the stages whose manifest each one reads (split reads a folder of videos).
STAGES = ("split", "score", "dedup", "filter", "caption", "export")
ACCEPTS = {
    "score": ("split", "dedup"),
    "dedup": ("split", "score", "filter"),
    "filter": ("score", "dedup", "filter"),
    "caption": ("split", "score", "dedup", "filter"),
    "export": ("split", "score", "dedup", "filter", "caption"),
}


def clip_key(record: dict) -> tuple[str, int, int]:
    """What identifies a clip in every stage: its source file and its first and one-past-last frame."""
    return record["source"], int(record["start"]), int(record["end"])


def key_name(record: dict) -> str:
    """A clip's key as one string, for logs and for naming another clip (dedup's `duplicate_of`)."""
    return f"{record['source']}:{record['start']}-{record['end']}"


def is_live(record: dict) -> bool:
    """A clip a later stage works on: not skipped (unreadable, no scene) and not dropped (filter, dedup)."""
    return not record.get("skipped") and record.get("keep", True) is not False


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------


def read_records(path: str | os.PathLike, stage: str | None = None) -> list[dict]:
    """The clips of a manifest; a last line cut short by a killed run is ignored. SoraError for any other broken
    line, for a line with no stage or key, and (given `stage`) for lines of another stage."""
    p = Path(path)
    if not p.is_file():
        raise SoraError(f"manifest {str(path)!r} is not a file")
    data = p.read_bytes()
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    records = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            if n == len(lines) and not complete:  # the half-written line of a killed run: done again on resume
                continue
            raise SoraError(f"{path}:{n}: not a JSON line: the manifest is damaged") from None
        if not isinstance(record, dict) or not {"stage", "source", "start", "end"} <= set(record):
            raise SoraError(f"{path}:{n}: not a curation manifest line (want stage, source, start, end)")
        if stage is not None and record["stage"] != stage:
            raise SoraError(f"{path} is a {record['stage']!r} manifest, not {stage!r}: give each stage its own --out")
        records.append(record)
    return records


def read_input(path: str | os.PathLike, stage: str) -> list[dict]:
    """A stage's input manifest, refused (one line) when it comes from a stage this one cannot follow."""
    records = read_records(path)
    if not records:
        raise SoraError(f"input manifest {str(path)!r} holds no clip")
    stages = sorted({r["stage"] for r in records})
    bad = [s for s in stages if s not in ACCEPTS[stage]]
    if bad:
        raise SoraError(f"{path} is a {', '.join(bad)} manifest; the {stage} stage reads the manifest of "
                        f"{' or '.join(ACCEPTS[stage])}")
    return records


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


class ManifestWriter:
    """Appends whole lines to a stage's manifest, each on disk before `write` returns. A truncated last line left
    by a killed run is cut off first, so the next line starts on a line of its own."""

    def __init__(self, path: str | os.PathLike, stage: str):
        self.path, self.stage = Path(path), stage
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)  # drop the partial line (it was ignored on reading)
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, records: list[dict]) -> None:
        """Append `records` (one source's clips: a source is written at once), stamped with this stage."""
        if not records:
            return
        text = "".join(json.dumps({**r, "stage": self.stage}, ensure_ascii=False) + "\n" for r in records)
        self.file.write(text)
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
