"""Latent cache: run the frozen VAE encoder (and a frozen text encoder) over shards once; train with no decoding.

    python data/cache_latents.py data.latent_cache=cache/ vae=causal3d vae.ckpt=vae.ckpt   # write
    python train.py data.latent_cache=cache/ vae=causal3d vae.ckpt=vae.ckpt                # train from it

Each cached sample holds `latent.npy` (float16, 2z t h w: the posterior mean and std, scaled as
`vae.encode` scales, so training draws a fresh z = mean + std * eps every time, as LDM does), the caption, and,
for a frozen text encoder, `context.npy` / `mask.npy`. A trainable text encoder is not cached: it still learns.
`cache_info.json` records fingerprints of the VAE and text encoder weights; training refuses a cache that
other weights made. Clips are cached with their start at frame 0 and a centre crop (no augmentation).
"""

import hashlib
import io
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import webdataset as wds

from sora.data.buckets import BucketSet
from sora.data.stream import make_loader, strip_bookkeeping
from sora.errors import SoraError
from sora.models.geometry import LatentGeometry
from sora.models.vae import encode_frames_alone

log = logging.getLogger(__name__)

INFO = "cache_info.json"
SHARD_PATTERN = "latents-%06d.tar"


def fingerprint(module: nn.Module | None) -> str | None:
    """sha256 of a module's parameters and buffers (names, shapes, bytes); None for a module without any."""
    if module is None:
        return None
    h = hashlib.sha256()
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest() if tensors else type(module).__name__


def _npy(x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x.numpy(), allow_pickle=False)
    return buf.getvalue()


def sample_latent(moments: torch.Tensor) -> torch.Tensor:
    """b 2z t h w (mean, std) -> b z t h w: one draw from the cached posterior."""
    mean, std = moments.float().chunk(2, dim=1)
    return mean + std * torch.randn_like(mean)


@torch.no_grad()
def write_latent_cache(cfg, vae: nn.Module, text: nn.Module, geometry: LatentGeometry, out_dir: str,
                       device: str = "cpu", samples_per_shard: int = 1000, frames_alone: bool = False) -> dict:
    """Encode every sample of `cfg.data.shards` once (one pass, one reader) into latent shards in `out_dir`.

    `frames_alone` also stores `alone.npy`: the moments of each latent frame encoded from its own frames only
    (sora.models.vae.encode_frames_alone), which training with frames given as a condition reads.
    """

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("latents-*.tar")):
        raise SoraError(f"{out} already holds a latent cache: remove it or choose another data.latent_cache")
    data = cfg.data.copy()
    data.latent_cache, data.shuffle_buffer, data.num_workers = None, 1, 0
    data.random_start = data.random_crop = False  # a cache holds one view of each clip: its start, its centre
    buckets = BucketSet.from_config(data, geometry)
    loader = make_loader(data, seed=0, buckets=buckets)
    vae.eval().to(device)
    text_frozen = not getattr(text, "trainable", True)
    if text_frozen:
        text.eval().to(device)
    t0, written, skipped, shapes = time.time(), 0, Counter(), Counter()
    sink = wds.ShardWriter(str(out / SHARD_PATTERN), maxcount=samples_per_shard, verbose=0)
    try:
        for batch in loader:
            batch, position, skip = strip_bookkeeping(batch)
            if position["epoch"] > 0:  # one pass: what the next epoch skipped before this batch is not counted
                break
            skipped.update(skip)
            video = batch["video"].to(device)
            moments = vae.moments(video).to("cpu", torch.float16)  # b 2z t h w
            alone = encode_frames_alone(vae, video, vae.moments).to("cpu", torch.float16) if frames_alone else None
            context = mask = None
            if text_frozen:
                context, mask = text(batch["caption"])  # b m d, b m
                context, mask = context.to("cpu", torch.float16), mask.cpu()
            for i, caption in enumerate(batch["caption"]):
                sample = {"__key__": f"{written:09d}", "latent.npy": _npy(moments[i]), "txt": caption}
                if alone is not None:
                    sample["alone.npy"] = _npy(alone[i])
                if context is not None:
                    sample["context.npy"], sample["mask.npy"] = _npy(context[i]), _npy(mask[i])
                sink.write(sample)
                shapes["x".join(map(str, moments.shape[1:]))] += 1
                written += 1
    finally:
        sink.close()
    info = {"vae": {"fingerprint": fingerprint(vae), "kind": cfg.vae.kind.value,
                    "ckpt": cfg.vae.ckpt, "path": cfg.vae.get("path")},
            "text": {"fingerprint": fingerprint(text) if text_frozen else None, "cached": text_frozen,
                     "kind": cfg.text.kind.value, "path": cfg.text.path},
            "frames_alone": frames_alone, "source_shards": cfg.data.shards, "num_samples": written,
            "min_scores": dict(cfg.data.min_scores or {}),  # the clips it holds passed these (counted in skipped)
            "latent_shapes": dict(shapes),
            "skipped": dict(skipped), "seconds": round(time.time() - t0, 1)}
    (out / INFO).write_text(json.dumps(info, indent=1))
    return info


def check_cache(cache_dir: str, vae: nn.Module, text: nn.Module, frames_alone: bool = False) -> dict:
    """Refuse a cache made by another VAE or text encoder (their weights' fingerprints differ), or one without the
    given-frame latents a run that conditions on frames needs; return its info."""
    path = Path(cache_dir) / INFO
    if not path.is_file():
        raise SoraError(f"data.latent_cache={cache_dir!r}: no {INFO} there; write one with data/cache_latents.py")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise SoraError(f"{path}: not valid JSON ({e})") from None
    if info["vae"]["fingerprint"] != fingerprint(vae):
        made_by = f"path={info['vae']['path']}" if info["vae"].get("path") else f"ckpt={info['vae']['ckpt']}"
        raise SoraError(f"data.latent_cache={cache_dir!r} was made by another VAE ({info['vae']['kind']}, "
                        f"{made_by}); this run's VAE has different weights: rebuild the cache")
    if info["text"]["cached"]:
        if getattr(text, "trainable", True):
            raise SoraError(f"data.latent_cache={cache_dir!r} holds embeddings of a frozen text encoder "
                            f"({info['text']['path']}), but this run trains its own (text={info['text']['kind']})")
        if info["text"]["fingerprint"] != fingerprint(text):
            raise SoraError(f"data.latent_cache={cache_dir!r} was made by another text encoder "
                            f"({info['text']['path']}): rebuild the cache")
    elif not getattr(text, "trainable", True):
        raise SoraError(f"data.latent_cache={cache_dir!r} holds no text embeddings, but this run's text encoder "
                        "is frozen: rebuild the cache with it")
    if frames_alone and not info.get("frames_alone"):
        raise SoraError(f"data.latent_cache={cache_dir!r} holds no latents of frames given alone, which "
                        "conditioning.modes needs: rebuild the cache with this run's conditioning settings")
    return info
