"""VAE benchmarks: held-out reconstruction, speed and peak memory against diffusers' AutoencoderKLWan, and
memory of causal chunked encoding. Results: docs/BENCHMARKS.md ("Video VAE").

    python bench/vae.py quality --runs ours=RUN_DIR wan=RUN_DIR ... --shards data/camera/test-*.tar \
        --lpips weights/lpips_vgg16.safetensors
    python bench/vae.py speed [--frames 17 --size 256 --repeats 2 --chunk-frames 4]
    python bench/vae.py chunks [--frames 17 --size 128]

`quality` reconstructs every held-out clip at its full stored size (cropped to a multiple of 8) with each run's
last.ckpt (posterior means), and reports PSNR, SSIM and LPIPS. `speed` times encode + decode of one clip by our
`causal3d` preset and by AutoencoderKLWan at the same parameter count (base_dim 46: 29.3M against our 29.6M), both
randomly initialised (speed does not depend on the weights), Wan with its tiling on as its pipelines use it, and
measures each one's peak memory. `chunks` encodes a clip and one 4x longer, whole and in causal chunks, and
reports the peak memory of each and how far the chunked latent is from the whole one. Every measurement runs in a
fresh process, so its peak resident memory (ru_maxrss, less what the process held before the encode) is its own.
"""

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TMP = os.environ.get("SORA_BENCH_TMP") or tempfile.mkdtemp(prefix="bench_vae_")  # latents the processes compare
WAN_SAME_SIZE = dict(base_dim=46, z_dim=16, num_res_blocks=2)  # 29.3M parameters: our causal3d preset has 29.6M


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ---------------------------------------------------------------------------------------------------------------
# Held-out reconstruction
# ---------------------------------------------------------------------------------------------------------------


def held_out_clips(pattern: str) -> list[torch.Tensor]:
    """Every clip of the shards as 1 3 t h w in [-1, 1], cropped to a multiple of 8 in h and w."""
    import tarfile

    from sora.data.video_io import read_video

    clips = []
    for shard in sorted(glob.glob(pattern)):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".mp4"):
                    path = Path(TMP) / "clip.mp4"
                    path.write_bytes(tar.extractfile(member).read())
                    frames, _ = read_video(path)  # t h w 3 uint8
                    path.unlink()
                    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # 3 t h w
                    h, w = video.shape[2] // 8 * 8, video.shape[3] // 8 * 8
                    clips.append(video[None, :, :, :h, :w])
    return clips


@torch.no_grad()
def quality(runs: dict[str, str], shards: str, lpips_path: str | None, frames: int) -> dict:
    from sora.eval.metrics import psnr, ssim
    from sora.inference.checkpoint import load_vae
    from sora.models.lpips import LPIPS, video_lpips

    clips = [c[:, :, :frames] for c in held_out_clips(shards)]
    lpips = LPIPS.from_files(lpips_path) if lpips_path else None
    results = {}
    for name, run in runs.items():
        ckpt = Path(run) / "checkpoints" / "last.ckpt"
        vae, _ = load_vae(str(ckpt))
        vae.eval()
        meta = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        scores = {"psnr_db": [], "ssim": [], "lpips": []}
        for clip in clips:
            mean, _ = vae.posterior(clip)
            recon = vae.decode_raw(mean).clamp(-1, 1)
            scores["psnr_db"].append(psnr(recon, clip).item())
            scores["ssim"].append(ssim(recon, clip).item())
            if lpips is not None:
                scores["lpips"].append(video_lpips(lpips, recon, clip).item())
        results[name] = {k: round(sum(v) / len(v), 4) for k, v in scores.items() if v}
        params = sum(p.numel() for p in vae.parameters())
        results[name].update(steps=int(meta["global_step"]), params_m=round(params / 1e6, 2),
                             clips=len(clips), frames=frames)
        print(name, json.dumps(results[name]), flush=True)
    return results


# ---------------------------------------------------------------------------------------------------------------
# One measurement in a fresh process
# ---------------------------------------------------------------------------------------------------------------


def build(kind: str, **kw) -> torch.nn.Module:
    if kind == "ours":
        from sora.models.vae import CausalVAE, VAEArgs

        return CausalVAE(VAEArgs(kind="causal3d", latent_channels=16, temporal_compression=4, spatial_compression=8,
                                 **kw))
    from diffusers import AutoencoderKLWan

    wan = AutoencoderKLWan(**WAN_SAME_SIZE)
    if kw.get("tiling", True):
        wan.enable_tiling()
    return wan


@torch.no_grad()
def measure(kind: str, frames: int, size: int, repeats: int, chunk_frames, memory_budget_gb: float,
            tile_px=None) -> dict:
    """Encode + decode one 1 3 frames size size clip: seconds (best of `repeats`) and peak memory (MB)."""
    torch.manual_seed(0)
    kw = {} if kind == "wan" else {"chunk_frames": chunk_frames, "memory_budget_gb": memory_budget_gb,
                                   "tile_px": tile_px}
    vae = build(kind, **kw).eval()
    video = torch.rand(1, 3, frames, size, size) * 2 - 1
    before = peak_rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        if kind == "ours":
            z = vae.posterior(video)[0]
            out = vae.decode_raw(z)
        else:
            z = vae.encode(video).latent_dist.mode()
            out = vae.decode(z).sample
        times.append(time.perf_counter() - t0)
    result = {"seconds": round(min(times), 3), "peak_mb": round(peak_rss_mb() - before, 1),
              "params_m": round(sum(p.numel() for p in vae.parameters()) / 1e6, 2),
              "latent": list(z.shape), "out": list(out.shape)}
    if kind == "ours":
        result["plan"] = vae.plan(frames, size, size).__dict__
        result["latent_sum"] = float(z.double().sum())  # compared across processes by `chunks`
        torch.save(z, Path(os.environ["SORA_BENCH_TMP"]) / f"latent_{frames}_{chunk_frames}.pt")
    return result


def in_subprocess(*args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "SORA_BENCH_TMP": TMP}
    out = subprocess.run([sys.executable, __file__, "_measure", *map(str, args)],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(frames: int, size: int, repeats: int, chunk_frames: str) -> dict:
    ours = in_subprocess("ours", frames, size, repeats, chunk_frames, 2.0)
    wan = in_subprocess("wan", frames, size, repeats, "none", 2.0)
    ratio = {"speedup": round(wan["seconds"] / ours["seconds"], 2),
             "memory_ratio": round(ours["peak_mb"] / wan["peak_mb"], 2)}
    return {"input": [1, 3, frames, size, size], "ours": ours, "wan_tiled": wan, **ratio}


def chunks(frames: int, size: int) -> dict:
    long = 1 + 4 * (frames - 1)
    rows = {}
    for name, f, chunk in (("short_whole", frames, 0), ("short_chunked", frames, 4), ("long_whole", long, 0),
                           ("long_chunked", long, 4)):
        rows[name] = in_subprocess("ours", f, size, 1, chunk, 2.0, 0)  # no tiles: chunked must equal whole
    a, b = (torch.load(Path(TMP) / f"latent_{long}_{c}.pt", weights_only=True) for c in (0, 4))
    peak = {name: row["peak_mb"] for name, row in rows.items()}
    return {"short_frames": frames, "long_frames": long, "size": size, **rows,
            "long_chunked_over_short_chunked_memory": round(peak["long_chunked"] / peak["short_chunked"], 2),
            "long_chunked_over_short_whole_memory": round(peak["long_chunked"] / peak["short_whole"], 2),
            "long_whole_over_short_whole_memory": round(peak["long_whole"] / peak["short_whole"], 2),
            "chunked_vs_whole_max_abs_diff": float((a - b).abs().max()), "latent_abs_mean": float(b.abs().mean())}


def main() -> None:
    if sys.argv[1:2] == ["_measure"]:
        kind, frames, size, repeats, chunk, budget, tile = (sys.argv[2:9] + ["none"])[:7]
        chunk, tile = (None if v == "none" else int(v) for v in (chunk, tile))
        print(json.dumps(measure(kind, int(frames), int(size), int(repeats), chunk, float(budget), tile)))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default=None, help="also write the results to this JSON file")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality", parents=[common])
    q.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR ...")
    q.add_argument("--shards", required=True)
    q.add_argument("--lpips", default=None)
    q.add_argument("--frames", type=int, default=17)
    s = sub.add_parser("speed", parents=[common])
    s.add_argument("--frames", type=int, default=17)
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--chunk-frames", default="none", help="ours: vae.chunk_frames (none: from the 2 GB budget; Wan "
                   "always encodes 1 + 4 frames at a time)")
    c = sub.add_parser("chunks", parents=[common])
    c.add_argument("--frames", type=int, default=17)
    c.add_argument("--size", type=int, default=128)
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if a.cmd == "quality":
        result = quality(dict(r.split("=", 1) for r in a.runs), a.shards, a.lpips, a.frames)
    elif a.cmd == "speed":
        result = speed(a.frames, a.size, a.repeats, a.chunk_frames)
    else:
        result = chunks(a.frames, a.size)
    result = {"bench": a.cmd, "torch": torch.__version__, "threads": torch.get_num_threads(), **result}
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
