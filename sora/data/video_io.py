"""Video files: H.264 mp4, VP9 WebM (PyAV) and GIF (Pillow) writing, reading with PyAV. Frames are uint8 `t h w c`
at the edges. A generated video's format is its file name's extension (`encode_video`, VIDEO_FORMATS)."""

import io
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from einops import rearrange

from sora.errors import SoraError

# Written into every file we generate, so that what the model makes is marked as generated.
GENERATED_TAG = "AI-generated: made by a video diffusion model trained with the sora framework"


def encode_mp4(frames: np.ndarray, fps: int, crf: int = 18, generated: bool = False) -> bytes:
    """Encode uint8 frames (t h w 3) to H.264 mp4 bytes; odd sizes are padded by one black pixel (yuv420p)."""
    _check_frames(frames)
    return _encode(frames, fps, "mp4", "libx264", {"crf": str(crf), "preset": "fast"}, generated)


def encode_webm(frames: np.ndarray, fps: int, crf: int = 20, generated: bool = False) -> bytes:
    """Encode uint8 frames (t h w 3) to VP9 WebM bytes (constant quality: crf with no bitrate cap); odd sizes are
    padded by one black pixel (yuv420p)."""
    _check_frames(frames)
    return _encode(frames, fps, "webm", "libvpx-vp9", {"crf": str(crf), "b": "0"}, generated)


def _check_frames(frames: np.ndarray) -> None:
    assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, \
        f"want uint8 t h w 3, got {frames.dtype} {frames.shape}"


def _encode(frames: np.ndarray, fps: int, container_format: str, codec: str, options: dict,
            generated: bool) -> bytes:
    buf = io.BytesIO()
    with VideoEncoder(buf, frames.shape[1], frames.shape[2], fps, container_format, codec, options,
                      generated) as encoder:
        encoder.write(frames)
    return buf.getvalue()


class VideoEncoder:
    """An mp4 / WebM encoder that takes frames a few at a time (a long video written window by window, with memory
    flat in its length); `encode_mp4` and `encode_webm` are one call of it. Odd sizes are padded by one black
    pixel (yuv420p)."""

    def __init__(self, out, height: int, width: int, fps: float, container_format: str, codec: str, options: dict,
                 generated: bool = False):
        self.height, self.width = height, width
        self.container = av.open(out, mode="w", format=container_format)
        if generated:
            self.container.metadata["comment"] = GENERATED_TAG
        # a source's own rate kept (29.97 as 30000/1001); a whole number as it is
        rate = int(fps) if float(fps).is_integer() else Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = width + width % 2, height + height % 2
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264" and min(height, width) < 64:
            # x264's macroblock-tree rate control makes other bytes from the same frames now and then on frames this
            # small (1 to 9 of 136 re-encodes of 32x32 clips differ; at 40 to 256 px none: PyAV 18.1, FFmpeg 8.1,
            # 2-core AMD EPYC), and a dataset written twice from one config must be the same bytes. Off, they are
            # (0 of 7 x 136); it costs 5% more bytes at the same crf.
            options = {**options, "x264-params": "mbtree=0"}
        self.stream.options = options

    @classmethod
    def of(cls, out, ext: str, height: int, width: int, fps: int, generated: bool = False) -> "VideoEncoder":
        """The encoder `encode_video` uses for `ext` (.mp4 or .webm)."""
        if ext == ".mp4":
            return cls(out, height, width, fps, "mp4", "libx264", {"crf": "18", "preset": "fast"}, generated)
        assert ext == ".webm", f"no streaming encoder for {ext}"
        return cls(out, height, width, fps, "webm", "libvpx-vp9", {"crf": "20", "b": "0"}, generated)

    def write(self, frames: np.ndarray) -> None:
        """uint8 t h w 3 frames, the next ones of the video."""
        assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, \
            f"want uint8 t h w 3, got {frames.dtype} {frames.shape}"
        assert frames.shape[1:3] == (self.height, self.width), f"frames of {frames.shape[1:3]} in a video of " \
            f"{(self.height, self.width)}"
        h, w = self.height, self.width
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))  # t h w 3 -> t H W 3 (H, W even)
        for frame in frames:
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> "VideoEncoder":
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.close()
        else:
            self.container.close()


def encode_gif(frames: np.ndarray, fps: int, generated: bool = False) -> bytes:
    """Encode uint8 frames (t h w 3) to an animated GIF that loops: each frame its own 256-colour palette (median
    cut, no dithering: the built-in dataset's few flat colours come through exactly), GIF's 10 ms time steps."""
    from PIL import Image

    images = [Image.fromarray(f).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
              for f in frames]
    buf = io.BytesIO()
    extra = {"comment": GENERATED_TAG.encode()} if generated else {}
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0,
                   **extra)
    return buf.getvalue()


# The formats a generated video can be written in, by file name extension -> (encoder, the MIME type C2PA knows).
VIDEO_FORMATS = {
    ".mp4": (encode_mp4, "video/mp4"),
    ".webm": (encode_webm, "video/webm"),
    ".gif": (encode_gif, "image/gif"),
}


def video_format(path: str | os.PathLike, key: str = "out") -> str:
    """The extension of a path a video will be written to (".mp4", ".gif", ".webm"); SoraError naming `key` for any
    other, so that a file's name never says another format than its bytes."""
    ext = Path(path).suffix.lower()
    if ext not in VIDEO_FORMATS:
        raise SoraError(f"{key}={str(path)!r}: a video file ends in {', '.join(VIDEO_FORMATS)} (the extension sets the "
                        "format)")
    return ext


def encode_video(frames: np.ndarray, fps: int, ext: str, generated: bool = False) -> bytes:
    """uint8 t h w 3 -> the bytes of a file of the format `ext` names (a key of VIDEO_FORMATS)."""
    return VIDEO_FORMATS[ext][0](frames, fps, generated=generated)


def check_writable(path: str | os.PathLike, key: str) -> None:
    """SoraError naming `key` unless a file can be written at `path`: not an existing folder, and its nearest
    existing parent a folder this process may write in (missing folders are made when the file is written)."""
    given, path = str(path), Path(path)
    if not given.strip():
        raise SoraError(f"{key}={given!r} is empty; give a file name")
    if path.is_dir():
        raise SoraError(f"{key}={given!r} is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SoraError(f"{key}={given!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SoraError(f"{key}={given!r}: cannot write in {str(parent)!r} (permission denied)")


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """c t h w in [-1, 1] -> uint8 t h w c."""
    assert video.ndim == 4 and video.shape[0] == 3, f"want c t h w with c=3, got {tuple(video.shape)}"
    video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(video, "c t h w -> t h w c").cpu().numpy()


def write_mp4(path: str | os.PathLike, video: torch.Tensor, fps: int) -> None:
    """Write one generated video (c t h w in [-1, 1]) atomically, tagged as generated."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_mp4(to_uint8_frames(video), fps, generated=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """All frames of a video file as uint8 t h w 3, and its fps (PyAV: it reads the tiny sizes decord rejects)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
            fps = float(stream.average_rate or 0)
    except (av.FFmpegError, IndexError, ValueError, OSError) as e:
        raise SoraError(f"cannot read video {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    return frames, fps
