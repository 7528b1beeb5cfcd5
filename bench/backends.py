"""MFU and peak memory of one preset for each attention backend, eager and compiled, at each token count.

Runs bench/dit_step.py once per (tokens, mode, backend), each row in its own process, and prints its JSON rows
(step time, tokens/s, TFLOP/s, MFU where the GPU's peak is known, peak memory). With --peer wan the first
backend of each (tokens, mode) also runs diffusers' WanTransformer3DModel at the same width, depth, heads, FFN
width (4x), patch (1x2x2), latent channels (16), text length and token count, with its default attention,
eager and compiled alike; dit_step.py adds the speed-up and memory ratio rows.

    python bench/backends.py                  # GPU: XL128 (9 heads of 128) at 16k and 32k tokens, bf16
    python bench/backends.py --tiny           # CPU, seconds: the same rows at a toy size (what the test runs)

A backend this machine lacks gives a row with its one-line error, not a stop.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP = ROOT / "bench" / "dit_step.py"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="XL128", help="a bench/dit_step.py preset")
    p.add_argument("--grids", nargs="+", default=["16,32,32", "32,32,32"], help="latent token grids T,H,W")
    p.add_argument("--backends", help="default: sdpa,cudnn,flash,fa4,flex (--tiny: sdpa,flash,math)")
    p.add_argument("--modes", default="eager,compiled")
    p.add_argument("--peer", default="wan", help="a dit_step.py peer row, or 'none'")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: cpu preset, 1x2x2 tokens, CPU backends, eager")
    p.add_argument("--timeout", type=int, default=600, help="seconds per dit_step.py run")
    p.add_argument("--modulation", default="per_block",
                   help="ours: dit.modulation (per_block, or single: adaLN-single)")
    p.add_argument("--profile-out", help="a per-kernel profile of one step of each of our rows, into this folder")
    a = p.parse_args()
    extra = []
    if a.tiny:
        a.preset, a.grids, a.modes, a.steps, a.warmup = "cpu", ["1,2,2"], "eager", 1, 0
        a.backends = a.backends or "sdpa,flash,math"
        extra = ["--heads", "3", "--text-len", "4", "--text-dim", "32"]
    a.backends = a.backends or "sdpa,cudnn,flash,fa4,flex"
    for grid in a.grids:
        t, h, w = (int(v) for v in grid.split(","))
        for mode in a.modes.split(","):
            if mode not in ("eager", "compiled"):
                p.error(f"--modes: eager or compiled, got {mode!r}")
            for i, backend in enumerate(a.backends.split(",")):
                models = "ours_cross" + (f",{a.peer}" if i == 0 and a.peer != "none" else "")
                args = [sys.executable, str(STEP), "--preset", a.preset, "--grid", str(t), str(h), str(w),
                        "--batch-size", "1", "--models", models, "--attention-backend", backend,
                        "--steps", str(a.steps), "--warmup", str(a.warmup), "--modulation", a.modulation,
                        *extra] + (["--compile"] if mode == "compiled" else [])
                if a.profile_out:
                    args += ["--profile-out", a.profile_out]
                try:
                    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=a.timeout)
                    lines = done.stdout.strip().splitlines()
                    if done.returncode != 0 or not lines:
                        lines = [json.dumps({"error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]})]
                except subprocess.TimeoutExpired:
                    lines = [json.dumps({"error": f"timed out after {a.timeout} s"})]
                for line in lines:
                    row = json.loads(line)
                    print(json.dumps({**row, "bench": "backends", "mode": mode, "backend": backend}), flush=True)


if __name__ == "__main__":
    main()
