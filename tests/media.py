"""Real media files for tests: videos in several containers, GIFs, images, rotated and variable-frame-rate clips."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

CODECS = {"mp4": ("libx264", "yuv420p"), "mov": ("libx264", "yuv420p"), "mkv": ("libx264", "yuv420p"),
          "webm": ("libvpx-vp9", "yuv420p"), "avi": ("mpeg4", "yuv420p"), "gif": ("gif", "rgb8")}


def moving_square(num_frames: int, height: int, width: int, gray: bool = False) -> np.ndarray:
    """uint8 t h w 3: a white square moving right on black (a clip whose content a test can check)."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    side = max(2, min(height, width) // 4)
    for t in range(num_frames):
        x = (t * 2) % max(1, width - side)
        frames[t, :side, x : x + side] = 255 if gray else (255, 64, 0)
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int = 8, rotation: int = 0, pts: list[int] | None = None) -> Path:
    """Encode frames with the container's usual codec; `pts` (in 1/fps/10 units) makes a variable-rate clip."""
    ext = Path(path).suffix.lstrip(".")
    codec, pix_fmt = CODECS[ext]
    t, h, w, _ = frames.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, fps * 10)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, fps * 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def write_image(path: Path, height: int = 24, width: int = 32, gray: bool = False) -> Path:
    img = moving_square(1, height, width, gray)[0]
    Image.fromarray(img[..., 0] if gray else img).save(path)
    return Path(path)


def write_broken_folder(root: Path) -> dict:
    """A folder of every kind of input the shard writer meets, good and bad; returns the expected outcome."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    clip = moving_square(12, 32, 48)
    for ext in ("mp4", "webm", "mkv", "avi", "mov", "gif"):
        write_video(root / f"good.{ext}", clip)
    for ext in ("jpg", "png", "webp"):
        write_image(root / f"image.{ext}", 32, 48)
    write_image(root / "gray.png", 32, 32, gray=True)
    write_video(root / "gray.mp4", moving_square(12, 32, 32, gray=True))
    write_video(root / "rotated.mp4", clip, rotation=90)
    write_video(root / "vfr.mp4", clip, pts=[0, 10, 20, 25, 30, 50, 60, 65, 70, 90, 100, 105])
    (root / "sub").mkdir(exist_ok=True)
    write_video(root / "sub" / "nested.mp4", clip)
    (root / "webm_named.mp4").write_bytes((root / "good.webm").read_bytes())  # wrong extension, real video
    (root / "undecodable.mp4").write_text("this is not a video")
    good = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "zero.mp4").write_bytes(b"")
    write_video(root / "short.mp4", moving_square(2, 32, 32))
    write_image(root / "one_px_wide.png", 16, 1)
    write_image(root / "very_wide.png", 16, 4000)
    (root / "notes.doc").write_text("not media")
    for p in list(root.rglob("*")):
        if p.is_file() and p.suffix not in (".txt", ".doc"):
            p.with_suffix(".txt").write_text(f"a clip called {p.stem}")
    write_video(root / "no_caption.mp4", clip)
    write_video(root / "empty_caption.mp4", clip)
    (root / "empty_caption.txt").write_text("  \n")
    return {"written": 15, "skipped": {"empty_file": 1, "extreme_aspect": 1, "no_caption": 2, "not_media": 1,
                                       "too_short": 1, "too_small": 1, "undecodable": 2},
            "handled": {"renamed": 1, "rotated": 1, "vfr": 1, "images": 4}}


if __name__ == "__main__":
    import sys

    assert len(sys.argv) == 3 and sys.argv[1] == "broken", "usage: python -m tests.media broken DIR"
    print(write_broken_folder(Path(sys.argv[2])))
