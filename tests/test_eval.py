"""The checkpoint evaluator: the Fréchet distance against its closed form, and `python -m sora.eval` with every
metric end to end on tiny randomly initialised I3D and CLIP networks saved locally; its validation loss is the
training run's, bit for bit, and the same on a second evaluation."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sora.eval.fvd import feature_stats, frechet_distance
from tests.conftest import eval_in_process, run_entry, shrunk_overrides, train_in_process

WORDS = "a red green blue yellow cyan magenta square circle triangle moving left right up down".split()


def test_frechet_distance_matches_the_closed_form_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    s1 = a @ a.T + 5 * np.eye(5)  # SPD
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # S2 = c^2 S1 commutes with S1: Tr(S1 + S2 - 2 (S1 S2)^(1/2)) = (1 - c)^2 Tr(S1).
    c = 1.7
    want = np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(s1)
    assert frechet_distance(mu1, s1, mu2, c**2 * s1) == pytest.approx(want, rel=1e-9)
    # Diagonal covariances: sum of (sqrt(a) - sqrt(b))^2.
    d1, d2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)
    # From samples, with unbiased covariances: close to the populations' distance.
    x = rng.multivariate_normal(mu1, s1, size=20000)
    y = rng.multivariate_normal(mu2, c**2 * s1, size=20000)
    want = np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(s1)
    assert frechet_distance(*feature_stats(x), *feature_stats(y)) == pytest.approx(want, rel=0.05)


class TinyI3D(nn.Module):
    """The detector's call as StyleGAN-V's i3d_torchscript.pt takes it: uint8 values as floats, b c t h w."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 24, 24), mode="trilinear", align_corners=False)
        logits = self.fc(self.conv(x).mean(dim=(2, 3, 4)))
        return logits if return_features else logits.softmax(-1)


def save_tiny_clip(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                            unk_token="<unk>").save_pretrained(path)
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(path)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shapes_dir):
    run = tmp_path_factory.mktemp("run")
    proc = train_in_process(*shrunk_overrides(shapes_dir, run), "train.final_samples=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_every_metric_end_to_end_from_local_weights(trained_run, tmp_path):
    torch.manual_seed(0)
    i3d, clip = tmp_path / "i3d_torchscript.pt", tmp_path / "clip"
    torch.jit.script(TinyI3D()).save(str(i3d))
    save_tiny_clip(clip)
    from tests.test_perceptual import random_backbone, random_heads

    lpips = tmp_path / "lpips.pth"  # a whole LPIPS in one file, random weights
    torch.save({**{f"features.{k}": v for k, v in random_backbone().items()}, **random_heads()}, lpips)
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval.json"
    proc = run_entry("-m", "sora.eval", f"ckpt={ckpt}", f"out={out}", "metrics=[val_loss,fvd,clip,recon,probe]",
                     f"fvd.i3d={i3d}", "fvd.num_real=8", "fvd.num_generated=6", "fvd.frame_stride=1",
                     f"clip.path={clip}", "clip.samples_per_prompt=1", "samples_per_prompt=1", "steps=2",
                     f"lpips={lpips}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["val_loss"] == json.loads((trained_run / "results.json").read_text())["val_loss"]  # the run's, exactly
    f = r["fvd"]
    assert np.isfinite(f["fvd"]) and f["fvd"] >= 0
    assert (f["num_real"], f["num_generated"], f["num_frames"]) == (8, 6, 16)
    assert f["detector"] == str(i3d) and len(f["detector_sha256"]) == 64 and "StyleGAN-V" in f["protocol"]
    c = r["clip"]
    assert -1 <= c["clipsim"] <= 1 and 0 <= c["clip_score"] <= 100 and c["model"] == str(clip) and c["num_videos"] == 8
    assert r["recon"]["psnr_db"] > 60 and r["recon"]["ssim"] == pytest.approx(1.0)
    assert r["recon"]["lpips"] == pytest.approx(0.0, abs=1e-6)  # pixel VAE
    assert r["recon"]["lpips_weights"] == str(lpips)
    assert r["probe"]["heldout"]["n"] == 8
    # A second evaluation of the same checkpoint: the same validation loss, bit for bit.
    again = tmp_path / "again.json"
    proc = eval_in_process(f"ckpt={ckpt}", f"out={again}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(again.read_text())["val"] == r["val"]


def test_modes_and_a_guidance_override_reach_the_videos(trained_run, tmp_path):
    """metrics=[modes] scores each prompting mode as the end of a run does; cfg= changes the videos it scores."""
    ckpt, first = trained_run / "checkpoints" / "last.ckpt", {}
    for cfg in (1.0, 3.0):
        out = tmp_path / f"cfg{cfg}.json"
        proc = eval_in_process(f"ckpt={ckpt}", f"out={out}", "metrics=[modes]", "steps=2", f"cfg={cfg}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        r = json.loads(out.read_text())
        assert r["sampling"]["cfg"] == cfg and r["sampling"]["steps"] == 2
        assert {"image", "forward", "backward", "long", "loop", "connect"} <= set(r["modes"])
        assert 0 <= r["modes"]["image"]["direction_acc"] <= 1 and r["modes"]["image"]["n"] > 0
        first[cfg] = (tmp_path / f"cfg{cfg}" / "modes" / "image" / "000.mp4").read_bytes()
    assert first[1.0] != first[3.0]


def test_missing_weights_and_unknown_metric_fail_in_one_line(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    for args, message in ((["metrics=[fvd]", "fvd.i3d=/nope.pt"], "fvd.i3d='/nope.pt' is not a file"),
                          (["metrics=[clip]"], "clip.path=None is not a directory"),
                          (["metrics=[fid]"], "'fid' is not a metric"),
                          (["fvd.num_frames=0"], "fvd.num_frames must be >= 1, got 0"),
                          (["cfg=-1"], "cfg must be >= 0, got -1"),
                          (["metrics=[modes]", "data.eval_shards=/nope/test-*.tar"],
                           "data.eval_shards='/nope/test-*.tar' matches no file")):
        proc = eval_in_process(f"ckpt={ckpt}", f"out={tmp_path}/x.json", *args)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
