"""The real entry points, shrunk: train -> checkpoint -> sample -> resume, the VAE path, and user errors."""

import json

import av
import pytest
import torch

from sora.data.video_io import GENERATED_TAG, read_video
from sora.provenance.verify import verify_file
from tests.conftest import run_entry, sample_in_process, shrunk_overrides, train_in_process


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shapes_dir):
    run = tmp_path_factory.mktemp("run")
    ok(run_entry("train.py", *shrunk_overrides(shapes_dir, run)))
    return run


def test_bundle_holds_one_dit_with_the_weights_asked_for(trained_run):
    from sora.inference.bundle import ModelBundle
    from sora.models.dit import DiT

    ckpt = trained_run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    for ema, prefix in ((True, "ema.model.dit."), (False, "model.dit.")):
        bundle = ModelBundle.from_checkpoint(str(ckpt), ema=ema)
        assert sum(isinstance(m, DiT) for m in bundle.modules()) == 1 and not bundle.training
        for name, value in bundle.dit.state_dict().items():
            torch.testing.assert_close(value, state[prefix + name], msg=name)
    assert not torch.equal(state["ema.model.dit.x_embed.weight"], state["model.dit.x_embed.weight"])


def test_a_checkpoint_of_the_first_format_still_loads(trained_run, tmp_path):
    """Before the model bundle, keys were dit.*, text.*, vae.* (no sora_format): they are renamed on read."""
    from sora.inference.bundle import ModelBundle

    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    old = dict(ckpt, state_dict={k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    del old["sora_format"]
    torch.save(old, tmp_path / "v1.ckpt")
    a, b = ModelBundle.from_checkpoint(str(tmp_path / "v1.ckpt"), ema=False), ModelBundle.from_checkpoint(
        str(trained_run / "checkpoints" / "last.ckpt"), ema=False)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)


def test_train_writes_a_complete_run(trained_run):
    run = trained_run
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["sora_config"]["dit"]["hidden_size"] == 32
    assert any(k.startswith("ema.model.dit.") for k in ckpt["state_dict"])
    assert (run / "checkpoints" / "config.yaml").exists()
    assert list((run / "wandb").glob("offline-run-*")), "wandb offline run directory missing"
    assert (run / "samples" / "step_0000002" / "000.mp4").exists()
    assert verify_file(run / "samples" / "step_0000002" / "000.mp4")["manifest"] == "valid"  # training samples signed
    results = json.loads((run / "results.json").read_text())
    assert set(results["probe"]) == {"heldout", "train"} and results["probe"]["heldout"]["n"] == 8
    # trained with the default mixture of given frames: each prompting mode is scored on held-out clips
    modes = results["modes"]
    assert set(modes) == {"image", "forward", "backward", "long", "loop", "connect"}, modes
    # given, so it comes out as given up to H.264 (CRF 18 at 16x16 px is what costs the dBs here)
    assert modes["image"]["n"] == 8 and modes["image"]["first_frame_psnr_db"] > 25
    # That PSNR holds whether or not the DiT saw the image (the pipeline pastes it into the output). The frames made
    # after it change when another clip's image is given: three steps from adaLN-Zero move them very little
    # (measured 3.8e-8, some 400 float32 steps at their size), and a DiT blind to the given frames makes exactly the
    # same ones (0).
    assert modes["image"]["made_frames_change_with_image"] > 0
    assert len(list((run / "samples" / "final" / "modes" / "loop").glob("*.mp4"))) == 8
    assert not list(run.rglob("*.tmp")), "a temporary checkpoint was left behind"


def test_sample_one_prompt_and_a_prompt_file(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "one.mp4"
    ok(run_entry("sample.py", f"ckpt={ckpt}", "prompt=a red circle moving left", f"out={out}", "seed=0"))
    frames, _ = read_video(out)
    assert frames.shape == (4, 16, 16, 3)  # the checkpoint's frames and size
    with av.open(str(out)) as container:
        assert container.metadata.get("comment") == GENERATED_TAG
    assert verify_file(out)["claims"]["generation"]["seed"] == 0  # a signed C2PA manifest (sora/provenance)

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\na blue square moving up\na green triangle moving down\n")
    ok(sample_in_process(f"ckpt={ckpt}", f"prompts={prompts}", f"out_dir={tmp_path / 'many'}", "seed=0",
                         "batch_size=2"))
    assert sorted(p.name for p in (tmp_path / "many").glob("*.mp4")) == ["000.mp4", "001.mp4", "002.mp4"]
    # video i is seeded seed + i whatever the batching: line 0 of the file is the single-prompt video
    assert (read_video(tmp_path / "many" / "000.mp4")[0] == frames).all()

    ok(sample_in_process(f"ckpt={ckpt}", "prompt=a red circle moving left", f"out={out}", "num_frames=8",
                         "height=24", "width=32", "steps=3", "cfg=1.0", "sampler=heun", "ema=false"))
    assert read_video(out)[0].shape == (8, 24, 32, 3)


def test_rerun_resumes_where_it_stopped(trained_run, shapes_dir, tmp_path):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    proc = ok(train_in_process(*shrunk_overrides(shapes_dir, run), "train.max_steps=5", "train.final_samples=false"))
    assert "resuming from" in proc.stderr + proc.stdout
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5


def test_vae_then_dit_on_its_latents(shapes_dir, tmp_path):
    small_vae = ["vae.base_channels=8", "vae.channel_mult=[1,1,2,2]", "data.num_frames=5", "data.frame_stride=1",
                 "data.height=16", "data.width=16", "data.batch_size_per_gpu=2", "train.max_steps=2"]
    ok(train_in_process(*shrunk_overrides(shapes_dir, tmp_path / "vae"), "task=vae", *small_vae))
    results = json.loads((tmp_path / "vae" / "results.json").read_text())
    assert results["reconstruction_psnr_db"] > 0
    assert (tmp_path / "vae" / "samples" / "final" / "reconstruction.mp4").exists()

    vae_ckpt = tmp_path / "vae" / "checkpoints" / "last.ckpt"
    ok(train_in_process(*shrunk_overrides(shapes_dir, tmp_path / "dit"), "vae=causal3d", f"vae.ckpt={vae_ckpt}",
                        "dit.patch_size=[1,1,1]", "data.num_frames=5", "data.frame_stride=1",
                        "train.final_samples=false"))
    saved = torch.load(tmp_path / "dit" / "checkpoints" / "last.ckpt", weights_only=True)["sora_config"]["vae"]
    assert saved["base_channels"] == 8 and saved["channel_mult"] == [1, 1, 2, 2]  # the VAE actually used
    vae_ckpt.unlink()  # the DiT checkpoint carries the frozen VAE: sampling needs no other file
    out = tmp_path / "latent.mp4"
    ok(sample_in_process(f"ckpt={tmp_path / 'dit' / 'checkpoints' / 'last.ckpt'}", "prompt=a red circle moving left",
                         f"out={out}"))
    assert read_video(out)[0].shape == (5, 16, 16, 3)


def test_train_and_sample_with_a_frozen_t5_from_disk(shapes_dir, tmp_path):
    pytest.importorskip("transformers")
    from tests.test_text import _save_tiny_t5

    _save_tiny_t5(tmp_path / "t5")
    run = tmp_path / "run"
    ok(train_in_process(*shrunk_overrides(shapes_dir, run), "text=hf", f"text.path={tmp_path / 't5'}",
                         "text.max_tokens=8", "train.max_steps=2", "train.final_samples=false"))
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any(k.startswith("model.text.") for k in state)  # the frozen encoder is not copied into checkpoints
    ok(sample_in_process(f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "prompt=a red circle",
                         f"out={tmp_path / 'x.mp4'}"))
    assert (tmp_path / "x.mp4").exists()


# ---------------------------------------------------------------------------------------------------------------
# Clear one-line errors
# ---------------------------------------------------------------------------------------------------------------


def one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr[-3000:]


def test_shard_path_that_matches_nothing(tmp_path):
    proc = train_in_process(f"hydra.run.dir={tmp_path}", f"data.shards={tmp_path}/none-*.tar",
                            "data.moving_shapes=null")
    one_line_error(proc, "error: data.shards=", "matches no file")


def test_unknown_config_key(tmp_path):
    one_line_error(run_entry("train.py", f"hydra.run.dir={tmp_path}", "dit.hidden_sise=64"), "hidden_sise")
    one_line_error(run_entry("sample.py", "ckpt=x", "prompt=a", "out=x.mp4", "tempreature=2"), "tempreature")


@pytest.mark.parametrize("override, message", [
    ("data.shuffle_buffer=0", "error: data.shuffle_buffer must be >= 1, got 0"),
    ("train.max_nonfinite_steps=0", "error: train.max_nonfinite_steps must be >= 1, got 0"),
    ("train.ema_decay=1", "error: train.ema_decay must be in [0, 1), got 1.0"),
    ("+no_such_key=1", "error: no_such_key is not a setting"),
    ("+train.no_such_key=1", "error: train.no_such_key is not a setting"),
])
def test_values_that_once_failed_deep_and_keys_added_with_plus(tmp_path, override, message):
    one_line_error(train_in_process(f"hydra.run.dir={tmp_path}", override), message)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # refused before anything ran


def test_out_of_range_value(tmp_path):
    one_line_error(run_entry("train.py", f"hydra.run.dir={tmp_path}", "dit.num_heads=0"),
                   "error: dit.num_heads must be >= 1")
    one_line_error(run_entry("sample.py", "ckpt=x", "prompt=a", "out=x.mp4", "steps=0"), "error: steps must be >= 1")


def test_settings_lightning_refuses_and_a_missing_latent_cache(shapes_dir, tmp_path):
    base = shrunk_overrides(shapes_dir, tmp_path / "run")
    one_line_error(train_in_process(*base, "train.precision=fp7"), "train.precision=fp7", "Lightning refused them")
    one_line_error(train_in_process(*base, f"data.latent_cache={tmp_path}/none"), "is not a directory")
    proc = train_in_process(*base, f"data.eval_prompts={tmp_path}/none.txt", "train.max_steps=1",
                            "train.final_samples=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data.eval_prompts=" in proc.stderr + proc.stdout and "is not a file" in proc.stderr + proc.stdout


def test_ckpt_that_is_not_a_checkpoint(trained_run, tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    one_line_error(sample_in_process(f"ckpt={text}", "prompt=a red circle moving left", f"out={tmp_path}/x.mp4"),
                   "error:", "not a readable checkpoint")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((trained_run / "checkpoints" / "last.ckpt").read_bytes()[:20000])
    one_line_error(sample_in_process(f"ckpt={truncated}", "prompt=a", f"out={tmp_path}/x.mp4"),
                   "not a readable checkpoint")
    one_line_error(sample_in_process(f"ckpt={tmp_path}/missing.ckpt", "prompt=a", f"out={tmp_path}/x.mp4"),
                   "does not exist")


class RunsCode:
    def __reduce__(self):
        return (print, ("this would have run on load",))


def test_ckpt_that_would_run_code_is_refused(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "sora_config": {}, "payload": RunsCode()}, evil)
    proc = sample_in_process(f"ckpt={evil}", "prompt=a red circle moving left", f"out={tmp_path}/x.mp4")
    one_line_error(proc, "not a safe checkpoint")
    assert "this would have run" not in proc.stdout


def test_sample_size_the_model_cannot_cut_and_a_missing_device(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    base = [f"ckpt={ckpt}", "prompt=a red circle moving left", f"out={tmp_path}/x.mp4", "steps=1"]
    one_line_error(sample_in_process(*base, "height=15"), "height=15, width=16: this checkpoint makes frames whose "
                   "height divides by 8", "use height=16, width=16")
    if not torch.cuda.is_available():
        one_line_error(sample_in_process(*base, "device=cuda"), "device='cuda', but this torch sees no CUDA device")


def test_empty_prompt(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    one_line_error(sample_in_process(f"ckpt={ckpt}", "prompt=''", f"out={tmp_path}/x.mp4"), "prompt 0 is empty")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle moving left\n   \n")  # blank lines are skipped, not errors
    ok(sample_in_process(f"ckpt={ckpt}", f"prompts={prompts}", f"out_dir={tmp_path}/d", "steps=1"))
    assert sorted(p.name for p in (tmp_path / "d").glob("*.mp4")) == ["000.mp4"]




def test_export_ema_to_safetensors_and_sample_from_it(trained_run, tmp_path):
    import subprocess
    import sys

    from safetensors import safe_open

    from sora.inference.bundle import ModelBundle

    ckpt = trained_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "model.safetensors"
    done = ok(subprocess.run([sys.executable, "-m", "sora.inference.export", str(ckpt), str(out)], capture_output=True,
                             text=True))
    assert json.loads(done.stdout)["weights"] == "ema"
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        assert meta["format"] == "sora-dit-v1" and json.loads(meta["sora_config"])["dit"]["hidden_size"] == 32
        # pixel VAE: no tensors of its own
        assert any(k.startswith("dit.") for k in f.keys()) and any(k.startswith("text.") for k in f.keys())
    from_ckpt, exported = ModelBundle.from_checkpoint(str(ckpt)), ModelBundle.from_checkpoint(str(out))
    assert from_ckpt.weights == exported.weights == "ema"
    for (name, a), b in zip(from_ckpt.state_dict().items(), exported.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    video = tmp_path / "x.mp4"
    ok(sample_in_process(f"ckpt={out}", "prompt=a red circle moving left", f"out={video}"))
    assert read_video(video)[0].shape[0] == 4
    (tmp_path / "fake.safetensors").write_bytes(b"\x00" * 64)
    bad = sample_in_process(f"ckpt={tmp_path / 'fake.safetensors'}", "prompt=a red circle", f"out={tmp_path / 'y.mp4'}")
    assert bad.returncode == 2 and "not a readable safetensors" in bad.stderr and "Traceback" not in bad.stderr
