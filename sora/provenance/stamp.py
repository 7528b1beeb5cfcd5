"""Every generated video we write: watermarked frames -> H.264 mp4 -> signed C2PA manifest -> atomic write.

    prov = Provenance.of(cfg.provenance)     # c2pa and watermark on by default
    write_generated(path, video, fps, prov, Generation(model_sha256, weights, sampler, seed, prompt))
"""

import hashlib
import logging
import os
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sora.data.video_io import encode_mp4, to_uint8_frames
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
    prompt: str


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
    key = json.dumps([gen.seed, gen.prompt, _plain(gen.sampler)], sort_keys=True).encode()
    return hashlib.sha256(key).digest()[0]


_warned_dev_key = False


def write_generated(path, video: torch.Tensor, fps: int, prov: Provenance, gen: Generation) -> Path:
    """Write one generated video (c t h w in [-1, 1]) with the marks `prov` asks for, atomically."""
    global _warned_dev_key
    path = Path(path)
    frames = to_uint8_frames(video)  # t h w 3
    record = {"model": {"sha256": gen.model_sha256, "weights": gen.weights}, "sampler": gen.sampler, "seed": gen.seed,
              "prompt_sha256": hashlib.sha256(gen.prompt.encode()).hexdigest()}
    if prov.include_prompt:
        record["prompt"] = gen.prompt
    if prov.watermark:
        payload = payload_of(gen.model_sha256, generation_id(gen))
        frames = watermark.embed(frames, payload, prov.watermark_psnr_db)
        record["watermark"] = {"payload": f"{payload:04x}", "method": "sora-tiled-spread-spectrum-v2"}
    data = encode_mp4(frames, fps, generated=True)
    if prov.c2pa:
        from sora import __version__

        identity = certs.load(prov.cert, prov.key)
        if identity.development and not _warned_dev_key:
            log.warning("C2PA: signing with the local development key under %s: an untrusted development key, "
                        "good for tamper checks only (set provenance.cert and provenance.key)", certs.sora_home())
            _warned_dev_key = True
        definition = manifest.manifest_definition(path.name, __version__, _plain(record))
        data = manifest.sign_mp4(data, definition, identity)
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
    return str(getattr(x, "value", x))
