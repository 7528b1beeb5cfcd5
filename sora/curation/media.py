"""Frames of clips, read from their source once: a stage asks for frame indices of several clips of one file and
decodes the file in one pass (PyAV), converting only the frames asked for, at a bounded size."""

import av
import numpy as np

from sora.data.decode import BadSample

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov", "m4v", "mpg", "mpeg", "ts", "flv", "gif")


def _fit(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(h, w) scaled so the longer side is at most max_side (even sizes, at least 2)."""
    if not max_side or max(height, width) <= max_side:
        return height, width
    s = max_side / max(height, width)
    return max(2, round(height * s / 2) * 2), max(2, round(width * s / 2) * 2)


def read_frames(path: str, wanted, max_side: int | None = None, size: tuple[int, int] | None = None
                ) -> tuple[dict[int, np.ndarray], dict]:
    """{index: uint8 h w 3} for each index in `wanted` (all frames if None) that the file has, and the file's
    {fps, num_frames (decoded so far), height, width}. BadSample("unreadable" / "empty") for a file PyAV cannot
    decode or that has no video frame. `size` (h, w) resizes exactly; else `max_side` bounds the longer side."""
    wanted = None if wanted is None else set(int(i) for i in wanted)
    last = None if wanted is None else (max(wanted) if wanted else -1)
    out, n = {}, 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadSample("unreadable", "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            height, width = stream.codec_context.height, stream.codec_context.width
            h, w = size or _fit(height, width, max_side)
            for frame in container.decode(stream):
                if wanted is None or n in wanted:
                    out[n] = frame.to_ndarray(width=w, height=h, format="rgb24")  # h w 3
                n += 1
                if last is not None and n > last:
                    break
    except BadSample:
        raise
    except (av.FFmpegError, IndexError, ValueError, OSError, EOFError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not out and n == 0:
            raise BadSample("unreadable", detail[:200]) from None
        # a file damaged past some point: the frames before it are still good
    if n == 0:
        raise BadSample("empty", "no video frame")
    return out, {"fps": fps, "num_frames": n, "height": height, "width": width}


def sample_indices(start: int, end: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over [start, end), each at the middle of its part (fewer if short)."""
    length = end - start
    count = max(1, min(count, length))
    return [start + int((i + 0.5) * length / count) for i in range(count)]


def clip_frames(path: str, clips: list[tuple[int, int]], indices_of, max_side: int | None = None
                ) -> dict[tuple[int, int], np.ndarray]:
    """{(start, end): uint8 k h w 3} for each clip, its frames at `indices_of(start, end)`, in one pass over the
    file. A clip whose frames are not all in the file is left out (the caller counts it as unreadable)."""
    want = {c: indices_of(*c) for c in clips}
    frames, _ = read_frames(path, set(i for idx in want.values() for i in idx), max_side)
    out = {}
    for c, idx in want.items():
        if all(i in frames for i in idx):
            out[c] = np.stack([frames[i] for i in idx])  # k h w 3
    return out


def map_clip_frames(source: str, records: list[dict], indices_of, max_side: int | None, fn) -> list[dict]:
    """fn(record, frames) for each clip record of `source`, its frames decoded in one pass (clip_frames); a record
    whose frames cannot be read comes back with `skipped` and `detail` instead."""
    clips = [(r["start"], r["end"]) for r in records]
    try:
        frames = clip_frames(source, clips, indices_of, max_side)
    except BadSample as e:
        return [{**r, "skipped": e.reason, "detail": e.detail} for r in records]
    return [fn(r, frames[c]) if c in frames else {**r, "skipped": "unreadable",
                                                  "detail": "the file ends before the clip does"}
            for r, c in zip(records, clips)]
