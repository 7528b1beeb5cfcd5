"""Runs that die lose nothing: preemption and exact resume, checkpoint rotation and fallback, non-finite steps."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from sora.errors import SoraError
from sora.training.resilience import NonFiniteError, NonFiniteGuard, find_resume_checkpoint, rng_state, set_rng_state
from tests.conftest import ROOT, run_entry, shrunk_overrides, train_in_process
from tests.conftest import logged_losses as losses

EXACT = ["optim.schedule=constant", "optim.warmup_steps=2", "train.sample_every_n_steps=0", "train.final_samples=false",
         "logger.wandb=disabled", "train.log_every_n_steps=1", "train.checkpoint_every_n_steps=2"]


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_sigterm_saves_stops_cleanly_and_the_resumed_loss_curve_is_the_uninterrupted_one(shapes_dir, tmp_path):
    run = tmp_path / "interrupted"
    args = [*shrunk_overrides(shapes_dir, run), *EXACT, "train.max_steps=100000"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list((run / "checkpoints").glob("step*.ckpt")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "SIGTERM received" in out and "rerun the same command" in out
    stopped = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert stopped >= 2
    first = losses(run)
    shutil.copy(run / "metrics.csv", tmp_path / "first.csv")

    total = stopped + 4
    ok(train_in_process(*[a for a in args if not a.startswith("train.max_steps")], f"train.max_steps={total}"))
    resumed = losses(run)
    straight = tmp_path / "straight"
    ok(train_in_process(*shrunk_overrides(shapes_dir, straight), *EXACT, f"train.max_steps={total}"))
    reference = losses(straight)
    assert sorted(reference) == list(range(total))
    for step in range(stopped):
        assert first[step] == pytest.approx(reference[step], rel=1e-5), step
    for step in range(stopped, total):  # the steps after the resume: same data, noise, timesteps, optimizer
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5), step


def test_keep_last_n_and_fallback_past_a_corrupt_last_checkpoint(shapes_dir, tmp_path):
    run = tmp_path / "run"
    ok(run_entry("train.py", *shrunk_overrides(shapes_dir, run), "train.max_steps=5",
                 "train.checkpoint_every_n_steps=1", "train.keep_last_n=2", "train.final_samples=false",
                 "train.sample_every_n_steps=0"))
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step*.ckpt")) == ["step0000004.ckpt", "step0000005.ckpt"]
    assert not list(ckpts.glob("*.tmp"))
    record = json.loads((run / "run.json").read_text())
    assert record["git_commit"] and record["versions"]["torch"] and "train.py" in record["command"][1]
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["sora_run"]["git_commit"] == record["git_commit"]

    data = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(data[: len(data) // 2])  # a write cut short
    assert find_resume_checkpoint(ckpts) == ckpts / "step0000005.ckpt"
    proc = ok(train_in_process(*shrunk_overrides(shapes_dir, run), "train.max_steps=6", "train.final_samples=false"))
    out = proc.stdout + proc.stderr
    assert "last.ckpt unreadable" in out and "resuming from" in out and "step0000005.ckpt" in out
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 6

    for p in ckpts.glob("*.ckpt"):
        p.write_bytes(b"garbage")
    with pytest.raises(SoraError, match="no readable checkpoint"):
        find_resume_checkpoint(ckpts)


class RunsCode:
    def __reduce__(self):
        return (print, ("this would have run on load",))


def test_an_unsafe_last_checkpoint_is_refused_in_one_line_and_the_run_falls_back(shapes_dir, tmp_path):
    from sora.inference.checkpoint import checkpoint_problem

    run = tmp_path / "run"
    args = [*shrunk_overrides(shapes_dir, run), "train.checkpoint_every_n_steps=2", "train.final_samples=false",
            "train.sample_every_n_steps=0"]
    ok(train_in_process(*args, "train.max_steps=4"))
    ckpts = run / "checkpoints"
    torch.save({"state_dict": {}, "sora_config": {}, "payload": RunsCode()}, ckpts / "last.ckpt")
    assert "would run code" in checkpoint_problem(ckpts / "last.ckpt")
    assert find_resume_checkpoint(ckpts) == ckpts / "step0000004.ckpt"
    proc = ok(train_in_process(*args, "train.max_steps=5"))
    out = proc.stdout + proc.stderr
    assert "last.ckpt: it would run code when loaded, so it is refused" in out and "Traceback" not in out
    assert "resuming from" in out and "step0000004.ckpt" in out and "this would have run" not in out
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 5


def test_a_run_started_from_a_copied_checkpoint_and_killed_resumes_from_its_newest_step(shapes_dir, tmp_path):
    """The docs start a run from another's checkpoint copied in as last.ckpt; each periodic save must overwrite it
    (Lightning's default wrote last-v1.ckpt instead), so a SIGKILL between saves loses only the steps since the last."""
    first, run = tmp_path / "first", tmp_path / "run"
    quiet = ["train.final_samples=false", "train.sample_every_n_steps=0", "logger.wandb=disabled"]
    ok(train_in_process(*shrunk_overrides(shapes_dir, first), *quiet, "train.max_steps=2"))
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(first / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    args = [*shrunk_overrides(shapes_dir, run), *quiet, "train.checkpoint_every_n_steps=1", "train.max_steps=100000"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                            env={**os.environ, "WANDB_MODE": "disabled"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step0000005.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.kill()  # no preemption save: what resumes is what the periodic saves left
    proc.wait(timeout=60)
    ckpts = run / "checkpoints"
    newest_step = max(int(p.stem[4:]) for p in ckpts.glob("step*.ckpt"))
    assert newest_step >= 5
    assert not list(ckpts.glob("last-v*.ckpt"))
    resume = find_resume_checkpoint(ckpts)  # the kill may fall between a step's two saves: one step behind at most
    assert torch.load(resume, weights_only=True)["global_step"] >= newest_step - 1


def test_a_run_resumed_with_another_model_is_refused_in_one_line_naming_the_setting(shapes_dir, tmp_path):
    """A run started before a default changed (here the head) and rerun as it was: one line naming the setting its
    run had, its config.yaml kept; given that setting again, it resumes."""
    run = tmp_path / "run"
    args = [*shrunk_overrides(shapes_dir, run), "train.final_samples=false", "train.sample_every_n_steps=0"]
    ok(train_in_process(*args, "dit.head_mlp_width=0", "train.max_steps=2"))
    proc = train_in_process(*args, "train.max_steps=3")  # today's default head
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "cannot resume from" in proc.stderr and "dit.head_mlp_width=0 (now 512)" in proc.stderr
    assert "head_mlp_width: 0" in (run / "checkpoints" / "config.yaml").read_text()  # the run's record is kept
    proc = ok(train_in_process(*args, "dit.head_mlp_width=0", "train.max_steps=3"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_nonfinite_guard_skips_then_stops():
    guard = NonFiniteGuard(3)
    assert guard.check("loss", True, 0)
    assert not guard.check("loss", False, 1) and not guard.check("gradient", False, 2)
    assert guard.check("loss", True, 3) and guard.consecutive == 0 and guard.total == 2
    guard.check("loss", False, 4)
    guard.check("loss", False, 5)
    with pytest.raises(NonFiniteError, match="3 steps in a row.*step 6"):
        guard.check("loss", False, 6)


def test_a_run_of_nan_steps_stops_with_a_message_and_a_checkpoint(shapes_dir, tmp_path):
    run = tmp_path / "nan"
    # A learning rate of 1e30 overflows the weights at the first update: every later loss is NaN/Inf.
    proc = train_in_process(*shrunk_overrides(shapes_dir, run), "optim.lr=1e30", "optim.warmup_steps=1",
                            "optim.grad_clip=0", "train.max_steps=50", "train.max_nonfinite_steps=3",
                            "train.final_samples=false", "train.sample_every_n_steps=0")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "non-finite" in proc.stderr and "Checkpoint of the last good weights" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (run / "checkpoints" / "last.ckpt").exists()


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.save({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(5), random.random(), np.random.rand()
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]
