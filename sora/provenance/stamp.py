"""Every generated video we write: watermarked frames -> mp4 / GIF / WebM -> signed C2PA manifest -> atomic write.

    prov = Provenance.of(cfg.provenance)     # c2pa and watermark on by default
    write_generated(path, video, fps, prov, Generation(model_sha256, weights, sampler, seed, prompt))
    # with prompt expansion (sora/inference/expand.py): Generation(..., prompt, expanded_prompt, expander)

The file name's extension is the format (sora.data.video_io.VIDEO_FORMATS). A format C2PA cannot sign (WebM) is
written with the watermark alone; frames under watermark.MIN_FRAME_PX are written without a watermark, and the
manifest says so and why. Each is logged once a process, not once a video.

A long video can be written window by window (`StreamedVideo`: `add` each window's frames, then `close`): its
frames go to a spool file beside the output as they come, with the running sum the watermark's informed embedding
needs; at the close the watermark is planned from that sum (sora/provenance/watermark.py `plan`), and the frames
are marked and encoded from the spool a window at a time. Memory stays that of a window whatever the length; the
file is the one `write_generated` writes from the same frames.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch

from sora.data.video_io import VIDEO_FORMATS, VideoEncoder, encode_video, to_uint8_frames, video_format
from sora.provenance import certs, manifest, watermark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provenance:
    """What to put on each file (the `provenance` config node's keys)."""

    c2pa: bool = True
    watermark: bool = True
    cert: str | None = None
    key: str | None = None
    include_prompt: bool = False
    watermark_psnr_db: float = 40.0

    @classmethod
    def of(cls, node) -> "Provenance":
        """From a config node (TrainConfig.provenance or SampleConfig.provenance); None gives the defaults."""
        if node is None:
            return cls()
        return cls(**{k: getattr(node, k) for k in cls.__dataclass_fields__ if hasattr(node, k)})


@dataclass
class Generation:
    """What the manifest says about one video."""

    model_sha256: str  # fingerprint of the weights that made it (model_fingerprint)
    weights: str  # "ema" | "raw" | "init"
    sampler: dict  # the sampler settings (SampleSettings.as_dict())
    seed: int
    prompt: str  # as the user wrote it
    expanded_prompt: str | None = None  # what the model was conditioned on, when a language model expanded `prompt`
    expander: dict | None = None  # which model expanded it (sora.inference.expand.PromptExpander.record)


def model_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # reshape: 0-dim tensors (a VAE scale) too
    return h.hexdigest()


def payload_of(model_sha256: str, generation_id: int) -> int:
    """The watermark's 16 bits: the model fingerprint's first 8 bits, then an 8-bit generation id."""
    return (int(model_sha256[:2], 16) << 8) | (generation_id & 0xFF)


def generation_id(gen: Generation) -> int:
    """8 bits from the seed, prompt and sampler settings: the same generation gets the same id (and frames)."""
    parts = [gen.seed, gen.prompt, _plain(gen.sampler)] + ([gen.expanded_prompt] if gen.expanded_prompt else [])
    key = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(key).digest()[0]


_said: set = set()  # what was logged once this process


def _once(key, message: str, *args) -> None:
    """log.warning(message, *args) the first time `key` is seen in this process."""
    if key not in _said:
        _said.add(key)
        log.warning(message, *args)


def write_generated(path, video: torch.Tensor, fps: int, prov: Provenance, gen: Generation) -> Path:
    """Write one generated video (c t h w in [-1, 1]) with the marks `prov` asks for, atomically, in the format its
    extension names (.mp4, .gif, .webm)."""
    path = Path(path)
    ext = video_format(path, "path")
    frames = to_uint8_frames(video)  # t h w 3
    record = _record(prov, gen)
    change = _watermark_change(record, prov, gen, frames.shape[1], frames.shape[2], lambda: watermark.mean_luma(frames),
                               lambda c: watermark.psnr_db(frames, watermark.add_change(frames, c)))
    if change is not None:
        frames = watermark.add_change(frames, change)
    _write(path, _signed(encode_video(frames, fps, ext, generated=True), path, ext, prov, record))
    return path


class StreamedVideo:
    """One generated video written window by window (module docstring): `add(video)` each piece (c t h w in
    [-1, 1], in order), then `close()`; `abort()` (or an exception inside `with`) removes what was spooled."""

    def __init__(self, path, fps: int, prov: Provenance, gen: Generation):
        self.path, self.fps, self.prov, self.gen = Path(path), fps, prov, gen
        self.ext = video_format(self.path, "path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.spool_path = self.path.with_name(self.path.name + ".frames.tmp")
        self.spool = open(self.spool_path, "wb")
        self.luma, self.num_frames, self.size, self.chunk = None, 0, None, 1

    def add(self, video: torch.Tensor) -> None:
        frames = to_uint8_frames(video)  # t h w 3
        self.size = self.size or frames.shape[1:]
        assert frames.shape[1:] == self.size, f"a piece of {frames.shape[1:]} in a video of {self.size}"
        self.spool.write(frames.tobytes())
        total = watermark.luma_sum(frames)  # h w, exact
        self.luma = total if self.luma is None else self.luma + total
        self.num_frames, self.chunk = self.num_frames + len(frames), max(self.chunk, len(frames))

    def _pieces(self):
        """The spooled frames again, a piece (the largest added) at a time: uint8 t h w 3."""
        frame_bytes = int(np.prod(self.size))
        with open(self.spool_path, "rb") as f:
            while data := f.read(frame_bytes * self.chunk):
                yield np.frombuffer(bytearray(data), np.uint8).reshape(-1, *self.size)  # writable, for torch

    def _psnr(self, change: np.ndarray) -> float:
        """The PSNR of the whole video with `change` added, summed a piece at a time (exact: integer sums)."""
        squared = 0
        for frames in self._pieces():
            squared += int(((watermark.add_change(frames, change).astype(np.int64) - frames) ** 2).sum())
        return watermark.psnr_of_mse(squared / (self.num_frames * int(np.prod(self.size))))

    def close(self) -> Path:
        """Mark, encode and sign the spooled frames into the file; the spool is removed."""
        self.spool.close()
        try:
            if self.num_frames == 0:
                raise ValueError(f"{self.path}: no frames were added")
            record = _record(self.prov, self.gen)
            h, w = self.size[:2]
            change = _watermark_change(record, self.prov, self.gen, h, w,
                                       lambda: watermark.luma_of_sum(self.luma, self.num_frames), self._psnr)
            marked = (frames if change is None else watermark.add_change(frames, change) for frames in self._pieces())
            if self.ext == ".gif":  # Pillow's GIF writer takes every frame at once
                data = encode_video(np.concatenate(list(marked)), self.fps, self.ext, generated=True)
                _write(self.path, _signed(data, self.path, self.ext, self.prov, record))
                return self.path
            encoded = self.path.with_name(self.path.name + ".encoded.tmp")
            try:
                with open(encoded, "wb") as out, VideoEncoder.of(out, self.ext, h, w, self.fps, True) as encoder:
                    for frames in marked:
                        encoder.write(frames)
                _sign_file(encoded, self.path, self.ext, self.prov, record)
            finally:
                encoded.unlink(missing_ok=True)
        finally:
            self.spool_path.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        self.spool.close()
        self.spool_path.unlink(missing_ok=True)

    def __enter__(self) -> "StreamedVideo":
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------------------------------
# The parts both writers share
# ---------------------------------------------------------------------------------------------------------------


def _record(prov: Provenance, gen: Generation) -> dict:
    """What the manifest's generation assertion says (the watermark's entry is added when it is decided)."""
    record = {"model": {"sha256": gen.model_sha256, "weights": gen.weights}, "sampler": gen.sampler, "seed": gen.seed,
              "prompt_sha256": hashlib.sha256(gen.prompt.encode()).hexdigest()}
    if gen.expanded_prompt is not None:  # the user's prompt above, the text the model saw here
        record["expanded_prompt_sha256"] = hashlib.sha256(gen.expanded_prompt.encode()).hexdigest()
        record["expander"] = gen.expander or {}
    if prov.include_prompt:
        record["prompt"] = gen.prompt
        if gen.expanded_prompt is not None:
            record["expanded_prompt"] = gen.expanded_prompt
    return record


def _watermark_change(record: dict, prov: Provenance, gen: Generation, h: int, w: int, luma, psnr_of):
    """The h w change the watermark adds (None: none), recorded in `record`; luma() -> the frames' mean luma,
    psnr_of(change) -> their PSNR with it (watermark.plan)."""
    if not prov.watermark:
        return None
    if not watermark.fits(h, w):
        record["watermark"] = {"embedded": False, "reason": watermark.TOO_SMALL, "min_frame_px": watermark.MIN_FRAME_PX}
        _once(("small", h, w), "watermark: none in %dx%d videos (%s, where a re-encode leaves it unreadable); "
              "their C2PA manifests say so", h, w, watermark.TOO_SMALL)
        return None
    payload = payload_of(gen.model_sha256, generation_id(gen))
    record["watermark"] = {"embedded": True, "payload": f"{payload:04x}", "method": watermark.METHOD}
    return watermark.plan(luma(), psnr_of, payload, prov.watermark_psnr_db)


def _signed(data: bytes, path: Path, ext: str, prov: Provenance, record: dict) -> bytes:
    """The encoded file with its signed C2PA manifest, when asked for and the format can carry one."""
    identity, definition = _manifest(path, ext, prov, record)
    return data if identity is None else manifest.sign(data, VIDEO_FORMATS[ext][1], definition, identity)


def _sign_file(encoded: Path, path: Path, ext: str, prov: Provenance, record: dict) -> None:
    """`_signed` from the encoded file to `path` (atomically), file to file: the video is never read into memory."""
    identity, definition = _manifest(path, ext, prov, record)
    if identity is None:
        os.replace(encoded, path)
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(encoded, "rb") as source, open(tmp, "w+b") as dest:
        manifest.sign_stream(source, dest, VIDEO_FORMATS[ext][1], definition, identity)
    os.replace(tmp, path)


def _manifest(path: Path, ext: str, prov: Provenance, record: dict):
    """(signing identity, manifest definition) for a file, or (None, None) when it carries no manifest: not asked
    for, or a format C2PA cannot sign (said once a process)."""
    mime = VIDEO_FORMATS[ext][1]
    if prov.c2pa and not manifest.can_sign(mime):
        signed = ", ".join(e for e, (_, m) in VIDEO_FORMATS.items() if manifest.can_sign(m))
        marked = prov.watermark and record["watermark"]["embedded"]
        _once(("unsigned", ext), "C2PA: a %s file cannot carry a manifest (c2pa-python %s signs %s among our formats); "
              "%s videos are written without one%s", ext, manifest.c2pa_version(), signed, ext,
              ", the watermark in their pixels alone" if marked else "")
    elif prov.c2pa:
        from sora import __version__

        identity = certs.load(prov.cert, prov.key)
        if identity.development:
            _once("dev_key", "C2PA: signing with the local development key under %s: an untrusted development key, "
                  "good for tamper checks only (set provenance.cert and provenance.key)", certs.sora_home())
        return identity, manifest.manifest_definition(path.name, __version__, _plain(record))
    return None, None


def _write(path: Path, data: bytes) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _plain(x):
    """JSON-safe copy (enums and tuples in sampler settings)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return x.value if isinstance(x, Enum) else str(x)
