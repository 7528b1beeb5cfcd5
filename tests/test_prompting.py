"""Frames given as a condition: per-token timesteps in the DiT, the masked loss, the causal rule, the training
mixture, SDEdit, every prompting mode through sample.py, and its bad inputs."""

import numpy as np
import pytest
import torch

from sora.data.video_io import encode_mp4, read_video
from sora.diffusion.frame_modes import MASKS_BY_MODE as MODES
from sora.diffusion.frame_modes import draw_frame_masks, gives_frames
from sora.diffusion.objectives import ObjectiveArgs, RectifiedFlow
from sora.models.conditioning import Conditioning
from sora.models.vae import CausalVAE, PixelVAE, VAEArgs, encode_frames_alone
from tests.conftest import sample_in_process, shrunk_overrides, train_in_process
from tests.test_dit import randomized


def text(b=2, m=3):
    return Conditioning(torch.randn(b, m, 32), torch.ones(b, m, dtype=torch.bool))  # randomized()'s text width


# ---------------------------------------------------------------------------------------------------------------
# The model and the objective
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout, text_conditioning, modulation", [
    ("full", "cross", "per_block"), ("factorized", "cross", "per_block"), ("full", "joint", "per_block"),
    ("full", "cross", "single"), ("factorized", "cross", "single")])
def test_per_token_timesteps_that_are_all_equal_are_one_timestep(layout, text_conditioning, modulation):
    model = randomized(attention_layout=layout, text_conditioning=text_conditioning, modulation=modulation)
    x, t, cond = torch.randn(2, 3, 4, 8, 8), torch.rand(2), text()
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    same = cond.with_frames(torch.zeros_like(x), mask, t.clone())  # the given frames' t equals the clip's
    torch.testing.assert_close(model(x, t, same), model(x, t, cond))
    other = cond.with_frames(torch.zeros_like(x), mask, torch.zeros(2))
    out = model(x, t, other)
    assert not torch.allclose(out, model(x, t, cond))  # a different t on the given frames changes the output


def test_the_loss_ignores_the_given_frames():
    """Outputs at given frames get no gradient from the loss; the others do."""
    outputs = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, cond):
            out = x * 0.5 + torch.zeros_like(x).requires_grad_()
            out.retain_grad()
            outputs.append(out)
            return out

    x0 = torch.randn(2, 3, 4, 8, 8)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.bool)
    cond = text().with_frames(x0, mask, torch.zeros(2))
    RectifiedFlow(ObjectiveArgs(prediction="velocity")).loss(Spy(), x0, cond).backward()
    grad = outputs[0].grad  # b c t h w
    given = mask[:, None, :, None, None].expand_as(grad)
    assert grad[given].abs().max() == 0 and grad[~given].abs().min() > 0


def test_given_frames_are_written_in_and_kept_still_by_the_velocity():
    flow, model = RectifiedFlow(ObjectiveArgs(prediction="x0")), randomized()
    x, frames = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 4, 8, 8)
    mask = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.bool)
    cond = text().with_frames(frames, mask, torch.zeros(2))
    v = flow.velocity(model, x, torch.full((2,), 0.5), cond)
    assert v[0, :, 0].abs().max() == 0 and v[1, :, 3].abs().max() == 0 and v[0, :, 1:].abs().max() > 0
    written = flow.with_given_frames(x, cond)
    assert torch.equal(written[0, :, 0], frames[0, :, 0]) and torch.equal(written[0, :, 1:], x[0, :, 1:])


@pytest.mark.parametrize("modulation", ["per_block", "single"])
def test_packed_clips_with_given_frames_equal_clips_run_alone(modulation):
    model = randomized(modulation=modulation).eval()
    xs = [torch.randn(3, 4, 8, 8), torch.randn(3, 2, 6, 4)]
    masks = [torch.tensor([1, 0, 0, 1], dtype=torch.bool), torch.tensor([0, 1], dtype=torch.bool)]
    t, frame_t = torch.rand(2), torch.tensor([0.0, 0.03])
    cond = text().with_frames([torch.zeros_like(x) for x in xs], masks, frame_t)
    with torch.no_grad():
        packed = model.forward_packed(xs, t, cond)
        for i, x in enumerate(xs):
            one = Conditioning(cond.text[i : i + 1], cond.text_mask[i : i + 1])
            alone = model(x[None], t[i : i + 1], one.with_frames(torch.zeros_like(x[None]), masks[i][None],
                                                                 frame_t[i : i + 1]))
            torch.testing.assert_close(packed[i], alone[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# What is given, and how it is encoded
# ---------------------------------------------------------------------------------------------------------------


def test_no_causal_leak_into_a_given_latent():
    """A given latent frame is made from its own frames: changing earlier frames does not change it (the causal
    VAE's own latent of that frame would change)."""
    torch.manual_seed(0)
    vae = CausalVAE(VAEArgs("causal3d", 4, 4, 8, base_channels=8, channel_mult=[1, 1, 2, 2])).eval()
    video = torch.randn(1, 3, 9, 16, 16)
    earlier = video.clone()
    earlier[:, :, 1:5] = torch.randn_like(earlier[:, :, 1:5])  # the frames of latent frame 1
    encode = lambda v: vae.encode(v, sample=False)
    alone, alone_earlier = encode_frames_alone(vae, video, encode), encode_frames_alone(vae, earlier, encode)
    torch.testing.assert_close(alone[:, :, 2], alone_earlier[:, :, 2])  # latent frame 2: frames 5..8 alone
    assert not torch.allclose(encode(video)[:, :, 2], encode(earlier)[:, :, 2])  # the whole clip's would leak
    torch.testing.assert_close(alone[:, :, 0], encode(video)[:, :, 0])  # frame 0 is encoded alone anyway
    assert torch.equal(encode_frames_alone(PixelVAE(), video), video)  # pixel space: the frames themselves
    image = video[:, :, :1]  # an image (packs mix them with clips): its own encoding
    torch.testing.assert_close(encode_frames_alone(vae, image, encode), encode(image))


def test_the_mixture_draws_every_mode_and_keeps_something_to_make():
    probs = {name: 1.0 for name in MODES}
    torch.manual_seed(0)
    masks, names = draw_frame_masks(600, 8, 2, probs)
    assert set(names) == set(MODES) and masks.shape == (600, 8)
    assert not masks.all(1).any()  # never the whole clip
    assert torch.equal(masks[:, ::2], masks[:, 1::2])  # whole temporal patches
    for mask, name in zip(masks, names):
        units = mask[::2]
        if name == "none":
            assert not units.any()
        if name == "first":
            assert units.tolist() == [True, False, False, False]
        if name == "first_last":
            assert units[0] and units[-1] and not units[1:-1].any()
    assert not draw_frame_masks(4, 1, 1, probs)[0].any()  # an image: nothing given
    assert gives_frames({"none": 1.0, "first": 0.1}) and not gives_frames({"none": 1.0, "first": 0.0})
    from dataclasses import fields

    from sora.diffusion.frame_modes import FrameModes

    assert [f.name for f in fields(FrameModes)] == list(MODES)  # conditioning.modes.NAME for every mode, no other


def test_a_crop_from_later_in_its_clip_is_trained_as_a_continuation(shapes_dir, tmp_path):
    """data.clip_start_share: a late crop is given its first frames (first_k), whatever conditioning.modes draws
    for the others (here last_k alone), in a batch and in a pack."""
    from sora.training.dit_task import DiTTask
    from tests.conftest import compose_config

    modes = [f"conditioning.modes.{m}={int(m == 'last_k')}" for m in MODES]
    cfg = compose_config("train", [o for o in shrunk_overrides(shapes_dir, tmp_path) if not o.startswith("hydra.")]
                         + modes + ["data.clip_start_share=0.5", "train.caption_dropout=0"])
    torch.manual_seed(0)
    task = DiTTask.from_config(cfg)
    late = [True, False, True, False, False, True]
    batch = {"caption": ["a red circle moving left"] * 6, "video": torch.rand(6, 3, 8, 16, 16) * 2 - 1, "late": late}
    given = set()
    for _ in range(8):
        mask = task.conditioning(batch, task.latents(batch)).frame_mask  # b t
        assert mask[:, 0].tolist() == late and not mask[:, -1][torch.tensor(late)].any()
        assert mask[~torch.tensor(late), -1].all()  # last_k for the crops from the clip's start
        given |= {int(m.sum()) for m in mask[torch.tensor(late)]}
    assert len(given) > 1  # first_k: k drawn, not the first frame alone
    pack = {**batch, "video": [torch.rand(3, n, 16, 16) * 2 - 1 for n in (4, 6, 4, 8, 4, 6)]}
    masks = task.conditioning(pack, task.latents(pack)).frame_mask  # [t]
    assert [bool(m[0]) for m in masks] == late and [bool(m[-1]) for m in masks] == [not x for x in late]
    assert task.conditioning({k: v for k, v in batch.items() if k != "late"}, task.latents(batch)).frame_mask[
        :, -1].all()  # no `late`: every crop draws from the mixture


# ---------------------------------------------------------------------------------------------------------------
# Through the entry points
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, shapes_dir):
    """A tiny model trained with the whole mixture of modes, and input files for every mode."""
    root = tmp_path_factory.mktemp("prompting")
    proc = train_in_process(*shrunk_overrides(shapes_dir, root / "run"), "train.max_steps=3",
                            "dit.patch_size=[1,8,8]", "train.final_samples=false", "train.sample_every_n_steps=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from PIL import Image

    from sora.data.moving_shapes import render_clip

    rng = np.random.default_rng(0)
    a, b = render_clip("red", "circle", "right", rng, 16, 32), render_clip("blue", "square", "up", rng, 16, 32)
    Image.fromarray(a[0]).save(root / "still.png")
    (root / "a.mp4").write_bytes(encode_mp4(a, 8))
    (root / "b.mp4").write_bytes(encode_mp4(b, 8))
    (root / "short.mp4").write_bytes(encode_mp4(a[:3], 8))
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00 not a video")
    return root


@pytest.mark.parametrize("args, frames", [
    (["image={root}/still.png"], 4),
    (["image={root}/still.png", "image_at=last"], 4),
    (["video={root}/a.mp4", "extend=forward"], 8 + 4),  # the clip (16 at stride 2) and 4 new frames
    (["video={root}/a.mp4", "extend=backward", "num_frames=6"], 8 + 6),
    (["loop=true"], 4),
    (["connect=[{root}/a.mp4,{root}/b.mp4]", "overlap_frames=1"], 7 + 4 + 7),
    (["keyframes=[0:{root}/still.png,3:{root}/still.png]"], 4),
    (["edit={root}/a.mp4", "strength=0.5"], 4),
    (["num_frames=16"], 16),  # four times the window, window by window
])
def test_every_mode_through_sample_py(mixed_run, tmp_path, args, frames):
    out = tmp_path / "x.mp4"
    proc = sample_in_process(f"ckpt={mixed_run}/run/checkpoints/last.ckpt", "prompt=a red circle moving right",
                             f"out={out}", "steps=2", *[a.format(root=mixed_run) for a in args])
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = read_video(out)[0]
    assert got.shape == (frames, 16, 16, 3)


def test_the_given_image_comes_out_as_given(mixed_run, tmp_path):
    """The image comes out as given, and the DiT reads it: the frames it makes change with the image, and with the
    given frames' mask hidden from it. (The pipeline pastes the image into the output, so the first check alone
    would pass with a DiT that never sees it.)"""
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings
    from sora.inference.prompting import VisualPrompt, make

    bundle = ModelBundle.from_checkpoint(f"{mixed_run}/run/checkpoints/last.ckpt")
    image = torch.rand(3, 16, 16) * 2 - 1
    video = make(bundle, ["a red circle moving right"], 0, SampleSettings.of(bundle.cfg).override(steps=2),
                 VisualPrompt("image", image=image))
    torch.testing.assert_close(video[0, :, 0], image)

    # Three steps from adaLN-Zero leave the trained DiT's gates near 0: the image moves its made frames by ~1e-7.
    # Random weights (N(0, 0.1), as tests.test_dit.randomized does at 0.05) let every path through the DiT count.
    torch.manual_seed(0)
    for p in bundle.dit.parameters():
        torch.nn.init.normal_(p, std=0.1)
    s, prompt = SampleSettings.of(bundle.cfg).override(steps=2), ["a red circle moving right"]
    other = torch.rand(3, 16, 16) * 2 - 1
    a, b = (make(bundle, prompt, 0, s, VisualPrompt("image", image=i)) for i in (image, other))
    torch.testing.assert_close(a[0, :, 0], image)
    torch.testing.assert_close(b[0, :, 0], other)
    # patch_size [1,8,8]: frame 0 is given, frames 1..3 are made. Measured 0.009 (same seed and prompt; another
    # seed moves them 0.55); a DiT that is not shown the image makes the same frames from both: exactly 0.
    assert (a[0, :, 1:] - b[0, :, 1:]).abs().mean() > 1e-3

    forward = bundle.dit.forward

    def mask_hidden(x, t, cond):  # the given frames still written into x, but not marked as given (their t)
        return forward(x, t, cond.without_frames())

    bundle.dit.forward = mask_hidden
    hidden = make(bundle, prompt, 0, s, VisualPrompt("image", image=image))
    bundle.dit.forward = forward
    torch.testing.assert_close(hidden[0, :, 0], image)
    assert (a[0, :, 1:] - hidden[0, :, 1:]).abs().mean() > 1e-4  # measured 0.0012


def test_the_velocity_of_made_frames_depends_on_the_given_frames():
    """The model's velocity on the frames it makes changes with the given frames' content (and with nothing the
    mask leaves out): the DiT reads the given frames, not just the objective writing them into the output."""
    for prediction in ("x0", "velocity"):
        flow, model = RectifiedFlow(ObjectiveArgs(prediction=prediction)), randomized()
        torch.manual_seed(1)
        x, frames, others = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 4, 8, 8)
        mask = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
        given = mask[:, None, :, None, None].expand_as(x)  # b c t h w
        t, cond = torch.full((2,), 0.5), text()
        v = flow.velocity(model, x, t, cond.with_frames(frames, mask, torch.zeros(2)))
        v_other = flow.velocity(model, x, t, cond.with_frames(others, mask, torch.zeros(2)))
        for i in range(2):  # measured 1.6e-3 (x0) and 7.8e-4 (velocity) a clip; a DiT blind to them: exactly 0
            assert (v[i] - v_other[i])[~given[i]].abs().mean() > 1e-4, (prediction, i)
        unread = torch.where(given, frames, torch.full_like(frames, 7.0))  # the same given frames, others changed
        torch.testing.assert_close(flow.velocity(model, x, t, cond.with_frames(unread, mask, torch.zeros(2))), v)


def test_sdedit_at_strength_1_is_text_to_video_and_at_0_returns_the_clip(mixed_run):
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings, generate

    bundle = ModelBundle.from_checkpoint(f"{mixed_run}/run/checkpoints/last.ckpt")
    s = SampleSettings.of(bundle.cfg).override(steps=3)
    clip = torch.rand(1, 3, s.num_frames, s.height, s.width) * 2 - 1
    prompt = ["a red circle moving right"]
    torch.testing.assert_close(generate(bundle, prompt, 5, s, start=clip, strength=1.0), generate(bundle, prompt, 5, s))
    torch.testing.assert_close(generate(bundle, prompt, 5, s, start=clip, strength=0.0), clip)


@pytest.mark.parametrize("args, message", [
    (["image={root}/none.png"], "image='{root}/none.png' does not exist"),
    (["image={root}/broken.mp4"], "image='{root}/broken.mp4' cannot be decoded"),
    (["video={root}/broken.mp4", "extend=forward"], "video='{root}/broken.mp4' cannot be decoded"),
    (["edit={root}/short.mp4"], "edit='{root}/short.mp4' is too short"),
    (["connect=[{root}/a.mp4]"], "connect takes two clips"),
    (["video={root}/a.mp4"], "video= and extend=forward|backward go together"),
    (["image={root}/still.png", "edit={root}/a.mp4"], "give one of image="),
    (["keyframes=[9:{root}/still.png]"], "keyframes: frame 9 is outside the video's 4 frames"),
    (["extend=sideways", "video={root}/a.mp4"], "extend must be one of backward, forward"),
    (["strength=1.5", "edit={root}/a.mp4"], "strength must be in [0, 1]"),
    (["keyframes=[0:{root}/still.png]", "num_frames=8"], "keyframes makes one window of 4 frames; num_frames=8"),
])
def test_bad_inputs_through_sample_py_get_one_line_and_write_nothing(mixed_run, tmp_path, args, message):
    out = tmp_path / "x.mp4"
    proc = sample_in_process(f"ckpt={mixed_run}/run/checkpoints/last.ckpt", "prompt=a red circle moving right",
                             f"out={out}", "steps=1", *[a.format(root=mixed_run) for a in args])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert message.format(root=mixed_run) in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def test_a_text_only_checkpoint_refuses_frames(shapes_dir, tmp_path):
    run = tmp_path / "run"
    assert train_in_process(*shrunk_overrides(shapes_dir, run), "conditioning=text", "train.max_steps=1",
                            "train.final_samples=false", "train.sample_every_n_steps=0").returncode == 0
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "still.png")
    for asked in (f"image={tmp_path}/still.png", "num_frames=16", "long.draft_frames=1"):  # a long video is
        # given each window's start; draft_frames the first window's start
        proc = sample_in_process(f"ckpt={run}/checkpoints/last.ckpt", "prompt=a red circle moving right",
                                 f"out={tmp_path}/x.mp4", asked)
        assert proc.returncode == 2 and "was trained on text alone" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and not (tmp_path / "x.mp4").exists()
