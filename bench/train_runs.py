"""Benchmarks that are whole `train.py` runs on the built-in dataset, read back from each run's metrics.csv.

  mfu  the Throughput callback's MFU in a real run (shards -> decode -> VAE -> DiT step -> optimizer and EMA)
       beside bench/dit_step.py's MFU for the same model, tokens and attention backend, in the same process
       tree: the ratio is what the data path and the optimizer cost.
  fp8  train.fp8=tensorwise / rowwise against bf16: the same seed, data and steps, run side by side; the loss
       curves, their mean gap, and the validation loss at the end.

    # GPU: 16k tokens
    python bench/train_runs.py mfu --preset XL128 --frames 16 --size-px 64 --compile --profile-steps 5
    # GPU
    python bench/train_runs.py fp8 --preset B --frames 8 --size-px 32 --batch-size 4 --steps 500
    # an ablation
    python bench/train_runs.py mfu --preset XL128 --frames 16 --size-px 64 --compile train.param_dtype=bf16
    # CPU smoke run
    python bench/train_runs.py mfu --preset tiny --frames 2 --size-px 16 --steps 30

The DiT runs on pixels (vae=pixel, 1x2x2 patches): frames x (size_px/2)^2 tokens a clip. Pixel space keeps the
VAE's cost out of the DiT's figure; a latent model's VAE encode is bench/vae.py's subject, or data/cache_latents.py's.
Prints one JSON object per result on stdout.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_LEN, TEXT_DIM = 8, 128  # configs/text/vocab.yaml: max_tokens, width (dit_step.py's row gets the same)


def train_args(a, run_dir: Path, steps: int, extra: list[str]) -> list[str]:
    """train.py's command line for one run on the moving-shapes dataset at a.size_px (built once under a.data)."""
    d = Path(a.data)
    return [sys.executable, str(ROOT / "train.py"), f"dit={a.preset}", "dit.patch_size=[1,2,2]",
            "objective.prediction=velocity", f"dit.attention_backend={a.backend}", f"data.moving_shapes.root={d}",
            f"data.shards={d}/train-*.tar",
            f"data.eval_prompts={d}/heldout_prompts.txt", f"data.train_prompts={d}/train_prompts.txt",
            f"data.moving_shapes.size_px={a.size_px}", f"data.moving_shapes.num_frames={a.frames}",
            "data.moving_shapes.clips_per_combo=8", f"data.num_frames={a.frames}", "data.frame_stride=1",
            f"data.height={a.size_px}", f"data.width={a.size_px}", f"data.batch_size_per_gpu={a.batch_size}",
            f"data.num_workers={a.workers}", f"train.max_steps={steps}", "train.max_minutes=null",
            "train.sample_every_n_steps=0", "train.final_samples=false", "train.checkpoint_every_n_steps=1000000",
            "logger.wandb=disabled", "train.log_every_n_steps=10", f"train.compile={str(a.compile).lower()}",
            f"hydra.run.dir={run_dir}", *extra, *a.overrides]


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def build_data(a) -> None:
    """The dataset first, once: runs started side by side must not all build it."""
    if not (Path(a.data) / "info.json").exists():
        python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        subprocess.run([sys.executable, str(ROOT / "data" / "make_moving_shapes.py"), "--root", a.data,
                        "--clips-per-combo", "8", "--num-frames", str(a.frames), "--size-px", str(a.size_px)],
                       check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": python_path})


def run_mfu(a) -> None:
    build_data(a)
    run_dir = Path(a.out) / "mfu"
    t0 = time.perf_counter()
    # A profile, if asked for, covers the steps after the measured ones: its overhead stays out of the MFU windows.
    extra = ["data.eval_shards=null", f"train.profile_steps={a.profile_steps}", f"train.profile_start_step={a.steps}"]
    steps = a.steps + (a.profile_steps + 1 if a.profile_steps else 0)
    done = subprocess.run(train_args(a, run_dir, steps, extra), cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"train.py failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    # The Throughput callback logs once per train.log_every_n_steps (10) window; the first two hold compilation
    # (and a recompilation at the second step) and warm-up.
    windows = [r for r in read_metrics(run_dir) if "perf/tflops_per_device" in r and r["step"] < a.steps][2:]
    if not windows:
        sys.exit(f"{a.steps} steps gave no Throughput window after the first two: use --steps 40 or more")
    mean = lambda key: sum(r[key] for r in windows) / len(windows) if all(key in r for r in windows) else None
    grid = [a.frames, a.size_px // 2, a.size_px // 2]
    row = {"bench": "train_runs.mfu", "preset": a.preset, "grid": grid,
           "tokens": a.frames * (a.size_px // 2) ** 2 * a.batch_size,
           "batch_size": a.batch_size, "backend": a.backend, "compile": a.compile, "windows": len(windows),
           "train_tflops": float(f"{mean('perf/tflops_per_device'):.3g}"),  # 3 figures: a tiny CPU run is < 0.005
           "train_tokens_per_s": round(mean("perf/tokens_per_s"), 1),
           "train_mfu": None if mean("perf/mfu") is None else round(mean("perf/mfu"), 4),
           "wall_s": round(time.perf_counter() - t0, 1)}
    if a.profile_steps:  # where a step's wall time goes: RUN/profile/{summary.json, table.txt, trace.json}
        summary = json.loads((run_dir / "profile" / "summary.json").read_text())
        keys = ("steps", "wall_ms_per_step", "device_busy_ms_per_step", "device_busy_share")
        row.update({f"profile_{k}": summary[k] for k in keys}, profile_dir=str(run_dir / "profile"))
    # dit_step.py's presets are the config files' (width, depth, heads)
    if a.bench_row and a.batch_size == 1 and a.preset != "tiny":
        step = [sys.executable, str(ROOT / "bench" / "dit_step.py"), "--preset", a.preset, "--grid", *map(str, grid),
                "--batch-size", "1", "--models", "ours_cross", "--attention-backend", a.backend,
                "--text-len", str(TEXT_LEN), "--text-dim", str(TEXT_DIM)] + (["--compile"] if a.compile else [])
        bench = subprocess.run(step, cwd=ROOT, capture_output=True, text=True)
        lines = [json.loads(line) for line in bench.stdout.splitlines() if line.startswith("{")]
        if lines and "tflops" in lines[0]:
            b = lines[0]
            row.update(bench_tflops=b["tflops"], bench_mfu=b["mfu"], bench_peak_mem_mb=b["peak_mem_mb"],
                       train_over_bench=round(row["train_tflops"] / b["tflops"], 3))
        else:
            last_stderr_line = (bench.stderr.strip().splitlines() or ["?"])[-1]
            row["bench_error"] = ((lines[0].get("error") if lines else None) or last_stderr_line)[:300]
    print(json.dumps(row), flush=True)


def run_fp8(a) -> None:
    build_data(a)
    names = ["bf16"] + a.recipes.split(",")
    procs = {}
    for name in names:  # side by side: the loss is compared here, not the speed (bench/dit_step.py --fp8 has that)
        run_dir = Path(a.out) / f"fp8_{name}"
        extra = [f"data.eval_shards={a.data}/test-*.tar", "val.every_n_steps=0",
                 f"train.fp8={'null' if name == 'bf16' else name}"]
        with open(Path(a.out) / f"fp8_{name}.log", "w") as log:  # the child keeps its own handle
            procs[name] = (subprocess.Popen(train_args(a, run_dir, a.steps, extra), cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT), run_dir)
    curves, vals = {}, {}
    for name, (proc, run_dir) in procs.items():
        if proc.wait() != 0:
            print(json.dumps({"bench": "train_runs.fp8", "run": name,
                              "error": f"train.py exited {proc.returncode}: see {run_dir}.log"}))
            continue
        rows = read_metrics(run_dir)
        curves[name] = {int(r["step"]): r["train/loss"] for r in rows if "train/loss" in r}
        vals[name] = next((r["val/loss"] for r in reversed(rows) if "val/loss" in r), None)
    tail = lambda c: [v for s, v in c.items() if s >= a.steps - 100]
    for name, curve in curves.items():
        row = {"bench": "train_runs.fp8", "run": name, "preset": a.preset, "steps": a.steps,
               "logged_points": len(curve), "loss_last100": round(sum(tail(curve)) / len(tail(curve)), 5),
               "val_loss": vals[name]}
        if name != "bf16" and "bf16" in curves:
            both = sorted(set(curve) & set(curves["bf16"]))
            gaps = [curve[s] - curves["bf16"][s] for s in both]
            val_gap = None if vals[name] is None or vals["bf16"] is None else round(vals[name] - vals["bf16"], 5)
            row.update(mean_gap_vs_bf16=round(sum(gaps) / len(gaps), 5),
                       mean_abs_gap_vs_bf16=round(sum(map(abs, gaps)) / len(gaps), 5), val_gap_vs_bf16=val_gap)
        print(json.dumps(row), flush=True)
    with open(Path(a.out) / "fp8_curves.json", "w") as f:
        json.dump(curves, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench", choices=["mfu", "fp8"])
    p.add_argument("--preset", default="XL128", help="a configs/dit/ preset")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size-px", type=int, default=64, help="frame side in pixels (tokens a frame: (size_px/2)^2)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--backend", default="sdpa", help="dit.attention_backend")
    p.add_argument("--compile", action="store_true", help="train.compile=true")
    p.add_argument("overrides", nargs="*", help="more train.py overrides for every run, e.g. train.param_dtype=bf16")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="mfu: then profile this many steps (train.profile_steps)")
    p.add_argument("--no-bench-row", dest="bench_row", action="store_false",
                   help="mfu: skip dit_step.py's row "
                        "(compare with bench/backends.py's row of the same session instead)")
    p.add_argument("--recipes", default="tensorwise,rowwise", help="fp8: the train.fp8 recipes beside bf16")
    p.add_argument("--workers", type=int, default=4, help="data.num_workers")
    p.add_argument("--data", default="/tmp/sora_bench_shapes", help="the moving-shapes dataset (built here if absent)")
    p.add_argument("--out", default="/tmp/sora_bench_runs", help="run directories")
    a = p.parse_intermixed_args()  # overrides may follow the options
    if a.size_px % 2 or a.frames < 1 or a.steps < 1 or a.profile_steps < 0:
        p.error("--size-px must be even; --frames and --steps at least 1; --profile-steps at least 0")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    {"mfu": run_mfu, "fp8": run_fp8}[a.bench](a)


if __name__ == "__main__":
    main()
