"""Shared fixtures: real configs composed with Hydra, shrunk; a small moving-shapes dataset written once."""

import contextlib
import functools
import importlib.util
import io
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from sora.config import MovingShapesArgs, register_schemas
from sora.errors import exit_on_user_error

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
register_schemas()
# Every model here is tiny: one thread is fastest, and on a shared CPU a second one's spin-waits cost 10x and more
# (a 4-step shrunk run in this process: 0.7 s on one thread, 7 to 10 s on two while another process kept a core
# busy). The same for the processes the tests start: ONE_THREAD in their environment, train.num_threads=1 in the
# shrunk config.
torch.set_num_threads(1)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def require_xformers() -> None:
    """Skip unless xformers is installed and its CUDA kernels load (a wheel built for another torch loads none)."""
    import torch

    from sora.errors import SoraError
    from sora.models.attention import attention

    pytest.importorskip("xformers")
    q = torch.randn(1, 1, 8, 64, device="cuda", dtype=torch.bfloat16)
    try:
        attention(q, q, q, "xformers")
    except SoraError as e:
        pytest.skip(str(e))


def compose_config(name: str = "train", overrides: list[str] = ()):
    """Compose configs/NAME.yaml with overrides, as the entry points do (schema checks included)."""
    with initialize_config_dir(str(CONFIGS), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """A small moving-shapes dataset: 64 train combos x 2 clips in 4 shards, 16 frames of 32x32."""
    from sora.data.moving_shapes import write_moving_shapes

    root = tmp_path_factory.mktemp("data") / "moving_shapes"
    write_moving_shapes(MovingShapesArgs(root=str(root), clips_per_combo=2, clips_per_shard=32, num_frames=16,
                                         size_px=32))
    return root


def shrunk_overrides(shapes_dir: Path, run_dir: Path) -> list[str]:
    """Overrides that shrink the real default config to seconds on CPU, on the fixture dataset."""
    return [
        f"hydra.run.dir={run_dir}",
        f"data.shards={shapes_dir}/train-*.tar",
        f"data.moving_shapes.root={shapes_dir}",
        "data.moving_shapes.clips_per_combo=2", "data.moving_shapes.clips_per_shard=32",
        "data.moving_shapes.size_px=32",
        f"data.eval_prompts={shapes_dir}/heldout_prompts.txt", f"data.train_prompts={shapes_dir}/train_prompts.txt",
        f"data.eval_shards={shapes_dir}/test-*.tar",
        "data.num_frames=4", "data.height=16", "data.width=16", "data.batch_size_per_gpu=4", "data.num_workers=0",
        "data.shuffle_buffer=8",
        "dit.hidden_size=32", "dit.depth=1", "dit.num_heads=2", "text.width=16", "text.num_heads=2",
        "train.max_steps=3", "train.max_minutes=null", "train.checkpoint_every_n_steps=2",
        "train.sample_every_n_steps=2",
        "train.samples_per_prompt=1", "sampler.steps=2", "logger.wandb=offline", "train.num_threads=1",
    ]


def logged_losses(run_dir: Path) -> dict[int, float]:
    """step -> train/loss from a run's metrics.csv (logger.wandb=disabled, train.log_every_n_steps=1)."""
    import csv

    rows = list(csv.DictReader(open(Path(run_dir) / "metrics.csv")))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def run_entry(script: str, *args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run train.py / sample.py (or `-m MODULE`) as a user would; returns the finished process (stdout+stderr
    captured)."""
    env = {**os.environ, **ONE_THREAD, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    env.pop("WANDB_API_KEY", None)
    target = [script] if script.startswith("-") else [str(ROOT / script)]  # "-m", "sora.eval": a module
    return subprocess.run([sys.executable, *target, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@functools.cache
def entry_module(name: str):
    """train.py / sample.py as modules, to run their functions in this process (their imports paid once)."""
    spec = importlib.util.spec_from_file_location(f"sora_entry_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _as_a_process():
    """stdout, stderr and the log records (INFO and up, as Hydra's job logging prints them) into strings; the exit
    status of a user error; the thread count and signal handlers a run sets, restored after it."""
    out, err = io.StringIO(), io.StringIO()
    logged = logging.StreamHandler(err)
    root, threads = logging.getLogger(), torch.get_num_threads()
    handlers, level = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}, root.level
    root.addHandler(logged)
    root.setLevel(logging.INFO)
    finished = subprocess.CompletedProcess([], 0)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                yield finished
            except SystemExit as e:
                finished.returncode = e.code
    finally:
        root.removeHandler(logged)
        root.setLevel(level)
        torch.set_num_threads(threads)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        finished.stdout, finished.stderr = out.getvalue(), err.getvalue()


def sample_in_process(*overrides: str) -> subprocess.CompletedProcess:
    """sample.py's main in this process, on the config its command line would compose: a user error prints its
    one line and exits 2 as there; any other exception propagates (a traceback fails the test). Hydra's own
    command-line parsing is not run: each user-facing command keeps tests through run_entry too."""
    return _main_in_process("sample", entry_module("sample").main, overrides)


def eval_in_process(*overrides: str) -> subprocess.CompletedProcess:
    """`python -m sora.eval` in this process, as sample_in_process runs sample.py."""
    from sora.eval.__main__ import main

    return _main_in_process("eval", main, overrides)


def _main_in_process(config: str, main, overrides) -> subprocess.CompletedProcess:
    cfg = compose_config(config, overrides)
    with _as_a_process() as finished:
        main(cfg)  # hydra.main hands a given config straight to the wrapped main
    finished.args = [config, *overrides]
    return finished


def train_in_process(*overrides: str) -> subprocess.CompletedProcess:
    """train.py's train() in this process, in hydra.run.dir, as sample_in_process runs sample.py; wandb disabled
    (its offline run, Hydra's log file train.log, sweeps, the command line in run.json and more than one device
    need run_entry)."""
    run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir="))
    cfg = compose_config("train", [o for o in overrides if not o.startswith("hydra.")] + ["logger.wandb=disabled"])
    with _as_a_process() as finished:
        exit_on_user_error(entry_module("train").train)(cfg, Path(run_dir))
    finished.args = ["train.py", *overrides]
    return finished


def captioned_shards(tmp_path_factory, name: str, write_media, samples_per_shard: int) -> Path:
    """Shards written by the real shard writer from a folder that `write_media(folder)` fills, each file captioned
    `clip NAME`."""
    from sora.data.shard_writer import scan_folder, write_shards

    src = tmp_path_factory.mktemp(f"{name}_src")
    write_media(src)
    for p in list(src.iterdir()):
        p.with_suffix(".txt").write_text(f"clip {p.stem}")
    out = tmp_path_factory.mktemp(f"{name}_shards")
    sources, skipped = scan_folder(str(src))
    write_shards(sources, str(out), samples_per_shard=samples_per_shard, workers=1, skipped=skipped)
    return out


@pytest.fixture(scope="session")
def mixed_shards(tmp_path_factory) -> Path:
    """Shards written by the real shard writer from a folder of square and wide videos and images, captioned."""
    from tests.media import moving_square, write_image, write_video

    def media(src):
        for i in range(6):
            write_video(src / f"sq{i}.mp4", moving_square(8, 32, 32))
            write_video(src / f"wide{i}.webm", moving_square(8, 32, 48))
            write_image(src / f"img{i}.png", 32, 32)
            write_image(src / f"wimg{i}.jpg", 32, 48)

    return captioned_shards(tmp_path_factory, "mixed", media, samples_per_shard=8)
