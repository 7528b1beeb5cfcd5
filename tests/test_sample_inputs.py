"""Bad input at sample.py, `python -m sora.eval`, `python -m sora.provenance verify` and export: each case ends in one
line (`error: ...`, exit 2) or works. Sizes are checked where they are used (the pipeline, FVD), an output's
extension is its format, words a word encoder never saw are named, and frames too small for the watermark say so.

One tiny checkpoint serves every case: 16x16 frames, a 4-frame window, 2x8x8 patches, pixel space."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sora.data.moving_shapes import render_clip
from sora.data.video_io import encode_mp4, read_video
from sora.provenance import watermark
from tests.conftest import (
    _as_a_process,
    eval_in_process,
    run_entry,
    sample_in_process,
    shrunk_overrides,
    train_in_process,
)

PROMPT = "prompt=a red circle moving left"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shapes_dir) -> Path:
    """A tiny checkpoint (root/ckpt) and the files the cases give: not a checkpoint, not a video, a folder."""
    root = tmp_path_factory.mktemp("inputs")
    proc = train_in_process(*shrunk_overrides(shapes_dir, root / "run"), "train.max_steps=1",
                            "train.final_samples=false", "train.sample_every_n_steps=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root / "ckpt").symlink_to(root / "run" / "checkpoints" / "last.ckpt")
    (root / "notes.txt").write_text("not a checkpoint, not a video\n")
    (root / "empty.txt").write_text("")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    clip = render_clip("red", "circle", "left", np.random.default_rng(0), 8, 16)  # t h w 3
    (root / "clip.mp4").write_bytes(encode_mp4(clip, 8))
    (root / "folder.mp4").mkdir()
    (root / "folder.safetensors").mkdir()
    (root / "a_file").write_text("a file, not a folder\n")
    (root / "prompts.txt").write_text("a red circle moving left\n\na blue square moving up\n")
    return root


def one_line(proc, message: str) -> None:
    """Exit 2, one `error: ...` line holding `message`, no traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert message in errors[0], errors[0]


def formatted(args, root: Path) -> list[str]:
    return [a.format(root=root) for a in args]


# ---------------------------------------------------------------------------------------------------------------
# sample.py
# ---------------------------------------------------------------------------------------------------------------

SAMPLE_ERRORS = [
    # the checkpoint
    (["ckpt={root}/nope.ckpt", PROMPT, "out={root}/x.mp4"], "checkpoint '{root}/nope.ckpt' does not exist"),
    (["ckpt={root}/notes.txt", PROMPT, "out={root}/x.mp4"], "is not a readable checkpoint"),
    (["ckpt={root}/clip.mp4", PROMPT, "out={root}/x.mp4"], "is not a readable checkpoint"),
    (["ckpt=", PROMPT, "out={root}/x.mp4"], "ckpt='' is empty"),
    # prompts and outputs
    (["prompt=", "out={root}/x.mp4"], "prompt 0 is empty"),
    (["prompt=   ", "out={root}/x.mp4"], "prompt 0 is empty"),
    ([], "give exactly one of prompt="),
    ([PROMPT], "prompt= needs out=FILE.mp4"),
    ([PROMPT, "out={root}/x.avi"], "out='{root}/x.avi': a video file ends in .mp4, .webm, .gif"),
    ([PROMPT, "out={root}/x"], "out='{root}/x': a video file ends in"),
    ([PROMPT, "out={root}/folder.mp4"], "out='{root}/folder.mp4' is a folder"),
    ([PROMPT, "out={root}/a_file/x.mp4"], "'{root}/a_file' is a file, not a folder"),
    (["prompts={root}/nope.txt", "out_dir={root}/many"], "prompts='{root}/nope.txt' is not a file"),
    (["prompts={root}/empty.txt", "out_dir={root}/many"], "holds no prompt"),
    (["prompts={root}/binary.txt", "out_dir={root}/many"], "is not a text file"),
    (["prompts={root}/prompts.txt", "out_dir={root}/a_file"], "out_dir='{root}/a_file' is a file, not a folder"),
    # numbers at and past the ends of their ranges
    ([PROMPT, "out={root}/x.mp4", "steps=0"], "steps must be >= 1"),
    ([PROMPT, "out={root}/x.mp4", "cfg=-1"], "cfg must be >= 0"),
    ([PROMPT, "out={root}/x.mp4", "cfg_visual=-0.5"], "cfg_visual must be >= 0"),
    ([PROMPT, "out={root}/x.mp4", "edit={root}/clip.mp4", "strength=1.5"], "strength must be in [0, 1]"),
    ([PROMPT, "out={root}/x.mp4", "edit={root}/clip.mp4", "strength=-0.1"], "strength must be in [0, 1]"),
    ([PROMPT, "out={root}/x.mp4", "batch_size=0"], "batch_size must be >= 1"),
    ([PROMPT, "out={root}/x.mp4", "num_frames=0"], "num_frames must be >= 1"),
    ([PROMPT, "out={root}/x.mp4", "fps=0"], "fps must be >= 1"),
    ([PROMPT, "out={root}/x.mp4", "shift=0"], "shift must be > 0"),
    ([PROMPT, "out={root}/x.mp4", "height=0"], "height must be >= 1"),
    ([PROMPT, "out={root}/x.mp4", "overlap_frames=0"], "overlap_frames must be >= 1"),
    ([PROMPT, "out={root}/x.mp4", "sampler=nope"], "sampler must be one of"),
    ([PROMPT, "out={root}/x.mp4", "schedule=nope"], "schedule must be one of"),
    ([PROMPT, "out={root}/x.mp4", "image_at=middle"], "image_at must be one of"),
    ([PROMPT, "out={root}/x.mp4", "provenance.watermark_psnr_db=61"],
     "provenance.watermark_psnr_db must be in [30"),
    # sizes no VAE and patchifier can cut, and windows that cannot overlap: checked by the pipeline
    ([PROMPT, "out={root}/x.mp4", "num_frames=3"], "num_frames=3: this checkpoint cannot make 3 frames at once"),
    ([PROMPT, "out={root}/x.mp4", "height=12"], "height=12, width=16: this checkpoint makes frames whose height "
                                                "divides by 8 and width by 8"),
    ([PROMPT, "out={root}/x.mp4", "width=20"], "height=16, width=20"),
    ([PROMPT, "out={root}/x.mp4", "num_frames=8", "overlap_frames=4"], "overlap_frames=4: each later window"),
    ([PROMPT, "out={root}/x.mp4", "num_frames=8", "overlap_frames=9"], "overlap_frames=9"),
    # files given as a condition
    ([PROMPT, "out={root}/x.mp4", "image={root}/notes.txt"], "image='{root}/notes.txt' is not an image or video"),
    ([PROMPT, "out={root}/x.mp4", "edit={root}/notes.txt"], "edit='{root}/notes.txt' is not an image or video"),
    ([PROMPT, "out={root}/x.mp4", "image={root}/nope.png"], "image='{root}/nope.png' does not exist"),
    # devices
    ([PROMPT, "out={root}/x.mp4", "device=nope"], "device='nope'"),
]


@pytest.mark.parametrize("args, message", SAMPLE_ERRORS, ids=[" ".join(a[1:]) or "nothing" for a, _ in SAMPLE_ERRORS])
def test_sample_py_refuses_in_one_line_and_writes_nothing(tiny, args, message):
    args = formatted(args, tiny)
    if not any(a.startswith("ckpt=") for a in args):
        args.insert(0, f"ckpt={tiny}/ckpt")
    one_line(sample_in_process(*args), message.format(root=tiny))
    assert not (tiny / "x.mp4").exists() and not (tiny / "many").exists()


SAMPLE_WORKS = [  # (args, frames, height, width)
    (["steps=1"], 4, 16, 16),
    (["cfg=0"], 4, 16, 16),
    (["batch_size=1"], 4, 16, 16),
    (["num_frames=2"], 2, 16, 16),  # the fewest frames 2x8x8 patches take
    (["num_frames=5"], 5, 16, 16),  # one past the window: window by window, cut to 5
    (["num_frames=8", "overlap_frames=3"], 8, 16, 16),  # the largest overlap a 4-frame window allows
    (["num_frames=8", "overlap_frames=1"], 8, 16, 16),
    (["height=8", "width=8"], 4, 8, 8),  # one patch
    (["edit={root}/clip.mp4", "strength=0"], 4, 16, 16),  # the clip itself
    (["edit={root}/clip.mp4", "strength=1"], 4, 16, 16),  # text to video
    (["seed=-1"], 4, 16, 16),
]


@pytest.mark.parametrize("args, frames, height, width", SAMPLE_WORKS, ids=[" ".join(a) for a, *_ in SAMPLE_WORKS])
def test_sample_py_works_at_the_ends_of_each_range(tiny, tmp_path, args, frames, height, width):
    out = tmp_path / "x.mp4"
    proc = sample_in_process(f"ckpt={tiny}/ckpt", PROMPT, f"out={out}", "steps=1", *formatted(args, tiny))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_video(out)[0].shape == (frames, height, width, 3)


def test_an_output_in_folders_that_do_not_exist_yet_is_written(tiny, tmp_path):
    out = tmp_path / "dir" / "that" / "does" / "not" / "exist" / "x.mp4"
    assert sample_in_process(f"ckpt={tiny}/ckpt", PROMPT, f"out={out}", "steps=1").returncode == 0
    assert read_video(out)[0].shape == (4, 16, 16, 3)


@pytest.mark.parametrize("args, message", [
    (["steps=abc"], "error: Error merging override steps=abc: Value 'abc' of type 'str' could not be converted to "
                    "Integer"),
    (["foo=1"], "error: Could not override 'foo': Key 'foo' not in 'SampleConfig'"),
    (["steps=[1"], "error: no viable alternative at input '[1'"),
    (["ema=maybe"], "error: Error merging override ema=maybe: Value 'maybe' is not a valid bool"),
])
def test_a_value_hydra_cannot_take_is_one_line_too(tiny, args, message):
    proc = run_entry("sample.py", f"ckpt={tiny}/ckpt", PROMPT, f"out={tiny}/x.mp4", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(message), proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# Formats: the extension is the format; each carries what marks it can
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, magic, manifest", [
    ("x.mp4", b"ftyp", "valid"), ("X.MP4", b"ftyp", "valid"), ("x.gif", b"GIF89a", "valid"),
    ("x.webm", b"\x1aE\xdf\xa3", "unsupported"),
])
def test_the_extension_is_the_format_and_verify_says_what_it_carries(tiny, tmp_path, capsys, name, magic, manifest):
    from sora.provenance.verify import verify_file

    out = tmp_path / name
    proc = sample_in_process(f"ckpt={tiny}/ckpt", PROMPT, f"out={out}", "steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = out.read_bytes()
    assert magic in data[:12]
    assert read_video(out)[0].shape == (4, 16, 16, 3)
    r = verify_file(out)
    assert r["manifest"] == manifest
    if manifest == "unsupported":
        assert r["claims"] is None and isinstance(r["watermark"], dict)  # no manifest to believe: the detector ran
    else:
        assert r["claims"]["generation"]["watermark"] == {"embedded": False, "reason": "frames under 96 px",
                                                          "min_frame_px": 96}


def test_a_webm_says_once_that_it_has_no_manifest(tiny, tmp_path):
    from sora.provenance import stamp

    stamp._said.discard(("unsigned", ".webm"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\na blue square moving up\n")
    proc = sample_in_process(f"ckpt={tiny}/ckpt", f"prompts={prompts}", f"out_dir={tmp_path}/d", "steps=1")
    assert proc.returncode == 0
    proc = sample_in_process(f"ckpt={tiny}/ckpt", PROMPT, f"out={tmp_path}/a.webm", "steps=1", "batch_size=1")
    lines = [line for line in proc.stderr.splitlines() if "cannot carry a manifest" in line]
    assert proc.returncode == 0 and len(lines) == 1 and ".webm" in lines[0], proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# Frames too small for the watermark
# ---------------------------------------------------------------------------------------------------------------


def test_quick_start_frames_say_the_watermark_is_not_embedded_once(tiny, tmp_path):
    """The quick start's 32x32: no mark, the manifest says why, verify says so (from the command line too), and the
    log says it once for all the videos."""
    from sora.provenance import stamp

    stamp._said.clear()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\na blue square moving up\na green triangle moving down\n")
    proc = sample_in_process(f"ckpt={tiny}/ckpt", f"prompts={prompts}", f"out_dir={tmp_path}/d", "steps=1",
                             "height=32", "width=32", "batch_size=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line for line in proc.stderr.splitlines() if "watermark: none in 32x32 videos" in line]
    assert len(said) == 1 and "frames under 96 px" in said[0], proc.stderr
    done = run_entry("-m", "sora.provenance", "verify", f"{tmp_path}/d/000.mp4", "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["manifest"] == "valid" and r["watermark"] == "not embedded (frames under 96 px)"
    assert watermark.MIN_FRAME_PX == 96 and not watermark.fits(32, 32) and watermark.fits(96, 128)


@pytest.mark.parametrize("size, embedded", [(95, False), (96, True), (128, True)])
def test_the_watermark_is_embedded_from_its_minimum_frame_size(tmp_path, monkeypatch, size, embedded):
    from sora.provenance.stamp import Generation, Provenance, write_generated
    from sora.provenance.verify import verify_file
    from tests.test_provenance import clip

    monkeypatch.setenv("SORA_HOME", str(tmp_path / "home"))
    gen = Generation("cd" * 32, "ema", {"steps": 2}, 3, "a red square moving right")
    path = write_generated(tmp_path / "x.mp4", clip(5, h=size, w=size + 32), 8, Provenance(), gen)
    r = verify_file(path)
    assert r["manifest"] == "valid" and r["claims"]["generation"]["watermark"]["embedded"] is embedded
    if embedded:
        assert r["watermark"]["found"]
        assert r["watermark"]["payload"] == r["claims"]["generation"]["watermark"]["payload"]
    else:
        assert r["watermark"] == "not embedded (frames under 96 px)"
    # Without a valid manifest the detector runs whatever the size: a stripped small file reads "not found".
    path = write_generated(tmp_path / "y.mp4", clip(5, h=size, w=size + 32), 8, Provenance(c2pa=False), gen)
    assert verify_file(path)["watermark"]["found"] is embedded


# ---------------------------------------------------------------------------------------------------------------
# Words the encoder never saw
# ---------------------------------------------------------------------------------------------------------------


def test_unknown_words_are_named_once_a_prompt(tiny, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a purple dog jumping over the moon\n" * 3 + "a red circle moving left\n")
    proc = sample_in_process(f"ckpt={tiny}/ckpt", f"prompts={prompts}", f"out_dir={tmp_path}/d", "steps=1",
                             "num_frames=8", "batch_size=2")  # two windows, two batches: still one warning
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line for line in proc.stderr.splitlines() if "never saw" in line]
    assert len(said) == 1, proc.stderr
    assert "'purple', 'dog', 'jumping', 'over', 'the', 'moon'" in said[0] and "'a'" not in said[0].split("never saw")[1]
    assert "a red circle moving left" not in said[0]


def test_words_past_max_tokens_are_named(tiny, caplog):
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import check_prompts

    bundle = ModelBundle.from_checkpoint(f"{tiny}/ckpt")
    prompt = "a red circle moving left a blue square moving up"  # 10 words: <bos> and 7 fit in 8 tokens
    check_prompts([prompt, prompt], bundle.text)
    check_prompts([prompt], bundle.text)
    said = [r.getMessage() for r in caplog.records if "text.max_tokens" in r.getMessage()]
    assert len(said) == 1 and "'square', 'moving', 'up' come after its text.max_tokens=8 and are cut" in said[0]
    assert "never saw" not in said[0]


# ---------------------------------------------------------------------------------------------------------------
# python -m sora.eval
# ---------------------------------------------------------------------------------------------------------------

EVAL_ERRORS = [
    (["ckpt={root}/nope.ckpt", "out={root}/e.json"], "checkpoint '{root}/nope.ckpt' does not exist"),
    (["ckpt=", "out={root}/e.json"], "ckpt='' is empty"),
    (["ckpt={root}/notes.txt", "out={root}/e.json"], "is not a readable checkpoint"),
    (["out={root}/folder.mp4"], "out='{root}/folder.mp4' is a folder"),
    (["out={root}/a_file/e.json"], "'{root}/a_file' is a file, not a folder"),
    (["out={root}/e.json", "metrics=[fid]"], "'fid' is not a metric"),
    (["out={root}/e.json", "batch_size=0"], "batch_size must be >= 1"),
    (["out={root}/e.json", "steps=0"], "steps must be >= 1"),
    (["out={root}/e.json", "fvd.num_frames=0"], "fvd.num_frames must be >= 1"),
    (["out={root}/e.json", "fvd.num_real=1"], "fvd.num_real must be >= 2"),
    # checked before the validation loss runs
    (["out={root}/e.json", "metrics=[fvd]", "fvd.num_frames=3", "fvd.i3d={root}/notes.txt"],
     "fvd.num_frames=3: this checkpoint cannot make 3 frames at once"),
    (["out={root}/e.json", "metrics=[fvd]", "fvd.i3d={root}/nope.pt"], "fvd.i3d='{root}/nope.pt' is not a file"),
    (["out={root}/e.json", "metrics=[clip]", "clip.path={root}/nope"], "clip.path='{root}/nope' is not a directory"),
    (["out={root}/e.json", "metrics=[recon]", "lpips={root}/nope.pth"], "lpips='{root}/nope.pth' is not a file"),
    (["out={root}/e.json", "metrics=[probe]", "data.eval_prompts={root}/binary.txt"],
     "data.eval_prompts='{root}/binary.txt' is not a text file"),
    (["out={root}/e.json", "metrics=[probe]", "data.train_prompts={root}/nope.txt"],
     "data.train_prompts='{root}/nope.txt' is not a file"),
    (["out={root}/e.json", "data.eval_shards={root}/nope-*.tar"], "matches no file"),
    (["out={root}/e.json", "device=nope"], "device='nope'"),
]
# after the validation loss: reading the detector file is where TorchScript says it is not one
LATE = (["out={root}/e.json", "metrics=[fvd]", "fvd.i3d={root}/notes.txt"], "is not a TorchScript file")


@pytest.mark.parametrize("args, message", [*EVAL_ERRORS, LATE], ids=[" ".join(a) for a, _ in [*EVAL_ERRORS, LATE]])
def test_eval_refuses_in_one_line(tiny, args, message):
    args = formatted(args, tiny)
    if not any(a.startswith("ckpt=") for a in args):
        args.insert(0, f"ckpt={tiny}/ckpt")
    proc = eval_in_process(*args)
    one_line(proc, message.format(root=tiny))
    ran = re.search(r"^val_loss \d", proc.stderr, re.M) is not None  # its log line: the validation loss ran
    assert ran == (message == LATE[1])
    assert not (tiny / "e.json").exists()


def test_eval_writes_into_folders_that_do_not_exist_yet(tiny, tmp_path):
    out = tmp_path / "new" / "dirs" / "e.json"
    assert eval_in_process(f"ckpt={tiny}/ckpt", f"out={out}").returncode == 0
    assert "val_loss" in json.loads(out.read_text())


def test_a_value_hydra_cannot_take_is_one_line_in_eval(tiny):
    proc = run_entry("-m", "sora.eval", f"ckpt={tiny}/ckpt", f"out={tiny}/e.json", "fvd.num_frames=x")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: Error merging override fvd.num_frames=x: Value 'x' of type 'str'")


# ---------------------------------------------------------------------------------------------------------------
# python -m sora.provenance verify
# ---------------------------------------------------------------------------------------------------------------


def verify_in_process(*argv: str):
    from sora.provenance.verify import main

    with _as_a_process() as finished:
        finished.returncode = main(list(argv))
    return finished


@pytest.mark.parametrize("argv, line", [
    ([], "error: the following arguments are required: FILE"),
    (["--bogus", "{root}/clip.mp4"], "error: unrecognized arguments: --bogus"),
    (["{root}/nope.mp4"], "{root}/nope.mp4: not a readable video (no such file)"),
    (["{root}/folder.mp4"], "{root}/folder.mp4: not a readable video (a folder)"),
    (["{root}/empty.txt"], "{root}/empty.txt: not a readable video"),
    (["{root}/notes.txt"], "{root}/notes.txt: not a readable video"),
    (["{root}/ckpt"], "{root}/ckpt: not a readable video"),
])
def test_verify_refuses_in_one_line(tiny, argv, line):
    proc = verify_in_process(*formatted(argv, tiny))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(line.format(root=tiny)), proc.stderr


def test_verify_reads_a_good_file_beside_a_bad_one(tiny):
    proc = verify_in_process(f"{tiny}/clip.mp4", f"{tiny}/notes.txt")
    assert proc.returncode == 2 and proc.stdout.count("\n") == 1 and proc.stderr.count("\n") == 1
    assert "manifest absent; watermark not found" in proc.stdout


@pytest.mark.parametrize("argv, line", [
    ([], "error: no command (usage: python -m sora.provenance verify FILE"),
    (["check", "x.mp4"], "error: unknown command 'check'"),
])
def test_provenance_without_verify_is_one_line(argv, line):
    proc = run_entry("-m", "sora.provenance", *argv)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(line), proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# python -m sora.inference.export
# ---------------------------------------------------------------------------------------------------------------


def export_in_process(*argv: str):
    from sora.inference.export import main

    with _as_a_process() as finished:
        finished.returncode = main(list(argv))
    return finished


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: ckpt, out"),
    (["{root}/nope.ckpt", "{root}/m.safetensors"], "checkpoint '{root}/nope.ckpt' does not exist"),
    (["{root}/notes.txt", "{root}/m.safetensors"], "is not a readable checkpoint"),
    (["{root}/m.safetensors", "{root}/n.safetensors"], "is an export already"),
    (["{root}/ckpt", "{root}/m.ckpt"], "out='{root}/m.ckpt': an export's name ends in .safetensors"),
    (["{root}/ckpt", "{root}/folder.safetensors"], "out='{root}/folder.safetensors' is a folder"),
    (["{root}/ckpt", "{root}/a_file/m.safetensors"], "'{root}/a_file' is a file, not a folder"),
    (["{root}/ckpt", "{root}/m.safetensors", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_export_refuses_in_one_line(tiny, argv, message):
    one_line(export_in_process(*formatted(argv, tiny)), message.format(root=tiny))
    assert not (tiny / "m.safetensors").exists()


@pytest.mark.parametrize("argv", [[], ["--raw"]])
def test_export_into_folders_that_do_not_exist_yet(tiny, tmp_path, argv):
    out = tmp_path / "new" / "dir" / "m.safetensors"
    proc = export_in_process(f"{tiny}/ckpt", str(out), *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["weights"] == ("raw" if argv else "ema") and out.is_file()


# ---------------------------------------------------------------------------------------------------------------
# Sizes are checked where they are used: a tiny causal VAE (1 + 4k frames)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def causal(tmp_path_factory, shapes_dir) -> Path:
    """An untrained text-to-video model over a tiny causal VAE (9 frames of 16x16 -> 3 x 2 x 2 latents), exported."""
    from sora.inference.bundle import ModelBundle
    from tests.conftest import compose_config

    root = tmp_path_factory.mktemp("causal")
    overrides = [o for o in shrunk_overrides(shapes_dir, root) if not o.startswith("hydra.")]
    torch.manual_seed(0)
    cfg = compose_config("train", [*overrides, "vae=causal3d", "vae.latent_channels=4", "vae.base_channels=8",
                                   "vae.channel_mult=[1,1,2,2]", "dit.patch_size=[1,1,1]", "data.num_frames=9",
                                   "data.frame_stride=1"])
    ModelBundle.build(cfg).save(str(root / "causal.safetensors"))
    return root / "causal.safetensors"


def test_generate_makes_what_it_is_asked_or_refuses(causal):
    from sora.errors import SoraError
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings, generate, generate_long

    bundle = ModelBundle.from_checkpoint(str(causal))
    s = SampleSettings.of(bundle.cfg).override(steps=1)
    for n in (1, 5, 9):
        assert generate(bundle, ["a red circle moving left"], 0, s.override(num_frames=n)).shape[2] == n
    for n in (8, 4):  # a causal VAE given 8 frames would decode 5
        with pytest.raises(SoraError, match=rf"num_frames={n}: this checkpoint cannot make {n} frames at once \(the "
                                            rf"VAE takes 1 \+ k \* 4 frames .*\); use {n - 3} or {n + 1}$"):
            generate(bundle, ["a red circle moving left"], 0, s.override(num_frames=n))
        with pytest.raises(SoraError, match=f"num_frames={n}"):
            generate_long(bundle, ["a red circle moving left"], 0, s.override(num_frames=n))
    assert generate_long(bundle, ["a"], 0, s.override(num_frames=12)).shape[2] == 12  # longer: window by window
    with pytest.raises(SoraError, match="height=12, width=16: .* divides by 8 and width by 8"):
        generate(bundle, ["a"], 0, s.override(height=12))


def test_sample_py_and_fvd_refuse_a_length_the_causal_vae_cannot_make(causal, shapes_dir, tmp_path):
    proc = sample_in_process(f"ckpt={causal}", PROMPT, f"out={tmp_path}/x.mp4", "num_frames=8")
    one_line(proc, "num_frames=8: this checkpoint cannot make 8 frames at once")
    assert "use 5 or 9" in proc.stderr and not (tmp_path / "x.mp4").exists()
    proc = eval_in_process(f"ckpt={causal}", f"out={tmp_path}/e.json", "metrics=[fvd]", "fvd.num_frames=8",
                           f"fvd.i3d={tmp_path}/not_needed_yet.pt", f"data.eval_shards={shapes_dir}/test-*.tar")
    one_line(proc, "fvd.num_frames=8: this checkpoint cannot make 8 frames at once (the VAE takes 1 + k * 4 frames")
    assert "use 5 or 9" in proc.stderr and not re.search(r"^val_loss \d", proc.stderr, re.M)  # before val_loss


def test_fvd_generates_exactly_the_frames_it_reports(causal, shapes_dir, tmp_path, monkeypatch):
    import sora.eval.evaluate as evaluate
    from tests.test_eval import TinyI3D

    i3d = tmp_path / "i3d.pt"
    torch.jit.script(TinyI3D()).save(str(i3d))
    seen, real_generate = [], evaluate._generate

    def spy(*args, **kwargs):
        videos = real_generate(*args, **kwargs)
        seen.append(videos.shape[2])
        return videos

    monkeypatch.setattr(evaluate, "_generate", spy)
    proc = eval_in_process(f"ckpt={causal}", f"out={tmp_path}/e.json", "metrics=[fvd]", "fvd.num_frames=9",
                           f"fvd.i3d={i3d}", "fvd.num_real=4", "fvd.num_generated=4", "steps=1",
                           f"data.eval_shards={shapes_dir}/test-*.tar", "fvd.frame_stride=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "e.json").read_text())["fvd"]["num_frames"] == 9 and seen and set(seen) == {9}
