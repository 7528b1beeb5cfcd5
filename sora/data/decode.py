"""Media bytes -> uint8 frames `t h w c`, and probing of their metadata, for every format the data path accepts.

decord (fast, seekable) decodes ordinary videos. PyAV decodes what decord cannot: GIFs (decord fails to
measure their duration), still images (jpg/png/webp become 1-frame videos), and videos with a display rotation
(decord 0.6 returns wrongly shaped frames for those, so the rotation is applied here after PyAV decodes),
and any stream decord fails on, before a sample is called undecodable. Where decord is not installed (it has
no wheels for macOS or aarch64), PyAV decodes everything, with one warning: slower on long videos, same frames.
Frames are picked by time, not index, so variable-frame-rate clips play at the rate they were shot.
Every failure raises `BadSample(reason, detail)`; the loader counts skips by reason.
"""

import importlib.util
import io
import logging
import random
from dataclasses import dataclass

import numpy as np
import torch

# Imported only when first used: decord ships its own FFmpeg libraries, and loading them before PyAV has
# encoded anything breaks PyAV's VP9 encoder in the same process (avcodec_open2 returns EINVAL).
HAVE_DECORD = importlib.util.find_spec("decord") is not None

log = logging.getLogger(__name__)
_warned_no_decord = False

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov", "gif")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS


class BadSample(Exception):
    """A sample that cannot be used; `reason` is a short fixed word (counted), `detail` says what is wrong."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class MediaInfo:
    """What probing a file finds; stored as the `.json` of a shard sample by data/make_shards.py."""

    num_frames: int
    fps: float
    height: int  # as displayed (after rotation)
    width: int
    duration_s: float
    rotation: int = 0  # degrees counter-clockwise to apply to decoded frames (display matrix)
    vfr: bool = False  # variable frame rate: frame timestamps are not evenly spaced
    is_image: bool = False
    container: str = ""  # FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"


# ---------------------------------------------------------------------------------------------------------------
# Probing
# ---------------------------------------------------------------------------------------------------------------


def _av_open(data: bytes):
    import av

    if not data:
        raise BadSample("empty_file", "zero bytes")
    try:
        return av.open(io.BytesIO(data))
    except Exception as e:  # PyAV raises InvalidDataError and others for bytes that are not media
        raise BadSample("undecodable", str(e).splitlines()[0][:200]) from None


def read_media_info(data: bytes, ext: str) -> MediaInfo:
    """Read the container once (demux every packet, decode the first frame) and report its metadata."""
    ext = ext.lower()
    if ext not in MEDIA_EXTENSIONS:
        raise BadSample("not_media", f"extension .{ext} is none of {', '.join(MEDIA_EXTENSIONS)}")
    with _av_open(data) as container:
        if not container.streams.video:
            raise BadSample("undecodable", "no video stream")
        stream = container.streams.video[0]
        try:
            pts, first = [], None
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size > 0:
                    pts.append(packet.pts)
                if first is None and packet.size > 0:
                    frames = packet.decode()
                    first = frames[0] if frames else None
            if first is None:  # some decoders only return a frame when flushed
                frames = stream.codec_context.decode(None)
                first = frames[0] if frames else None
        except Exception as e:
            raise BadSample("undecodable", str(e).splitlines()[0][:200]) from None
        if first is None or not pts:
            raise BadSample("undecodable", "no decodable frame")
        rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
        height, width = first.height, first.width
        if rotation in (90, 270):
            height, width = width, height
        is_image = ext in IMAGE_EXTENSIONS or len(pts) == 1
        times = np.sort(np.asarray(pts, dtype=np.float64)) * float(stream.time_base or 0)
        steps = np.diff(times)
        if len(pts) > 1 and steps.size and steps.mean() > 0:
            duration = float(times[-1] - times[0] + steps.mean())
            fps = (len(pts)) / duration
            vfr = bool(steps.std() > 0.1 * steps.mean())
        else:
            rate = stream.average_rate or stream.guessed_rate
            fps, duration, vfr = float(rate) if rate else 0.0, 0.0, False
        return MediaInfo(len(pts), round(fps, 3), height, width, round(duration, 3), rotation, vfr, is_image,
                         container.format.name)


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class WholeClip:
    """Every frame of a video as decord decodes it, kept so that later clips of it are picked without decoding."""

    frames: np.ndarray  # n h w c uint8
    times_s: np.ndarray  # n: presentation time of each frame
    avg_fps: float


def frame_times(num_frames: int, frame_stride: int, fps: float, available_s: float,
                rng: random.Random | None) -> np.ndarray:
    """Timestamps (s) of `num_frames` frames `frame_stride` source frames apart, from a random start if rng is given."""
    span_s = (num_frames - 1) * frame_stride / fps
    start = rng.uniform(0, max(0.0, available_s - span_s)) if rng is not None else 0.0
    return start + np.arange(num_frames) * frame_stride / fps


def _pick(times_s: np.ndarray, wanted_s: np.ndarray) -> np.ndarray:
    """Index of the last frame shown at each wanted time (the frame on screen then)."""
    idx = np.searchsorted(times_s, wanted_s + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(times_s) - 1)


def frames_needed(num_frames: int, frame_stride: int) -> int:
    """Source frames a clip must have to give `num_frames` frames `frame_stride` apart (the first to the last)."""
    return (num_frames - 1) * frame_stride + 1


def _check_length(have: int, num_frames: int, frame_stride: int) -> None:
    span = frames_needed(num_frames, frame_stride)
    if have < span:
        raise BadSample("too_short",
                        f"{have} frames, needs {span} (num_frames={num_frames}, frame_stride={frame_stride})")


def _decord_indices(times: np.ndarray, avg_fps: float, num_frames: int, frame_stride: int, rng) -> list[int]:
    """Which of a decord stream's frames (presentation times `times`, s) make the clip."""
    n = len(times)
    fps = (n - 1) / (times[-1] - times[0]) if n > 1 and times[-1] > times[0] else avg_fps
    wanted = frame_times(num_frames, frame_stride, fps, times[-1] - times[0] + 1 / fps, rng) + times[0]
    return list(_pick(times, wanted))


def _decode_decord(data: bytes, num_frames: int, frame_stride: int, rng, whole: bool = False):
    """The clip's frames (t h w c), or with `whole` every frame and what picking needs (a WholeClip)."""
    import decord

    try:
        reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
        n = len(reader)
        _check_length(n, num_frames, frame_stride)
        times = reader.get_frame_timestamp(range(n))[:, 0]  # n: presentation time of each frame (s)
        if whole:
            return WholeClip(reader.get_batch(list(range(n))).asnumpy(), times, reader.get_avg_fps())  # n h w c
        return reader.get_batch(_decord_indices(times, reader.get_avg_fps(), num_frames, frame_stride,
                                                rng)).asnumpy()  # t h w c
    except BadSample:
        raise
    except Exception as e:  # decord raises DECORDError (and others) for corrupt or truncated input
        raise BadSample("undecodable", str(e).splitlines()[0][:200]) from None


def _decode_av(data: bytes, num_frames: int, frame_stride: int, rng) -> np.ndarray:
    with _av_open(data) as container:
        try:
            frames, times, rotation = [], [], 0
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))  # h w c (stored orientation)
                times.append(float(frame.time) if frame.time is not None else len(times))
                rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
        except Exception as e:
            if not frames:
                raise BadSample("undecodable", str(e).splitlines()[0][:200]) from None
            # a truncated tail: keep the frames that decoded
    if not frames:
        raise BadSample("undecodable", "no decodable frame")
    _check_length(len(frames), num_frames, frame_stride)
    order = np.argsort(times)
    t = np.asarray(times)[order]
    if len(frames) == 1:
        chosen = [0] * num_frames
    else:
        fps = (len(t) - 1) / (t[-1] - t[0]) if t[-1] > t[0] else 1.0
        chosen = order[_pick(t, frame_times(num_frames, frame_stride, fps, t[-1] - t[0] + 1 / fps, rng) + t[0])]
    video = np.stack([frames[i] for i in chosen])  # t h w c
    return np.ascontiguousarray(np.rot90(video, k=rotation // 90, axes=(1, 2))) if rotation else video


def _warn_if_no_decord() -> None:
    global _warned_no_decord
    if not HAVE_DECORD and not _warned_no_decord:
        _warned_no_decord = True
        log.warning("decord is not installed: decoding videos with PyAV (slower on long videos; pip install decord)")


def decode_clip(data: bytes, ext: str, num_frames: int, frame_stride: int, rng: random.Random | None = None,
                info: dict | None = None) -> torch.Tensor:
    """Media bytes -> uint8 `t h w c` (3 channels) of `num_frames` frames; `info` is the sample's probed json."""
    ext = ext.lower()
    if ext not in MEDIA_EXTENSIONS:
        raise BadSample("not_media", f"extension .{ext}")
    if not data:
        raise BadSample("empty_file", "zero bytes")
    info = info or {}
    if ext in IMAGE_EXTENSIONS:
        if num_frames != 1:
            raise BadSample("too_short", f"an image is 1 frame, the bucket wants {num_frames}")
        video = _decode_av(data, 1, 1, None)
    elif ext == "gif" or info.get("rotation", 0) or not HAVE_DECORD:
        _warn_if_no_decord()
        video = _decode_av(data, num_frames, frame_stride, rng)
    else:
        try:
            video = _decode_decord(data, num_frames, frame_stride, rng)
        except BadSample as e:
            if e.reason != "undecodable":
                raise
            # decord 0.6 fails on some valid streams (e.g. 48x32 H.264: a buffer-size check); PyAV decides.
            video = _decode_av(data, num_frames, frame_stride, rng)
    if video.ndim != 4 or video.shape[-1] < 3:
        raise BadSample("undecodable", f"frames of shape {video.shape}")
    return torch.from_numpy(np.ascontiguousarray(video[..., :3]))


# ---------------------------------------------------------------------------------------------------------------
# Decoded clips kept in memory
# ---------------------------------------------------------------------------------------------------------------


class DecodedClips:
    """Videos decoded once and kept whole, by sample key, up to `max_mb` of frames (`data.decoded_cache_mb`).

    A small dataset read for many epochs (the built-in one: 2,048 clips, 100 MB) is then decoded in the first epoch
    only; later epochs pick frames from memory with the same random draws, so batches are the ones decoding would
    give. A video is kept only when its size from the shard's metadata fits what is left; the others, and what
    decord does not decode (GIFs, rotated videos, images, no decord), are decoded each time as before.
    """

    def __init__(self, max_mb: int):
        self.max_bytes, self.used_bytes, self.clips = max_mb * 2**20, 0, {}

    def decode(self, key: str, data: bytes, ext: str, num_frames: int, frame_stride: int,
               rng: random.Random | None = None, info: dict | None = None) -> torch.Tensor:
        """What `decode_clip` returns for these arguments, decoding `data` at most once per `key`."""
        ext, info = ext.lower(), info or {}
        clip = self.clips.get(key)
        if clip is None:
            if (ext in IMAGE_EXTENSIONS or ext == "gif" or info.get("rotation", 0) or not HAVE_DECORD
                    or ext not in MEDIA_EXTENSIONS or not data):
                return decode_clip(data, ext, num_frames, frame_stride, rng, info)
            size = info.get("num_frames", 0) * info.get("height", 0) * info.get("width", 0) * 3  # bytes, uint8
            if not size or self.used_bytes + size > self.max_bytes:  # unknown, or would not fit: decode the clip
                return decode_clip(data, ext, num_frames, frame_stride, rng, info)
            try:
                clip = _decode_decord(data, num_frames, frame_stride, None, whole=True)
            except BadSample as e:
                if e.reason != "undecodable":
                    raise
                return decode_clip(data, ext, num_frames, frame_stride, rng, info)  # PyAV decides, as there
            if self.used_bytes + clip.frames.nbytes <= self.max_bytes:
                self.clips[key] = clip
                self.used_bytes += clip.frames.nbytes
        _check_length(len(clip.frames), num_frames, frame_stride)
        chosen = _decord_indices(clip.times_s, clip.avg_fps, num_frames, frame_stride, rng)
        if clip.frames.ndim != 4 or clip.frames.shape[-1] < 3:
            raise BadSample("undecodable", f"frames of shape {clip.frames[chosen].shape}")
        return torch.from_numpy(np.ascontiguousarray(clip.frames[chosen][..., :3]))  # t h w c
