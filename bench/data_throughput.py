"""Data-path throughput, clips/s for one worker, on the same clips in one run (issue 3's benchmark):

  shards_decord      webdataset shards -> decord (seeks to the keyframe before the clip) -> clip of num_frames at
                     frame_stride -> resize/crop: train.py's path
  naive_pyav         each file opened with PyAV and decoded whole to RGB frames (as torchvision.io.read_video
                     does), then the clip taken and the same resize/crop
  pyav_stop_at_clip  for context: PyAV decoding in order from the start and stopping at the clip's last frame
  latent_cache       latent shards written by sora/data/latent_cache.py (causal 4x8x8 VAE latents), read as training
                     reads them

Sources are 10-second H.264 clips at 24 fps with a keyframe every 2 s (what web video platforms serve);
training clips are 17 frames at stride 2 from a random start, 128x128.

    python bench/data_throughput.py
    python bench/data_throughput.py --clips 8 --frames 96     # quicker

Prints one JSON object per result row on stdout; the last rows are the ratios the goals ask for.
"""

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sora.data.buckets import BucketSet, resize_crop
from sora.data.shard_writer import Source, write_shards
from sora.data.stream import ClipStream, expand_shards, strip_bookkeeping


def make_clips(root: Path, n: int, frames: int, size: int, fps: int, gop: int) -> list[Path]:
    """Textured moving content (so H.264 has real work): a scrolling noise field with a moving disc."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    paths = []
    for i in range(n):
        field = rng.integers(0, 255, (size * 2, size * 2, 3), dtype=np.uint8)
        video = np.empty((frames, size, size, 3), np.uint8)
        for t in range(frames):
            video[t] = field[t % size : t % size + size, (2 * t) % size : (2 * t) % size + size]
            cx, cy = (t * 3 + i * 7) % size, (t * 2 + i * 5) % size
            video[t][(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 8) ** 2] = (255, 200, 0)
        path = root / f"clip{i:04d}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "23", "g": str(gop), "preset": "fast"}
            for frame in video:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    return paths


def naive_clip(path: Path, num_frames: int, frame_stride: int, size: int, rng: random.Random) -> torch.Tensor:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]  # the whole file
    span = (num_frames - 1) * frame_stride + 1
    start = rng.randint(0, len(frames) - span)
    clip = np.stack(frames[start : start + span : frame_stride])  # t h w c
    return resize_crop(torch.from_numpy(clip), size, size, rng)


def stop_at_clip(path: Path, num_frames: int, frame_stride: int, size: int, rng: random.Random) -> torch.Tensor:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames
        span = (num_frames - 1) * frame_stride + 1
        start = rng.randint(0, total - span)
        wanted = set(range(start, start + span, frame_stride))
        frames = []
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
            if i >= start + span - 1:
                break
    return resize_crop(torch.from_numpy(np.stack(frames)), size, size, rng)


def time_stream(stream, clips: int) -> tuple[float, int]:
    """Seconds to pull `clips` clips (after a warm-up batch) from a ClipStream run in this process."""
    it = iter(stream)
    next(it)
    n, t0 = 0, time.perf_counter()
    while n < clips:
        batch, _, _ = strip_bookkeeping(next(it))
        n += len(batch["caption"])
    return time.perf_counter() - t0, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--frames", type=int, default=240, help="frames per source clip (24 fps)")
    p.add_argument("--gop", type=int, default=48, help="frames between keyframes in the sources")
    p.add_argument("--size", type=int, default=256, help="source clip side (px)")
    p.add_argument("--num-frames", type=int, default=17, help="frames per training clip")
    p.add_argument("--frame-stride", type=int, default=2)
    p.add_argument("--train-size", type=int, default=128, help="training clip side (px)")
    p.add_argument("--passes", type=int, default=2, help="passes over the clips per measured path")
    a = p.parse_args()
    torch.set_num_threads(1)  # one worker = one core
    common = {"bench": "data_throughput", "device": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "torch_threads": 1, "source": f"{a.clips}x{a.frames}f {a.size}px h264 gop {a.gop}",
              "clip": f"{a.num_frames}f stride {a.frame_stride} {a.train_size}px"}
    from tests.conftest import compose_config

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "files").mkdir()
        files = make_clips(root / "files", a.clips, a.frames, a.size, 24, a.gop)
        write_shards([Source(str(f), f"clip {f.stem}") for f in files], str(root / "shards"),
                     samples_per_shard=16, workers=1)
        overrides = [f"data.shards={root}/shards/shard-*.tar", f"data.num_frames={a.num_frames}",
                     f"data.frame_stride={a.frame_stride}", f"data.height={a.train_size}", f"data.width={a.train_size}",
                     "data.batch_size_per_gpu=4", "data.shuffle_buffer=8", "data.num_workers=0"]
        cfg = compose_config("train", overrides).data
        total = a.clips * a.passes

        rows = []
        stream = ClipStream(expand_shards(cfg.shards), cfg, BucketSet.from_config(cfg), seed=0)
        secs, n = time_stream(stream, total)
        rows.append({**common, "path": "shards_decord", "clips": n, "seconds": round(secs, 3),
                     "clips_per_s": round(n / secs, 2)})

        for name, load in (("naive_pyav", naive_clip), ("pyav_stop_at_clip", stop_at_clip)):
            rng = random.Random(0)
            load(files[0], a.num_frames, a.frame_stride, a.train_size, rng)  # warm-up
            t0 = time.perf_counter()
            for i in range(total):
                load(files[i % len(files)], a.num_frames, a.frame_stride, a.train_size, rng)
            secs = time.perf_counter() - t0
            rows.append({**common, "path": name, "clips": total, "seconds": round(secs, 3),
                         "clips_per_s": round(total / secs, 2)})

        # The latent cache of a 4x8x8 causal VAE (untrained: reading speed does not depend on the weights).
        from sora.data.latent_cache import write_latent_cache
        from sora.inference.bundle import ModelBundle

        full = compose_config("train", [*overrides, "vae=causal3d", "vae.base_channels=8", "dit.patch_size=[1,2,2]",
                                        f"data.latent_cache={root}/latents"])
        bundle = ModelBundle.build(full)
        t0 = time.perf_counter()
        info = write_latent_cache(bundle.cfg, bundle.vae, bundle.text, bundle.geometry, str(root / "latents"))
        write_s = time.perf_counter() - t0
        stream = ClipStream(expand_shards(f"{root}/latents/latents-*.tar"), full.data,
                            BucketSet.from_config(full.data), seed=0)
        secs, n = time_stream(stream, total * 10)
        rows.append({**common, "path": "latent_cache", "clips": n, "seconds": round(secs, 3),
                     "clips_per_s": round(n / secs, 2),
                     "latent_shape": next(iter(info["latent_shapes"])), "cache_write_s": round(write_s, 2)})

    by = {r["path"]: r["clips_per_s"] for r in rows}
    rows.append({**common, "ratio": "shards_decord / naive_pyav",
                 "value": round(by["shards_decord"] / by["naive_pyav"], 2), "goal": 3})
    rows.append({**common, "ratio": "shards_decord / pyav_stop_at_clip",
                 "value": round(by["shards_decord"] / by["pyav_stop_at_clip"], 2)})
    rows.append({**common, "ratio": "latent_cache / shards_decord",
                 "value": round(by["latent_cache"] / by["shards_decord"], 1), "goal": 50})
    for row in rows:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
