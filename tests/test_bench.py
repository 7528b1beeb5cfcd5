"""bench/dit_step.py runs every row at a tiny shape and prints rows a script can compare; bad flags fail in one line."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ONE_THREAD

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "dit_step.py"
HAVE_DIFFUSERS = importlib.util.find_spec("diffusers") is not None


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **ONE_THREAD})


@pytest.mark.skipif(not HAVE_DIFFUSERS, reason="the peers need diffusers (the dev extra)")
def test_dit_step_rows_and_ratios_at_a_tiny_shape():
    done = run("--grid", "1", "2", "2", "--batch-size", "1", "--heads", "3", "--steps", "1", "--warmup", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    models = {r["model"]: r for r in rows if "model" in r}
    assert set(models) == {"ours_cross", "ours_joint", "wan", "cogvideox"}, rows
    for name, row in models.items():
        assert "error" not in row, (name, row)
        assert row["step_s"] > 0 and row["tokens"] == 4 and row["heads"] == 3, row
    ratios = [r for r in rows if "ratio" in r]
    assert len(ratios) == 3 and all(r["speedup"] > 0 for r in ratios), ratios


def test_dit_step_rejects_heads_that_do_not_divide_the_width():
    done = run("--heads", "5")
    assert done.returncode == 2
    assert "--heads 5 does not divide the cpu preset's width 384" in done.stderr
    assert "Traceback" not in done.stderr


def test_backends_bench_rows_at_a_tiny_size():
    """bench/backends.py --tiny: one row per backend (a backend this machine lacks is an error row, not a stop)."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "backends.py"), "--tiny", "--backends", "flash,cudnn",
                           "--peer", "none"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["backend"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert set(rows) == {"flash", "cudnn"}
    assert all(r["bench"] == "backends" and r["mode"] == "eager" for r in rows.values())
    flash = rows["flash"]
    assert flash["model"] == "ours_cross" and flash["attention_backend"] == "flash" and flash["tokens"] == 4
    assert flash["step_s"] > 0 and flash["peak_mem_mb"] >= 0 and "mfu" in flash, flash
    if not torch.cuda.is_available():
        assert "runs on a CUDA GPU" in rows["cudnn"]["error"], rows["cudnn"]


def test_vae_chunks_bench_at_a_tiny_size():
    """bench/vae.py chunks: the 4x longer clip in chunks equals it whole, and each row reports its peak memory."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "vae.py"), "chunks", "--frames", "5", "--size", "16"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["long_frames"] == 17 and result["chunked_vs_whole_max_abs_diff"] < 1e-4
    assert all(result[row]["peak_mb"] >= 0 and result[row]["seconds"] > 0
               for row in ("short_whole", "short_chunked", "long_whole", "long_chunked"))
    assert result["long_chunked"]["plan"]["chunk_frames"] == 4 and result["long_whole"]["plan"]["tile_px"] == 0


def run_train_bench(tmp_path, *args: str) -> list[dict]:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "train_runs.py"), *args, "--preset", "tiny",
                           "--frames", "2", "--size-px", "16", "--workers", "0", "--data", str(tmp_path / "shapes"),
                           "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_train_runs_mfu_reads_the_throughput_callback_of_a_real_run(tmp_path):
    (row,) = run_train_bench(tmp_path, "mfu", "--steps", "40", "--profile-steps", "2")
    assert row["bench"] == "train_runs.mfu" and row["grid"] == [2, 8, 8] and row["tokens"] == 128, row
    # 4 windows, 2 skipped
    assert row["windows"] == 2 and row["train_tflops"] > 0 and row["train_tokens_per_s"] > 0, row
    assert row["train_mfu"] is None or torch.cuda.is_available(), row  # no MFU without a known GPU peak
    # train.profile_steps: two whole steps after the measured ones, written beside the run
    assert row["profile_steps"] == 2 and row["profile_wall_ms_per_step"] > 0, row
    profile = Path(row["profile_dir"])
    assert "aten::" in (profile / "table.txt").read_text() and (profile / "trace.json").stat().st_size > 0


def test_train_runs_fp8_compares_losses_and_reports_a_run_that_cannot_start(tmp_path):
    rows = {r["run"]: r for r in run_train_bench(tmp_path, "fp8", "--steps", "30", "--recipes", "tensorwise")}
    bf16 = rows["bf16"]
    assert bf16["logged_points"] == 3 and bf16["loss_last100"] > 0 and bf16["val_loss"] > 0, bf16
    if not torch.cuda.is_available():  # train.fp8 stops at the config check: an error row naming its log
        assert "exited 2" in rows["tensorwise"]["error"], rows["tensorwise"]
        log = (tmp_path / "runs" / "fp8_tensorwise.log").read_text()
        assert "train.fp8=tensorwise" in log and "Traceback" not in log, log[-2000:]


def test_dit_step_with_bf16_block_weights_runs_under_bf16_autocast():
    done = run("--models", "ours_cross", "--grid", "1", "2", "2", "--batch-size", "1", "--heads", "3", "--steps", "1",
               "--warmup", "0", "--dtype", "bf16", "--bf16-weights")
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["bf16_weights"] and "error" not in row and row["step_s"] > 0, row
    refused = run("--bf16-weights", "--dtype", "fp32")
    assert refused.returncode == 2 and "add --dtype bf16" in refused.stderr and "Traceback" not in refused.stderr


def bench_module(name: str = "long_video"):
    """bench/NAME.py as a module."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "bench" / f"{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_long_video_bench_rows_at_a_tiny_size(shapes_dir, tmp_path):
    """bench/long_video.py: a row with every switch off, one with all the checkpoint was trained for, and one with
    each of those off in turn; a switch it was not trained for is left out and said so; bad flags in one line."""
    from tests.test_forcing import FORCING, tiny_bundle

    ckpt = tmp_path / "forcing.safetensors"
    tiny_bundle(shapes_dir, tmp_path, *FORCING[:1]).save(str(ckpt))  # per-frame timesteps, no history noise
    (tmp_path / "p.txt").write_text("a red circle moving left\n")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "long_video.py"), str(ckpt), "--prompts",
                           str(tmp_path / "p.txt"), "--lengths", "8", "--steps", "1", "--no-memory", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    left_out = {r["switch"] for r in rows if "left_out" in r}
    assert left_out == {"history_guidance"}  # the checkpoint has no history noise (0.05: its frame_noise, allowed)
    made = {r["row"]: r for r in rows if "row" in r}
    assert set(made) == {"window_by_window", "all", "all - latent_context", "all - context_noise", "all - ar_step"}
    assert made["all"]["long"] == {"latent_context": True, "context_noise": 0.05, "ar_step": 1}
    assert all(r["num_frames"] == 8 and r["seconds_per_video"] > 0 for r in made.values())
    assert (tmp_path / "out" / "all-ar_step" / "8" / "000.mp4").is_file()
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "long_video.py"), str(ckpt), "--lengths", "8,x"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, **ONE_THREAD})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--lengths must be frame counts" in bad.stderr
    some = [sys.executable, str(ROOT / "bench" / "long_video.py"), str(ckpt), "--prompts", str(tmp_path / "p.txt"),
            "--lengths", "8", "--steps", "1", "--no-memory", "--out", str(tmp_path / "some")]
    flags = ["--rows", "all-ar_step", "--cfg", "2.5", "--later-windows-cfg", "1", "--overlap", "3", "--sampler", "heun",
             "--schedule", "shifted"]
    done = subprocess.run(some + flags, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in done.stdout.splitlines() if '"row"' in line]
    assert row["row"] == "all - ar_step" and row["cfg"] == 2.5 and row["steps"] == 1  # --cfg: this text guidance
    # --later-windows-cfg: a switch of the rows (left out of them without it, above); --overlap: each window's history
    assert row["long"] == {"latent_context": True, "context_noise": 0.05, "later_windows_cfg": 1.0}
    assert row["seed"] == 0 and row["overlap_frames"] == 3 and made["all"]["overlap_frames"] == 2  # half a window
    # --sampler and --schedule: this sampler and time schedule; the checkpoint's without them
    assert (row["sampler"], row["schedule"]) == ("heun", "shifted")
    assert (made["all"]["sampler"], made["all"]["schedule"]) == ("euler", "uniform")
    assert made["all"]["steps"] == 1
    assert row["by_bar"]["bar"] == {"n": 0} and row["by_bar"]["no_bar"]["n"] == 1  # no bar in a moving prompt
    bad = subprocess.run(some + ["--sampler", "rk4"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, **ONE_THREAD})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--sampler: invalid choice: 'rk4'" in bad.stderr
    for flag in ("--overlap", "--later-windows-cfg"):
        bad = subprocess.run(some + [flag, "-1"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                             env={**os.environ, **ONE_THREAD})
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and f"{flag} must be >= " in bad.stderr
    done = subprocess.run(some + ["--rows", "all", "--candidates", "2"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in done.stdout.splitlines() if '"row"' in line]
    assert row["long"]["candidates"] == 2  # --candidates: a switch of the rows
    bad = subprocess.run(some + ["--candidates", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, **ONE_THREAD})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--candidates must be >= 2, got 1" in bad.stderr
    bad = subprocess.run(some + ["--cfg", "-1"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, **ONE_THREAD})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--cfg must be >= 0, got -1.0" in bad.stderr
    bad = subprocess.run(some + ["--rows", "all-history_guidance"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env={**os.environ, **ONE_THREAD})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--rows: 'all-history_guidance'" in bad.stderr
    # --draft-frames: long.draft_frames a switch of the rows, with --redraw-cfg; 'all-X-Y': X and Y off
    done = subprocess.run(some + ["--rows", "all-ar_step-latent_context", "--draft-frames", "1", "--redraw-cfg", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in done.stdout.splitlines() if '"row"' in line]
    assert row["row"] == "all - ar_step - latent_context"
    assert row["long"] == {"context_noise": 0.05, "draft_frames": 1, "redraw_cfg": 2.0}
    bad = subprocess.run(some + ["--draft-frames", "1", "--first-frames"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env={**os.environ, **ONE_THREAD})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "give one of them" in bad.stderr
    # --first-frames: each video starts from a frame rendered for its prompt (image to video), into LENGTH-image
    done = subprocess.run(some + ["--rows", "window_by_window", "--first-frames"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(json.loads(line) for line in done.stdout.splitlines() if '"row"' in line)
    assert row["first_frame"] == "image"
    from sora.data.video_io import read_video
    from sora.inference.bundle import ModelBundle

    bench = bench_module()
    bundle = ModelBundle.from_checkpoint(str(ckpt))
    assert made["all"]["cfg"] == bundle.cfg.sampler.cfg != 2.5  # without --cfg: the checkpoint's text guidance
    size = bundle.cfg.data.height, bundle.cfg.data.width
    want = bench.first_frames(bundle, ["a red circle moving left"], 0, *size)[0]  # 3 h w in [-1, 1]
    made = read_video(str(tmp_path / "some" / "window_by_window" / "8-image" / "000.mp4"))[0]  # t h w 3
    got = torch.from_numpy(made[0]).permute(2, 0, 1).float() / 127.5 - 1
    assert (want > 0.5).any(), "the rendered frame shows a shape"
    assert (got - want).abs().mean() < 0.05, "the video's first frame is the rendered one (up to the mp4's loss)"
    # --first-frames-bar: the same frame with the dataset's dim bar across the shape's path, into LENGTH-image-bar
    barred = bench.first_frames(bundle, ["a red circle moving left"], 0, *size, bar=True)[0]  # 3 h w
    dim = (barred - (60 / 127.5 - 1)).abs().amax(0) < 0.02  # h w: the bar's grey, RGB 60
    assert dim.all(0).any() and not (want - (60 / 127.5 - 1)).abs().amax(0).lt(0.02).any(), "a bar of whole columns"
    done = subprocess.run(some + ["--rows", "window_by_window", "--first-frames-bar"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(json.loads(line) for line in done.stdout.splitlines() if '"row"' in line)
    assert row["first_frame"] == "image_bar"
    made = read_video(str(tmp_path / "some" / "window_by_window" / "8-image-bar" / "000.mp4"))[0]  # t h w 3
    got = torch.from_numpy(made[0]).permute(2, 0, 1).float() / 127.5 - 1
    assert (got - barred).abs().mean() < 0.05, "the video's first frame is the rendered one with its bar"
    (tmp_path / "q.txt").write_text("a purple blob\n")
    bad = subprocess.run(some + ["--first-frames", "--prompts", str(tmp_path / "q.txt")], capture_output=True,
                         text=True, cwd=ROOT, timeout=300, env={**os.environ, **ONE_THREAD})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "not a moving-shapes caption" in bad.stderr


def test_self_verifier_scores_candidates_with_shared_noise(shapes_dir, tmp_path):
    """The model's numbers see only the candidate: one latent twice scores the same, another latent otherwise; the
    causal error looks at the frames after the first alone; the other directions are the prompt's three others;
    the guided error is the error at guidance 1 and another at 3; the medoid is the candidate most like the rest."""
    from sora.diffusion.guidance import guided_velocity
    from sora.diffusion.verifier import denoising_error
    from tests.test_forcing import FORCING, tiny_bundle

    bench = bench_module("self_verifier")
    bundle = tiny_bundle(shapes_dir, tmp_path, *FORCING)
    torch.manual_seed(1)
    a, b = torch.randn(2, 3, 4, 16, 16).chunk(2)  # b c t h w: two pixel-space candidates
    x0 = torch.cat([a, a, b])
    prompts = ["a red circle moving left"] * 3
    with torch.no_grad():
        cond = bundle.encode_text(prompts)
        error = denoising_error(bundle.objective, guided_velocity(bundle.objective, bundle.dit, [cond], []), x0, cond,
                                3, (0.5, 0.7), 2)
        causal = bench.causal_error(bundle, x0, prompts, [0.5], 1, seed=3)
        changed = x0.clone()
        changed[:, :, 1:] += 1.0  # every frame after the first
        first_only = x0.clone()
        first_only[:, :, 0] += 1.0  # the first frame: history to each later one, never scored itself
        causal_changed = bench.causal_error(bundle, changed, prompts, [0.5], 1, seed=3)
    assert error[0] == error[1] and error[0] != error[2] and causal[0] == causal[1] and causal[0] != causal[2]
    assert (causal_changed != causal).all()
    with torch.no_grad():
        assert not torch.equal(bench.causal_error(bundle, first_only, prompts, [0.5], 1, seed=3), causal)
    with torch.no_grad():
        at_one, at_three = (bench.scores(bundle, x0, prompts, [0.5], 1, cfg) for cfg in (1.0, 3.0))
    assert at_one["guided"] == at_one["error"] and at_three["guided"] != at_three["error"]
    assert at_three["error"] == at_one["error"] and at_three["guided"][0] == at_three["guided"][1]
    with torch.no_grad():  # --score-seed: the same candidates under other noises
        other_noise = bench.scores(bundle, x0, prompts, [0.5], 1, 1.0, score_seed=7)
    assert other_noise["error"] != at_one["error"] and other_noise["error"][0] == other_noise["error"][1]
    medoid = bench.medoid_scores([a[0], a[0], b[0], a[0] + 0.1])
    assert medoid[0] == medoid[1] and medoid[3] < medoid[0] and medoid[2] == min(medoid)
    assert bench.other_directions("a red circle bouncing up behind a bar") == [
        "a red circle bouncing left behind a bar", "a red circle bouncing right behind a bar",
        "a red circle bouncing down behind a bar"]


def test_self_verifier_summary_picks_each_prompts_best_candidate():
    """Best of N takes each prompt's highest-scoring candidate; AUC ranks passing above failing candidates."""
    bench = bench_module("self_verifier")
    rows = [{"prompt_index": 0, "passed": True, "error": 2.0, "causal": 0.0, "ratio": 1.0, "direction": 0.0},
            {"prompt_index": 0, "passed": False, "error": 1.0, "causal": 1.0, "ratio": 0.0, "direction": 0.0},
            {"prompt_index": 1, "passed": False, "error": 3.0, "causal": 1.0, "ratio": 1.0, "direction": 0.0},
            {"prompt_index": 1, "passed": False, "error": 0.0, "causal": 0.0, "ratio": 0.0, "direction": 0.0}]
    out = {r["score"]: r for r in bench.summarize(rows)}
    assert out["error"]["best_of_n_pass"] == 0.5 and out["causal"]["best_of_n_pass"] == 0.0
    assert out["error"]["one_candidate_pass"] == 0.25 and out["error"]["any_candidate_pass"] == 0.5
    assert out["error"]["auc"] == round(2 / 3, 3) and out["direction"]["auc"] == 0.5
    assert bench.auc([1.0, 2.0], [True, True]) is None


def test_self_verifier_bench_at_a_tiny_size(shapes_dir, tmp_path):
    """bench/self_verifier.py: one row a score and a row a candidate; bad flags and prompts in one line."""
    from tests.test_forcing import FORCING, tiny_bundle

    ckpt = tmp_path / "forcing.safetensors"
    tiny_bundle(shapes_dir, tmp_path, *FORCING).save(str(ckpt))
    (tmp_path / "p.txt").write_text("a red circle moving left\na blue square moving up\n")
    cmd = [sys.executable, str(ROOT / "bench" / "self_verifier.py"), str(ckpt), "--prompts", str(tmp_path / "p.txt"),
           "--steps", "1", "--candidates", "2", "--levels", "0.5", "--draws", "1"]
    done = subprocess.run(cmd + ["--out", str(tmp_path / "rows.jsonl")], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["score"] for r in lines] == ["error", "causal", "ratio", "direction", "guided", "medoid"]
    assert all(r["candidates"] == 2 and r["prompts"] == 2 for r in lines)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [(r["prompt_index"], r["candidate"]) for r in rows] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert lines[0]["one_candidate_pass"] == sum(r["passed"] for r in rows) / 4
    for flags, said in ((["--levels", "0,0.5"], "--levels must be noise levels in (0, 1]"),
                        (["--candidates", "0"], "--candidates must be >= 1, got 0")):
        bad = subprocess.run(cmd + flags, capture_output=True, text=True, cwd=ROOT, timeout=300,
                             env={**os.environ, **ONE_THREAD})
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and said in bad.stderr, bad.stderr[-500:]
    (tmp_path / "bad.txt").write_text("a cat on a mat\n")
    bad = subprocess.run(cmd[:4] + [str(tmp_path / "bad.txt")], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env={**os.environ, **ONE_THREAD})
    assert bad.returncode == 2 and "'a cat on a mat' is not a moving-shapes caption" in bad.stderr
