"""Every generated video we write: watermarked frames -> mp4 / GIF / WebM -> signed C2PA manifest -> atomic write.

    prov = Provenance.of(cfg.provenance)     # c2pa and watermark on by default
    write_generated(path, video, fps, prov, Generation(model_sha256, weights, sampler, seed, prompt))
    # with prompt expansion (sora/inference/expand.py): Generation(..., prompt, expanded_prompt, expander)

The file name's extension is the format (sora.data.video_io.VIDEO_FORMATS). A format C2PA cannot sign (WebM) is
written with the watermark alone; frames under watermark.MIN_FRAME_PX are written without a watermark, and the
manifest says so and why. Each is logged once a process, not once a video.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch

from sora.data.video_io import VIDEO_FORMATS, encode_video, to_uint8_frames, video_format
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
    mime = VIDEO_FORMATS[ext][1]
    frames = to_uint8_frames(video)  # t h w 3
    record = {"model": {"sha256": gen.model_sha256, "weights": gen.weights}, "sampler": gen.sampler, "seed": gen.seed,
              "prompt_sha256": hashlib.sha256(gen.prompt.encode()).hexdigest()}
    if gen.expanded_prompt is not None:  # the user's prompt above, the text the model saw here
        record["expanded_prompt_sha256"] = hashlib.sha256(gen.expanded_prompt.encode()).hexdigest()
        record["expander"] = gen.expander or {}
    if prov.include_prompt:
        record["prompt"] = gen.prompt
        if gen.expanded_prompt is not None:
            record["expanded_prompt"] = gen.expanded_prompt
    if prov.watermark:
        h, w = frames.shape[1:3]
        if watermark.fits(h, w):
            payload = payload_of(gen.model_sha256, generation_id(gen))
            frames = watermark.embed(frames, payload, prov.watermark_psnr_db)
            record["watermark"] = {"embedded": True, "payload": f"{payload:04x}", "method": watermark.METHOD}
        else:
            record["watermark"] = {"embedded": False, "reason": watermark.TOO_SMALL,
                                   "min_frame_px": watermark.MIN_FRAME_PX}
            _once(("small", h, w), "watermark: none in %dx%d videos (%s, where a re-encode leaves it unreadable); "
                  "their C2PA manifests say so", h, w, watermark.TOO_SMALL)
    data = encode_video(frames, fps, ext, generated=True)
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
        definition = manifest.manifest_definition(path.name, __version__, _plain(record))
        data = manifest.sign(data, mime, definition, identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _plain(x):
    """JSON-safe copy (enums and tuples in sampler settings)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return x.value if isinstance(x, Enum) else str(x)
