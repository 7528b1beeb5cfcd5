"""`python train.py -m key=a,b`: one directory a run, one wandb group a sweep, and the report command."""

import json

from tests.conftest import run_entry, shrunk_overrides


def test_multirun_sweep_and_its_report(shapes_dir, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [o for o in shrunk_overrides(shapes_dir, tmp_path) if not o.startswith("hydra.")]
    proc = run_entry("train.py", "-m", *overrides, f"hydra.sweep.dir={sweep}", "train.final_samples=false",
                     "val.every_n_steps=1", "dit.qk_norm=true,false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0", "1"]
    for run in runs:
        assert json.loads((run / "results.json").read_text())["steps"] == 3
        assert len((run / "val_loss.jsonl").read_text().splitlines()) == 3
        (wandb_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
        assert str(sweep).encode() in wandb_file.read_bytes()  # the sweep is the wandb group
    proc = run_entry("-m", "sora.eval.report", str(sweep))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (sweep / "report.md").read_text()
    assert "`dit.qk_norm=true`" in report.lower() and "`dit.qk_norm=false`" in report.lower()
    rows = [line for line in report.splitlines() if line.startswith("| 0 ") or line.startswith("| 1 ")]
    assert len(rows) == 2 and all("| 3 |" in row for row in rows)
    for name in ("val_loss_steps.png", "val_loss_wall.png"):
        assert (sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_directory_without_runs_is_one_line(tmp_path):
    proc = run_entry("-m", "sora.eval.report", str(tmp_path))
    assert proc.returncode == 2 and "holds no run" in proc.stderr and "Traceback" not in proc.stderr
