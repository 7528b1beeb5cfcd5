"""Video files: H.264 mp4 writing with PyAV, reading with decord. Frames are uint8 `t h w c` at the edges."""

import io
import os
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
    assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, f"want uint8 t h w 3, got {frames.dtype} {frames.shape}"
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))  # t h w 3 -> t H W 3 (H, W even)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        if generated:
            container.metadata["comment"] = GENERATED_TAG
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "fast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


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
