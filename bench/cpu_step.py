"""The quick start's training step on a CPU: where its time goes, and this code against an earlier commit's.

    python bench/cpu_step.py parts [--steps 60]            # seconds a step per part: data, forward, backward,
                                                           # optimizer, EMA; torch's default AdamW beside fused
    python bench/cpu_step.py ratio --ref ce06fe2 [--steps 400 --rounds 2]
                                                           # train.py here and at REF, alternating, same command
    python bench/cpu_step.py budget --ref ce06fe2 [--ref-steps 1200 --out DIR]
                                                           # the whole quick start here against REF_STEPS of REF's

`parts` builds the quick start's DiT task and loader in this process (the same modules train.py runs, without
Lightning) and times each part of every step; the first 10 steps are warm-up. `ratio` runs `python train.py` of
this checkout and of a REF checkout (a temporary git worktree) for the same number of steps with the quick
start's settings, one after the other, and reads each run's steps a second from its Throughput log (the
quick start's steps all hold 16 clips of 64 tokens); the first two windows of 25 steps are warm-up. Results go
to stdout as JSON lines; docs/BENCHMARKS.md keeps them with the machine they came from.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK_START = ["train.final_samples=false", "train.sample_every_n_steps=0", "val.every_n_steps=0",
               "logger.wandb=disabled", "train.log_every_n_steps=25", "train.max_minutes=null"]
# What this checkout must be told to train what the quick start trained before issue 28 changed its recipe (the
# timestep distribution and the loss's weighting: the same work a step), so `ratio` times the same steps at REF.
BEFORE_ISSUE_28 = ["objective.loss_t_floor=0.05", "objective.logit_normal_mean=0.0"]
TOKENS_PER_STEP = 16 * 64  # the quick start: 16 clips of 4 x 4 x 4 tokens (8 frames of 32 x 32 at 2 x 8 x 8)

# ---------------------------------------------------------------------------------------------------------------
# parts: one step taken apart
# ---------------------------------------------------------------------------------------------------------------


def parts(steps: int, optimizer: str) -> dict:
    """Mean seconds a step per part, after 10 warm-up steps; `optimizer`: fused (train.py's) or loop (torch's
    CPU default, a Python loop over the tensors)."""
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT))
    from sora.config import check_train_config, register_schemas
    from sora.data.buckets import BucketSet
    from sora.data.stream import make_loader
    from sora.training import TASKS

    register_schemas()
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=[f"hydra.run.dir={tempfile.mkdtemp()}"])
    check_train_config(cfg)
    torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(0)
    from train import prepare_data

    prepare_data(cfg)
    task = TASKS["dit"].from_config(cfg)
    params = list(task.trained_parameters())
    o = cfg.optim
    opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                            fused=optimizer == "fused", foreach=False if optimizer == "loop" else None)
    buckets = BucketSet.from_config(OmegaConf.to_object(cfg.data), task.geometry)
    batches = iter(make_loader(cfg.data, seed=0, buckets=buckets))
    times = {k: [] for k in ("data", "forward", "backward", "optimizer", "ema")}
    for step in range(steps + 10):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        latent = task.latents(batch)
        loss = task.model.objective.loss(task.model.dit, latent, task.conditioning(batch, latent))
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        task.ema.update(task.model.trainable(), step)
        t5 = time.perf_counter()
        if step >= 10:
            for key, a, b in (("data", t0, t1), ("forward", t1, t2), ("backward", t2, t3), ("optimizer", t3, t4),
                              ("ema", t4, t5)):
                times[key].append(b - a)
    mean = {k: statistics.mean(v) for k, v in times.items()}
    total = sum(mean.values())
    return {"optimizer_kind": optimizer, "steps": steps, "s_per_step": round(total, 4),
            "s": {k: round(v, 4) for k, v in mean.items()}, "share": {k: round(v / total, 3) for k, v in mean.items()}}


# ---------------------------------------------------------------------------------------------------------------
# ratio: train.py here against train.py at an earlier commit
# ---------------------------------------------------------------------------------------------------------------


def steps_per_s(run_dir: Path) -> float:
    """Mean steps a second of a run's Throughput windows, the first two (warm-up) left out."""
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    rates = [float(r["perf/tokens_per_s"]) / TOKENS_PER_STEP for r in rows if r.get("perf/tokens_per_s")]
    if len(rates) < 3:
        raise SystemExit(f"{run_dir}: {len(rates)} throughput windows; give more --steps")
    return statistics.mean(rates[2:])


def run_train(checkout: Path, steps: int, out: Path, extra: list[str] = ()) -> float:
    cmd = [sys.executable, "train.py", *QUICK_START, *extra, f"train.max_steps={steps}", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{checkout}: train.py failed:\n{proc.stderr[-3000:]}")
    return steps_per_s(out)


def ratio(ref: str, steps: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ref_tree = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(ref_tree), ref], cwd=ROOT, check=True)
        try:
            rates = {"here": [], "ref": []}
            for r in range(rounds):
                for name, tree in (("ref", ref_tree), ("here", ROOT)):
                    extra = BEFORE_ISSUE_28 if name == "here" else []
                    rates[name].append(run_train(tree, steps, Path(tmp) / f"{name}{r}", extra))
                    print(json.dumps({"round": r, "tree": name, "steps_per_s": round(rates[name][-1], 3)}),
                          flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=ROOT, check=False)
    here, before = statistics.mean(rates["here"]), statistics.mean(rates["ref"])
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"ref": ref, "here": head.stdout.strip(), "steps": steps, "rounds": rounds,
            "steps_per_s": {"here": round(here, 3), "ref": round(before, 3)},
            "s_per_step": {"here": round(1 / here, 4), "ref": round(1 / before, 4)},
            "step_time_ratio_here_over_ref": round(before / here, 3)}


# ---------------------------------------------------------------------------------------------------------------
# budget: the quick start's whole run here against REF_STEPS steps of the quick start at REF
# ---------------------------------------------------------------------------------------------------------------


def timed_run(checkout: Path, overrides: list[str], out: Path) -> dict:
    """One `python train.py` run: its wall time, the training loop's time and the results it wrote."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", "logger.wandb=disabled", f"hydra.run.dir={out}", *overrides],
                          cwd=checkout, capture_output=True, text=True)
    wall_s = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{checkout}: train.py failed:\n{proc.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    return {"wall_s": round(wall_s, 1), "train_s": round(results["val"]["train_seconds"], 1),
            "steps": results["steps"], "results": results}


def budget(ref: str, ref_steps: int, out: Path | None) -> dict:
    """`python train.py` as a newcomer runs it, here, against the training of `ref_steps` steps of the quick start
    at REF (its own defaults, no final samples), one after the other: the ratio of training times, and what the
    rest of the run here (dataset, start-up, final samples and scores) takes."""
    with tempfile.TemporaryDirectory() as tmp:
        ref_tree = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(ref_tree), ref], cwd=ROOT, check=True)
        try:
            old = timed_run(ref_tree, ["train.max_minutes=null", f"train.max_steps={ref_steps}",
                                       "train.final_samples=false"], Path(tmp) / "ref_run")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=ROOT, check=False)
        new = timed_run(ROOT, [], (out or Path(tmp)) / "here_run")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    res = new.pop("results")
    old.pop("results")
    return {"ref": ref, "here": head.stdout.strip(), "ref_run": old, "here_run": new,
            "train_time_ratio_here_over_ref": round(new["train_s"] / old["train_s"], 3),
            "here_rest_of_run_s": round(new["wall_s"] - new["train_s"], 1),
            "here_scores": {"heldout": res.get("probe", {}).get("heldout"), "train": res.get("probe", {}).get("train")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("parts")
    a.add_argument("--steps", type=int, default=60)
    b = sub.add_parser("ratio")
    b.add_argument("--ref", default="ce06fe2", help="the commit to compare with (default: before issue 28)")
    b.add_argument("--steps", type=int, default=400)
    b.add_argument("--rounds", type=int, default=2)
    c = sub.add_parser("budget")
    c.add_argument("--ref", default="ce06fe2", help="the commit whose quick start sets the budget")
    c.add_argument("--ref-steps", type=int, default=1200, help="the budget: this many of REF's quick-start steps")
    c.add_argument("--out", type=Path, default=None, help="keep the run here in OUT/here_run (default: a temp dir)")
    args = p.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    if args.mode == "parts":
        for kind in ("loop", "fused"):
            print(json.dumps(parts(args.steps, kind)), flush=True)
    elif args.mode == "ratio":
        print(json.dumps(ratio(args.ref, args.steps, args.rounds)), flush=True)
    else:
        print(json.dumps(budget(args.ref, args.ref_steps, args.out)), flush=True)


if __name__ == "__main__":
    main()
