"""The README's main job, unchanged: `python train.py` reaches the issue's probe targets (about 12 minutes)."""

import json

import pytest

from tests.conftest import ROOT, run_entry


@pytest.mark.slow
def test_quick_start_reaches_probe_targets(tmp_path):
    proc = run_entry("train.py", f"hydra.run.dir={tmp_path}", "logger.wandb=disabled", cwd=ROOT, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    heldout = json.loads((tmp_path / "results.json").read_text())["probe"]["heldout"]
    assert heldout["color_acc"] >= 0.9 and heldout["direction_acc"] >= 0.8, heldout
