"""The export stage: each kept, captioned clip cut into its own mp4, and a manifest that `data/make_shards.py`
reads as it is (its JSONL input: `path` and `caption`, every other field into the sample's json).

    python data/curate.py export caption.jsonl --out clips/manifest.jsonl
    python data/make_shards.py clips/manifest.jsonl --out shards/

make_shards takes whole files, so the clips are cut here: decoded and re-encoded frame by frame (H.264, crf 18,
the settings of the project's encoder) at the source's frame rate, under clips/ beside the manifest. A line's json
then carries the scores, the source file and the clip's frames in it (`source`, `start`, `end`, `start_s`,
`end_s`), which the sample's json keeps; the curation's own working fields (hashes, embeddings) are left out.
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from sora.data.video_io import VideoEncoder
from sora.settings import Settings, setting

# The curation's working fields, and what make_shards probes from the clip itself (a manifest's extra fields would
# override its probed metadata).
DROPPED_FIELDS = ("phash", "clip_embedding", "keep", "dropped_by", "stage", "of", "detail", "fps", "num_frames",
                  "height", "width", "duration_s")


@dataclass
class ExportArgs(Settings):
    crf: int = setting(18, ge=0, le=51)  # H.264 quality of the cut clips (lower is better, 18 looks lossless)
    require_caption: bool = True  # a clip with no caption is skipped (make_shards would skip it anyway)


def clip_name(record: dict) -> str:
    """A file name that says where the clip came from: STEM_START-END.mp4 (frames), unique per source and span."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(record["source"]).stem)[:80]
    digest = hashlib.sha1(record["source"].encode()).hexdigest()[:8]  # two sources with one stem stay apart
    return f"{stem}_{digest}_{record['start']}-{record['end']}.mp4"


class ClipWriter:
    """One clip's H.264 mp4 (video_io's VideoEncoder at crf, preset fast), encoded frame by frame as the source is
    decoded, so no clip is held in memory whole; written under a temporary name and renamed when whole."""

    def __init__(self, path: Path, fps: float, height: int, width: int, crf: int):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.encoder = VideoEncoder(str(self.tmp), height, width, fps, "mp4", "libx264",
                                    {"crf": str(crf), "preset": "fast"})

    def add(self, frame: np.ndarray) -> None:
        """uint8 h w 3."""
        self.encoder.write(frame[None])  # 1 h w 3

    def close(self) -> None:
        self.encoder.close()
        self.tmp.replace(self.path)  # a killed run leaves no half-written clip under the final name


@dataclass
class Exporter:
    """Cuts one source's clips in one decoding pass."""

    args: ExportArgs
    out_dir: str = "."

    def setup(self, device: str) -> None:
        Path(self.out_dir, "clips").mkdir(parents=True, exist_ok=True)

    def run(self, source: str, records: list[dict]) -> list[dict]:
        need = [r for r in records if r.get("caption") or not self.args.require_caption]
        out = [{**r, "skipped": "no_caption", "detail": "run the caption stage first"} for r in records
               if r not in need]
        if not need:
            return out
        written, open_clips = [], {}
        by_start = {r["start"]: r for r in need}
        last = max(r["end"] for r in need)
        try:
            with av.open(source) as container:
                stream = container.streams.video[0]
                for n, frame in enumerate(container.decode(stream)):
                    if n in by_start:
                        r = by_start[n]
                        name = Path("clips") / clip_name(r)
                        open_clips[n] = (r, name, ClipWriter(Path(self.out_dir) / name, r["fps"], frame.height,
                                                             frame.width, self.args.crf))
                    if open_clips:
                        image = frame.to_ndarray(format="rgb24")  # h w 3
                        for start, (r, name, writer) in list(open_clips.items()):
                            writer.add(image)
                            if n + 1 == r["end"]:
                                writer.close()
                                written.append((r, name))
                                del open_clips[start]
                    if n + 1 >= last:
                        break
        except (av.FFmpegError, IndexError, ValueError, OSError) as e:
            detail = (str(e).splitlines() or [type(e).__name__])[0][:200]
            done = {id(r) for r, _ in written}
            return out + [self._line(r, name) for r, name in written] + \
                [{**r, "skipped": "unreadable", "detail": detail} for r in need if id(r) not in done]
        done = {id(r) for r, _ in written}
        out += [{**r, "skipped": "unreadable", "detail": "the file ends before the clip does"} for r in need
                if id(r) not in done]
        return out + [self._line(r, name) for r, name in written]

    def _line(self, r: dict, name: Path) -> dict:
        line = {k: v for k, v in r.items() if k not in DROPPED_FIELDS}
        return {**line, "path": str(name), "caption": r.get("caption", "")}
