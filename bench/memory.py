"""The dry run's peak-memory estimate against a measured peak, one training configuration per fresh process.

    python bench/memory.py                                      # the three CPU rows of docs/BENCHMARKS.md
    python bench/memory.py --overrides dit=S data.height=64     # one row, any train.py overrides

Each row composes configs/train.yaml with its overrides, estimates the peak as `train.dry_run=true` does
(sora/models/memory.py), then builds the run's model, EMA and AdamW, and runs three training steps (forward, loss,
backward, gradient clipping, AdamW, EMA: the steps train.py runs, without Lightning) on random clips of the bucket's
shape. Measured peak on CPU: the process's resident high-water mark (VmHWM, reset just before the model is built)
minus its resident size then, with glibc told to return freed tensors to the OS (MALLOC_MMAP_THRESHOLD_=65536;
by default it keeps large freed blocks resident, and the high-water mark then counts memory no tensor holds:
--default-malloc shows it); on CUDA: torch.cuda.max_memory_allocated. Prints one JSON line a row.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CPU_ROWS = [
    ["dit.checkpoint_fraction=0"],  # the quick start: tiny DiT, 8x32x32 pixels, batch 16
    ["dit=S", "dit.patch_size=[1,4,4]", "data.height=64", "data.width=64", "data.batch_size_per_gpu=2"],
    ["dit=S", "dit.patch_size=[1,4,4]", "data.height=64", "data.width=64", "data.batch_size_per_gpu=2",
     "dit.checkpoint_fraction=1"],
]


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(overrides: list[str], steps: int = 3) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from sora.config import check_train_config, register_schemas
    from sora.inference.bundle import ModelBundle
    from sora.models.dit import DiT
    from sora.models.memory import GiB, training_memory
    from sora.training.dit_task import DiTTask
    from sora.training.dry_run import _precision

    register_schemas()
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=overrides)
    check_train_config(cfg)
    torch.set_num_threads(cfg.train.num_threads or torch.get_num_threads())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = _precision(cfg)
    d = cfg.data
    video = torch.rand(d.batch_size_per_gpu, 3, d.num_frames, d.height, d.width) * 2 - 1  # b c t h w
    captions = ["a red circle moving left"] * d.batch_size_per_gpu
    if device.type == "cpu":
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
        base = _status("VmRSS")
    else:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    task = DiTTask(cfg, ModelBundle.build(cfg)).to(device)
    task.train()
    opt = task.configure_optimizers()["optimizer"]
    trained = sum(p.numel() for p in task.trained_parameters())
    frozen = sum(p.numel() for p in task.model.parameters()) - trained
    text_len = task.model.encode_text(captions[:1]).text.shape[1]
    grid = task.model.geometry.token_grid(d.num_frames, d.height, d.width)
    with torch.device("meta"):
        meta_dit = DiT(task.model.vae.latent_channels, task.model.text.dim, task.model.dit.args)
    estimate = training_memory(meta_dit, trained, frozen, grid, text_len, d.batch_size_per_gpu, video.numel() * 4,
                               precision)
    batch = {"video": video.to(device), "caption": captions}
    for step in range(steps):
        with torch.autocast(device.type, torch.bfloat16, enabled=precision.startswith("bf16")):
            latent = task.latents(batch)
            loss = task.model.objective.loss(task.model.dit, latent, task.conditioning(batch, latent))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(task.trained_parameters()), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        task.ema.update(task.model.trainable(), step)
    if device.type == "cuda":
        measured = torch.cuda.max_memory_allocated() - base
    else:
        measured = _status("VmHWM") - base
    return {"overrides": overrides, "device": str(device), "precision": precision, "params_trained": trained,
            "estimate_gib": estimate.as_gib(), "measured_gib": round(measured / GiB, 3),
            "error": round(estimate.total / measured - 1, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overrides", nargs="*", help="one row's train.py overrides (default: the CPU rows)")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator at its defaults")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a row, in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.overrides or [])), flush=True)
        return
    for row in [args.overrides] if args.overrides is not None else CPU_ROWS:
        env = dict(os.environ) if args.default_malloc else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536",
                                                                    "MALLOC_TRIM_THRESHOLD_": "0"}
        out = subprocess.run([sys.executable, __file__, "--one", "--overrides", *row], capture_output=True, text=True,
                             env=env)
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
