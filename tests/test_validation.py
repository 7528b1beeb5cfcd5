"""The validation loss (identical on 1 and 2 processes, and across evaluations), progress that tells the truth,
the dry run and its memory estimate."""

import json
import os
import tarfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import compose_config, run_entry, shrunk_overrides, train_in_process
from tests.test_distributed import free_port


def _val_config(shapes_dir):
    overrides = [o for o in shrunk_overrides(shapes_dir, "/tmp/unused") if not o.startswith("hydra.")]
    # 8 clips in batches of 3, 3, 2: the ranks get 2 and 1
    return compose_config("train", overrides + ["val.batch_size=3"])


def _val_loss(shapes_dir, rank: int = 0, world: int = 1) -> dict:
    from sora.data.buckets import BucketSet
    from sora.eval.validation import ValidationLoss
    from sora.inference.bundle import ModelBundle

    cfg = _val_config(shapes_dir)
    torch.manual_seed(0)
    bundle = ModelBundle.build(cfg)
    return ValidationLoss(cfg.data, cfg.val, BucketSet.from_config(cfg.data, bundle.geometry), rank, world)(bundle)


def _worker(rank, world, port, shapes_dir, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = _val_loss(shapes_dir, rank, world)
        if rank == 0:
            out.write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_validation_loss_is_identical_on_one_and_two_processes_and_across_evaluations(shapes_dir, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one, again = _val_loss(shapes_dir), _val_loss(shapes_dir)
    finally:
        torch.set_num_threads(threads)
    assert one == again
    assert one["num_clips"] == 8
    assert list(one["per_timestep"]) == [f"{t:g}" for t in _val_config(shapes_dir).val.timesteps]
    out = tmp_path / "two.json"
    mp.spawn(_worker, args=(2, free_port(), shapes_dir, out), nprocs=2)
    assert json.loads(out.read_text()) == one  # bit for bit, every timestep


def test_progress_counts_toward_the_time_budget_when_it_ends_the_run_first():
    from sora.training.progress import progress_line

    # 13-minute run, max_steps=100000, 5 steps/s: the budget ends it, 12 minutes from now (not 5.5 hours)
    line = progress_line(300, 100000, 60.0, 13 * 60.0, 5.0)
    assert "1.0 min of 13.0 min" in line and "12.0 min left (time budget)" in line
    line = progress_line(10, 20, 5.0, 13 * 60.0, 2.0)  # 10 steps left at 2 steps/s: the step limit comes first
    assert "5 s left (max_steps=20)" in line
    assert "left (max_steps=20)" in progress_line(10, 20, 5.0, None, 2.0)


def test_train_logs_validation_and_plain_progress_lines(shapes_dir, tmp_path):
    proc = run_entry("train.py", *shrunk_overrides(shapes_dir, tmp_path), "val.every_n_steps=1",
                     "train.final_samples=false", "train.progress_every_s=0.001")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "val_loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(b["train_seconds"] >= a["train_seconds"] for a, b in zip(rows, rows[1:]))
    assert json.loads((tmp_path / "results.json").read_text())["val_loss"] == rows[-1]["loss"]
    log = (tmp_path / "train.log").read_text()
    assert "\r" not in proc.stderr and "\r" not in log  # not a terminal: lines, no bar frames
    assert "step 3 of 3" in log and "val loss" in log


def _count_clips(pattern_dir) -> int:
    return sum(name.endswith(".mp4") for p in pattern_dir.glob("train-*.tar") for name in tarfile.open(p).getnames())


def test_dry_run_reports_and_fails_on_a_bucket_without_clips(shapes_dir, tmp_path):
    proc = train_in_process(*shrunk_overrides(shapes_dir, tmp_path / "ok"), "train.dry_run=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "ok" / "dry_run.json").read_text())
    (bucket,) = report["buckets"]
    assert bucket["clips"] == _count_clips(shapes_dir) and bucket["tokens_per_batch"] == 4 * 2 * 2 * 2
    assert bucket["tflops_per_step"] > 0 and bucket["peak_memory_gib"]["total"] > 0 and report["params"]["trained"] > 0
    assert not (tmp_path / "ok" / "checkpoints" / "last.ckpt").exists()  # nothing trained
    proc = train_in_process(*shrunk_overrides(shapes_dir, tmp_path / "bad"), "train.dry_run=true",
                            "data.buckets=[[4,16,16],[4,16,32]]")
    assert proc.returncode == 2
    assert "data.buckets: bucket [4, 16, 32] (frames, height, width) receives no clip" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_memory_trace_counts_what_a_real_cpu_forward_saves(fraction):
    """The meta-device count of saved activations equals what a real forward on CPU saves (fused attention)."""
    from sora.models.conditioning import Conditioning
    from sora.models.dit import DiT, DiTArgs
    from sora.models.memory import saved_activation_bytes

    args = DiTArgs(hidden_size=64, depth=2, num_heads=4, patch_size=[1, 2, 2])
    with torch.device("meta"):
        meta = DiT(3, 16, args)
    outside, blocks, _ = saved_activation_bytes(meta, (2, 4, 4), 5, 3)
    real = DiT(3, 16, args)
    params = {p.untyped_storage().data_ptr() for p in real.parameters()}
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = torch.randn(3, 3, 2, 8, 8)
    cond = Conditioning(torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        real(x, torch.full((3,), 0.5), cond)
    assert outside + sum(blocks) == pytest.approx(sum(seen.values()), rel=0.05)
