"""A timestep per token frame (Diffusion Forcing) in training, and long videos that stay on the rails: the DiT and
the loss with per-frame timesteps, the training mixture, the rolling schedule, each long.* switch of the sampler,
prompts per window, streamed writing, flat memory, and the bad inputs of each."""

import tracemalloc

import numpy as np
import pytest
import torch

from sora.diffusion.guidance import guided_velocity
from sora.diffusion.objectives import KINDS, FrameTimesteps, ObjectiveArgs, RectifiedFlow
from sora.diffusion.rolling import lags, num_rolling_steps, pyramid, rolling
from sora.diffusion.samplers import euler
from sora.diffusion.schedules import make_schedule
from sora.errors import SoraError
from sora.models.conditioning import Conditioning
from tests.conftest import compose_config, sample_in_process, shrunk_overrides
from tests.test_dit import randomized

VARIANTS = [("full", "cross", "per_block"), ("factorized", "cross", "per_block"), ("full", "joint", "per_block"),
            ("full", "cross", "single")]
PROMPT = "a red circle moving left"


def text(b=2, m=3):
    return Conditioning(torch.randn(b, m, 32), torch.ones(b, m, dtype=torch.bool))  # randomized()'s text width


# ---------------------------------------------------------------------------------------------------------------
# The DiT: a timestep per token frame
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout, text_conditioning, modulation", VARIANTS)
def test_per_frame_timesteps_all_equal_give_todays_forward(layout, text_conditioning, modulation):
    model = randomized(attention_layout=layout, text_conditioning=text_conditioning, modulation=modulation)
    torch.manual_seed(1)
    x, t, cond = torch.randn(2, 3, 4, 8, 8), torch.rand(2), text()
    same = t[:, None].expand(2, 4)  # b T: every latent frame at its clip's t
    # equal up to float rounding: bit for bit on AVX-512, about 1e-6 apart on AVX2, whose kernels sum a b T view of
    # the modulation in another order than a b one
    torch.testing.assert_close(model(x, same, cond), model(x, t, cond), rtol=1e-5, atol=1e-5)
    # frames given at frame_t are the special case: a per-frame t that is frame_t on the given frames
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    given = cond.with_frames(torch.zeros_like(x), mask, torch.tensor([0.0, 0.05]))
    per_frame = torch.where(mask, given.frame_t[:, None], t[:, None])  # b T
    torch.testing.assert_close(model(x, per_frame, cond), model(x, t, given))
    torch.testing.assert_close(model(x, same, given), model(x, t, given), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout, text_conditioning, modulation", VARIANTS)
def test_each_token_frame_is_modulated_by_its_own_timestep(layout, text_conditioning, modulation):
    model = randomized(attention_layout=layout, text_conditioning=text_conditioning, modulation=modulation)
    torch.manual_seed(2)
    x, cond = torch.randn(1, 3, 4, 8, 8), text(1)
    mixed = model(x, torch.tensor([[0.2, 0.2, 0.9, 0.9]]), cond)
    for level in (0.2, 0.9):
        assert not torch.allclose(mixed, model(x, torch.full((1, 4), level), cond))


def test_per_frame_rows_modulate_through_a_frame_view():
    """b t rows and no b n d tensor: the steps adaLN reads are b t 1 d, one per token frame."""
    from sora.models.modulation import AdaLN, AdaLNConditioning

    d, layer = 8, AdaLN(8, 6)
    embed = torch.nn.Linear(1, d)
    t = torch.tensor([[0.1, 0.1, 0.5, 0.5, 0.9, 0.9], [0.3, 0.3, 0.3, 0.3, 0.7, 0.7]])  # b T, pt = 2
    adaln = AdaLNConditioning.of_batch(lambda v: embed(v[:, None]), 0.0, t, pt=2)
    assert adaln.index.tolist() == [[0, 1, 2], [3, 4, 5]] and adaln.rows[0].shape == (6, d)
    sa, ff = adaln.modulations(layer, 6)
    assert sa.shift.shape == ff.gate.shape == (2, 3, 1, d)
    torch.testing.assert_close(adaln.clip_rows, embed(torch.tensor([[0.9], [0.7]])))  # the noisiest frame's


def test_packed_clips_with_per_frame_timesteps_equal_clips_run_alone():
    model = randomized()
    torch.manual_seed(3)
    xs, cond = [torch.randn(3, 4, 8, 8), torch.randn(3, 2, 8, 8)], text()
    ts = [torch.tensor([0.1, 0.4, 0.4, 0.8]), torch.tensor([0.6, 0.2])]
    packed = model.forward_packed(xs, ts, cond)
    for i in range(2):
        alone = model(xs[i][None], ts[i][None], cond.rows(slice(i, i + 1)))[0]
        torch.testing.assert_close(packed[i], alone, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# The objective: the mixture, and the loss
# ---------------------------------------------------------------------------------------------------------------


class EqualFrames(RectifiedFlow):
    """Today's draw, spread over the frames: b T timesteps, all of a clip's equal."""

    def draw_t(self, x0, device):
        if isinstance(x0, list):
            return [t.expand(x.shape[1]) for t, x in zip(self.sample_t(len(x0), device), x0)]
        return self.sample_t(x0.shape[0], device)[:, None].expand(-1, x0.shape[2])


@pytest.mark.parametrize("prediction", ["x0", "velocity"])
def test_the_loss_with_equal_per_frame_timesteps_is_todays(prediction):
    model = randomized()
    torch.manual_seed(4)
    x0, cond = torch.randn(2, 3, 4, 8, 8), text()
    mask = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    args = ObjectiveArgs(prediction=prediction)
    for c in (cond, cond.with_frames(x0, mask, torch.tensor([0.01, 0.03]))):
        losses = []
        for flow in (RectifiedFlow(args), EqualFrames(args)):
            torch.manual_seed(5)
            losses.append(flow.loss(model, x0, c))
        # Equal up to float rounding: the two paths map their adaLN rows in batches of another size, and on two
        # threads a matmul may then sum in another order (2e-7 of a loss of 2.0 with the MLP head, velocity).
        torch.testing.assert_close(*losses, rtol=1e-6, atol=0)
    pack = [x0[0], x0[1, :, :2]]
    losses = []
    for flow in (RectifiedFlow(args), EqualFrames(args)):
        torch.manual_seed(6)
        losses.append(flow.loss(model, pack, cond))
    torch.testing.assert_close(*losses)


def test_the_default_mixture_draws_one_timestep_a_clip_as_before():
    flow = RectifiedFlow(ObjectiveArgs(), frames_per_unit=2)
    torch.manual_seed(7)
    drawn = flow.draw_t(torch.zeros(5, 3, 8, 2, 2), "cpu")
    torch.manual_seed(7)
    assert drawn.shape == (5,) and torch.equal(drawn, flow.sample_t(5, "cpu"))


def test_the_mixture_draws_each_kind_in_its_share():
    shares = FrameTimesteps(synchronous=0.5, independent=0.3, non_decreasing=0.2)
    flow = RectifiedFlow(ObjectiveArgs(frame_timesteps=shares), frames_per_unit=2)
    t, kinds = flow.sample_frame_t(6000, 8, "cpu", torch.Generator().manual_seed(0))
    assert t.shape == (6000, 8) and torch.equal(t[:, ::2], t[:, 1::2])  # equal within a token frame
    counts = torch.bincount(kinds, minlength=3) / 6000
    for share, got in zip((0.5, 0.3, 0.2), counts.tolist()):
        assert abs(got - share) < 0.03, counts  # 3 sigma of 6000 draws is at most 0.019
    units = t[:, ::2]  # b 4
    assert (units[kinds == 0] == units[kinds == 0][:, :1]).all()  # synchronous: one t a clip
    assert (units[kinds == 2].diff(dim=1) >= 0).all()  # non-decreasing along time
    independent = units[kinds == 1]
    assert (independent.diff(dim=1) < 0).any(1).float().mean() > 0.5  # unsorted: 1 - 1/4! of clips go down once
    assert ((t > 0) & (t < 1)).all()
    assert [k for k in KINDS] == ["synchronous", "independent", "non_decreasing"]


def test_history_noise_gives_the_history_at_any_level_in_its_share_of_batches():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, cond):
            seen.append(cond.frame_t.clone())
            return x

    x0 = torch.randn(2, 3, 4, 8, 8)
    cond = text().with_frames(x0, torch.tensor([[1, 0, 0, 0]] * 2, dtype=torch.bool), torch.zeros(2))
    torch.manual_seed(8)
    for share in (0.0, 1.0):
        seen.clear()
        for _ in range(20):
            RectifiedFlow(ObjectiveArgs(history_noise=share)).loss(Spy(), x0, cond)
        levels = torch.cat(seen)
        if share == 0:
            assert (levels == 0).all()  # as given: today's [0, frame_noise] draw, made in the training step
        else:
            assert levels.min() < 0.2 and levels.max() > 0.8  # spread over [0, 1]


def test_frame_timestep_settings_are_checked_and_compose():
    with pytest.raises(SoraError, match="the shares must not all be 0"):
        FrameTimesteps(synchronous=0)
    cfg = compose_config("train", ["objective.frame_timesteps.non_decreasing=0.5", "objective.history_noise=0.25"])
    assert cfg.objective.frame_timesteps.non_decreasing == 0.5 and cfg.objective.history_noise == 0.25
    assert compose_config("train").objective.frame_timesteps.synchronous == 1.0  # the default: one t a clip


# ---------------------------------------------------------------------------------------------------------------
# The rolling schedule
# ---------------------------------------------------------------------------------------------------------------


def test_pyramid_levels():
    made = torch.tensor([False, True, True, True])
    assert lags(made, 2).tolist() == [0, 0, 2, 4]
    assert lags(torch.tensor([True, True, False]), 3, reverse=True).tolist() == [3, 0, 0]
    levels = pyramid([1.0, 0.5, 0.0], lags(made, 1), frames_per_unit=2)  # (2 + 2 + 1) x 8
    assert levels.shape == (5, 8) and levels[0].eq(1).all() and levels[-1].eq(0).all()
    assert (levels[:, 3::2].diff(dim=1) >= 0).all()  # later frames are noisier at every step
    assert num_rolling_steps(2, 3, 1) == 4 == levels.shape[0] - 1
    assert torch.equal(pyramid([1.0, 0.5, 0.0], lags(made, 0)), torch.tensor([[1.0] * 4, [0.5] * 4, [0.0] * 4],
                                                                              dtype=torch.float64))


def test_the_rolling_schedule_with_no_offset_is_the_synchronous_sampler():
    model, flow = randomized(), RectifiedFlow(ObjectiveArgs())
    torch.manual_seed(9)
    x, cond = torch.randn(2, 3, 4, 8, 8), text()
    mask = torch.tensor([[1, 0, 0, 0]] * 2, dtype=torch.bool)
    given = cond.with_frames(torch.randn_like(x), mask, torch.zeros(2))
    fn = guided_velocity(flow, model, [given.without_frames(), given], [3.0])
    times = make_schedule("uniform", 4)
    synchronous = euler(fn, x, times)
    assert torch.equal(rolling(fn, x, pyramid(times, lags(~mask[0], 0))), synchronous)
    assert not torch.allclose(rolling(fn, x, pyramid(times, lags(~mask[0], 1))), synchronous)


# ---------------------------------------------------------------------------------------------------------------
# Long videos: each switch
# ---------------------------------------------------------------------------------------------------------------


def tiny_bundle(shapes_dir, tmp, *overrides, size=16):
    """An untrained model (random DiT weights, so every path counts) over pixels: windows of 4 frames."""
    from sora.inference.bundle import ModelBundle

    base = [o for o in shrunk_overrides(shapes_dir, tmp) if not o.startswith("hydra.")]
    torch.manual_seed(0)
    cfg = compose_config("train", [*base, "dit.patch_size=[1,8,8]", f"data.height={size}", f"data.width={size}",
                                   *overrides])
    bundle = ModelBundle.build(cfg)
    for p in bundle.dit.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return bundle.eval()


FORCING = ["objective.frame_timesteps.non_decreasing=0.5", "objective.history_noise=0.5"]


@pytest.fixture(scope="module")
def forcing(shapes_dir, tmp_path_factory):
    """A model whose config says it trained with per-frame timesteps and noisy history: every switch allowed."""
    return tiny_bundle(shapes_dir, tmp_path_factory.mktemp("forcing"), *FORCING)


def settings(bundle, **long):
    from sora.config.schema import LongVideoConfig
    from sora.inference.pipeline import SampleSettings

    return SampleSettings.of(bundle.cfg).override(steps=2, num_frames=10, long=LongVideoConfig(**long))


def spy_windows(monkeypatch):
    """Record each window's (given latents, made latent) as generate_long samples them."""
    from sora.inference import pipeline

    calls, inner = [], pipeline.sample_latent

    def spy(bundle, prompts, seed, s, given=None, *args, **kw):
        latent = inner(bundle, prompts, seed, s, given, *args, **kw)
        calls.append((given, latent))
        return latent

    monkeypatch.setattr(pipeline, "sample_latent", spy)
    return calls


def spy_forward(monkeypatch, bundle):
    """Record (t, frame_t, frame_mask) of every DiT forward."""
    seen, forward = [], bundle.dit.forward

    def spy(x, t, cond):
        seen.append((t.clone(), None if cond.frame_t is None else cond.frame_t.clone(), cond.frame_mask))
        return forward(x, t, cond)

    monkeypatch.setattr(bundle.dit, "forward", spy)
    return seen


def test_every_switch_off_is_the_window_by_window_sampler(forcing):
    """The switches off: each later window given the decoded end of the one before, re-encoded (today's loop,
    written out here), the same video bit for bit."""
    from sora.inference.pipeline import Given, generate, generate_long

    s = settings(forcing)
    prompts = [PROMPT, "a blue square moving up"]
    got = generate_long(forcing, prompts, 0, s)
    one = s.override(num_frames=4)
    video = generate(forcing, prompts, 0, one)
    parts = [video]
    for w in range(1, 4):  # 4 + 2 + 2 + 2 frames
        frames = torch.cat([video[:, :, -2:], torch.zeros_like(video[:, :, :2])], dim=2)
        mask = torch.tensor([[True, True, False, False]] * 2)
        video = generate(forcing, prompts, 7919 * w, one, Given(frames, mask))
        parts.append(video[:, :, 2:])
    assert torch.equal(got, torch.cat(parts, dim=2))


def test_the_latent_handoff_is_exact_on_a_pixel_vae(forcing, monkeypatch):
    from sora.inference.pipeline import generate_long

    calls = spy_windows(monkeypatch)
    s = settings(forcing, latent_context=True)
    video = generate_long(forcing, [PROMPT], 0, s)
    assert len(calls) == 4 and calls[0][0] is None
    for (_, before), (given, _) in zip(calls, calls[1:]):
        frames, mask = given
        assert mask.tolist() == [[True, True, False, False]]
        assert torch.equal(frames[:, :, :2], before[:, :, -2:])  # the latents themselves, no round trip
    assert video.abs().max() < 1  # nothing clamped: the pixel VAE's latents are the video's frames
    assert torch.equal(video[:, :, 2:4], calls[1][0][0][:, :, :2])
    monkeypatch.undo()
    assert torch.equal(video, generate_long(forcing, [PROMPT], 0, settings(forcing)))  # the pixel round trip's


@pytest.mark.parametrize("switch, value", [("context_noise", 0.3), ("history_guidance", 2.0), ("ar_step", 1)])
def test_each_history_switch_changes_the_later_windows_only(forcing, monkeypatch, switch, value):
    from sora.inference.pipeline import generate_long

    off = generate_long(forcing, [PROMPT], 0, settings(forcing))
    seen = spy_forward(monkeypatch, forcing)
    on = generate_long(forcing, [PROMPT], 0, settings(forcing, **{switch: value}))
    if switch != "ar_step":  # the first window has no history: made as before
        assert torch.equal(on[:, :, :4], off[:, :, :4])
    assert not torch.allclose(on[:, :, 4:], off[:, :, 4:])
    later = [(t, ft, m) for t, ft, m in seen if m is not None]
    if switch == "context_noise":  # the history given at its level (and noised to it)
        assert later and all(torch.allclose(ft, torch.full_like(ft, value)) for _, ft, _ in later)
    if switch == "history_guidance":  # one branch gives the history fully noised, in the same batch
        assert later and all(ft.tolist() == [1.0, 1.0, 0.0] for _, ft, _ in later)
    if switch == "ar_step":  # a level per frame, later frames noisier; more steps
        first = [t for t, _, m in seen if m is None]
        assert len(first) == num_rolling_steps(2, 4, 1)
        per_frame = [t for t in first if t.ndim == 2]  # b T; a step with every frame at one level asks at one t
        assert len(per_frame) == 4 and all((t[0].diff() >= 0).all() and (t[0].diff() > 0).any() for t in per_frame)
        assert len(later) == 3 * num_rolling_steps(2, 2, 1)


def test_later_windows_cfg_guides_the_windows_after_the_first_only(forcing, monkeypatch):
    from sora.inference.pipeline import generate_long

    s = settings(forcing)
    assert s.cfg not in (1.0, 2.5)  # the checkpoint's text guidance, which the first window keeps
    off = generate_long(forcing, [PROMPT], 0, s)
    seen = spy_forward(monkeypatch, forcing)
    on = generate_long(forcing, [PROMPT], 0, settings(forcing, later_windows_cfg=1.0))
    assert torch.equal(on[:, :, :4], off[:, :, :4]) and not torch.allclose(on[:, :, 4:], off[:, :, 4:])
    first = [t for t, _, m in seen if m is None]  # the first window: nothing given
    later = [t for t, _, m in seen if m is not None]
    assert len(first) == 2 and all(len(t) == 2 for t in first)  # each step with and without the text
    assert len(later) == 3 * 2 and all(len(t) == 1 for t in later)  # guidance 1: the text branch alone
    monkeypatch.undo()
    other = generate_long(forcing, [PROMPT], 0, settings(forcing, later_windows_cfg=2.5))
    assert torch.equal(other[:, :, :4], off[:, :, :4])
    assert not torch.allclose(other[:, :, 4:], off[:, :, 4:]) and not torch.allclose(other[:, :, 4:], on[:, :, 4:])
    assert torch.equal(generate_long(forcing, [PROMPT], 0, settings(forcing, later_windows_cfg=s.cfg)), off)


@pytest.mark.parametrize("k", [1, 2])
def test_draft_frames_remake_the_first_window_from_the_start_of_a_draft_made_from_text(forcing, k):
    """long.draft_frames = k: the first window is made from text (the draft, from a noise of its own), then again
    given the draft's first k frames as image= gives a frame (k = 1), at long.redraw_cfg; one window or many."""
    from sora.inference.pipeline import Given, generate, generate_long, long_video, num_steps

    prompts = [PROMPT, "a blue square moving up"]
    plain = settings(forcing)
    draft = generate(forcing, prompts, -7919, plain.override(num_frames=4))  # b 3 4 h w: the text-to-video window
    frames = torch.zeros_like(draft)
    frames[:, :, :k] = draft[:, :, :k]
    given = Given(frames, torch.tensor([[True] * k + [False] * (4 - k)] * 2))
    got = generate_long(forcing, prompts, 0, settings(forcing, draft_frames=k))
    assert torch.equal(got, generate_long(forcing, prompts, 0, plain, given))  # image= with the draft's frame(s)
    assert torch.equal(got[:, :, :k], draft[:, :, :k])
    assert not torch.allclose(got, generate_long(forcing, prompts, 0, plain))
    s = settings(forcing, draft_frames=k, redraw_cfg=2.5)
    assert plain.cfg != 2.5
    guided = generate_long(forcing, prompts, 0, s)  # 2.5: the second pass's text guidance, and only its
    assert torch.equal(guided[:, :, :4], generate(forcing, prompts, 0, plain.override(num_frames=4, cfg=2.5), given))
    assert not torch.allclose(guided[:, :, :4], got[:, :, :4])
    one = generate_long(forcing, prompts, 0, s.override(num_frames=4))  # a video of one window
    assert torch.equal(one, guided[:, :, :4])
    for ar_step in (0, 1):  # the progress bar counts the draft's steps too
        s = settings(forcing, draft_frames=k, ar_step=ar_step)
        calls = []
        for _ in long_video(forcing, [PROMPT], 0, s, callback=lambda step, total: calls.append(step)):
            pass
        assert len(calls) == num_steps(forcing, s) > num_steps(forcing, settings(forcing, ar_step=ar_step))


def test_candidates_keep_each_videos_window_with_the_least_denoising_error(forcing, monkeypatch):
    """long.candidates = n: every window made from n noises (candidate c from seed + CANDIDATE_SEED_STRIDE c, the
    first one's today's), and each video keeps the candidate the model's own error under its condition ranks best,
    the first window scored on text and the later ones given their history, as given."""
    from sora.diffusion.guidance import guided_velocity
    from sora.diffusion.verifier import denoising_error
    from sora.inference import pipeline
    from sora.inference.pipeline import CANDIDATE_SEED_STRIDE, generate_long, long_video, num_steps, sample_latent

    prompts = [PROMPT, "a blue square moving up", "a green triangle moving right"]
    one = settings(forcing).override(num_frames=4)
    made = [sample_latent(forcing, prompts, 5 + CANDIDATE_SEED_STRIDE * c, one) for c in range(3)]  # b z t h w each
    cond = forcing.encode_text(prompts)
    unguided = guided_velocity(forcing.objective, forcing.dit, [cond], [])  # the model under the prompt alone
    errors = torch.stack([denoising_error(forcing.objective, unguided, x, cond, 5 + 7) for x in made])  # 3 b
    got = sample_latent(forcing, prompts, 5, settings(forcing, candidates=3).override(num_frames=4))
    for i, c in enumerate(errors.argmin(0).tolist()):
        assert torch.equal(got[i], made[c][i])
    assert len(set(errors.argmin(0).tolist())) > 1  # the videos of a batch choose apart
    assert torch.equal(sample_latent(forcing, prompts, 5, settings(forcing, candidates=1).override(num_frames=4)),
                       made[0])
    calls, inner = [], pipeline.denoising_error  # a later window is scored given its history, clean

    def spy(objective, velocity_fn, x, cond, seed, *args):
        calls.append(cond)
        return inner(objective, velocity_fn, x, cond, seed, *args)

    monkeypatch.setattr(pipeline, "denoising_error", spy)
    video = generate_long(forcing, [PROMPT], 0, settings(forcing, candidates=2, latent_context=True,
                                                         context_noise=0.1))
    assert video.shape[2] == 10 and len(calls) == 2 * 4  # 4 windows, 2 candidates each
    assert not calls[0].has_frames and all(c.has_frames and (c.frame_t == 0).all() for c in calls[2:])
    assert calls[2].frame_mask.tolist() == [[True, True, False, False]]
    for ar_step in (0, 1):  # the progress bar counts every candidate's steps
        s, steps = settings(forcing, candidates=2, ar_step=ar_step), []
        for _ in long_video(forcing, [PROMPT], 0, s, callback=lambda step, total: steps.append(step)):
            pass
        assert len(steps) == num_steps(forcing, s) == 2 * num_steps(forcing, settings(forcing, ar_step=ar_step))


def test_a_prompt_per_window(forcing, monkeypatch):
    from sora.inference.pipeline import generate_long

    story = [PROMPT, "a red circle moving right", "a blue square moving up", "a blue square moving down"]
    encoded, encode = [], forcing.encode_text
    monkeypatch.setattr(forcing, "encode_text", lambda captions: encoded.append(list(captions)) or encode(captions))
    told = generate_long(forcing, [story], 0, settings(forcing))
    assert [c for c in encoded if c != [""]] == [[p] for p in story]
    monkeypatch.undo()
    same = generate_long(forcing, [PROMPT], 0, settings(forcing))
    assert torch.equal(told[:, :, :4], same[:, :, :4]) and not torch.allclose(told[:, :, 4:], same[:, :, 4:])
    with pytest.raises(SoraError, match="window_prompts: 3 prompts for a video of 4 windows"):
        generate_long(forcing, [story[:3]], 0, settings(forcing))


# ---------------------------------------------------------------------------------------------------------------
# Streamed writing and memory
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".gif"])
def test_streamed_writing_gives_the_frames_and_marks_of_writing_at_once(tmp_path, ext):
    from sora.data.video_io import read_video
    from sora.provenance import watermark
    from sora.provenance.manifest import read_manifest
    from sora.provenance.stamp import Generation, Provenance, StreamedVideo, write_generated

    torch.manual_seed(10)
    video = torch.rand(3, 10, 96, 112) * 2 - 1  # large enough to carry the watermark
    gen = Generation("ab" * 32, "ema", {"steps": 2}, 0, PROMPT)
    write_generated(tmp_path / f"once{ext}", video, 8, Provenance(), gen)
    with StreamedVideo(tmp_path / f"streamed{ext}", 8, Provenance(), gen) as writer:
        for piece in video.split([4, 2, 2, 2], dim=1):
            writer.add(piece)
    once, streamed = (read_video(tmp_path / f"{name}{ext}")[0] for name in ("once", "streamed"))
    assert np.array_equal(once, streamed)
    if ext == ".mp4":  # the mark is there (the frames are the same in every format)
        assert watermark.detect(streamed).payload is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"once{ext}", f"streamed{ext}"])  # no spool left
    if ext != ".webm":  # C2PA cannot sign WebM
        mime = {".mp4": "video/mp4", ".gif": "image/gif"}[ext]
        reports = [read_manifest((tmp_path / f"{name}{ext}").read_bytes(), mime) for name in ("once", "streamed")]
        assert [r.status for r in reports] == ["valid", "valid"]
        assert reports[0].claims["generation"] == reports[1].claims["generation"]


def test_generate_to_files_streamed_is_the_same_video(forcing, tmp_path):
    from sora.data.video_io import read_video
    from sora.inference.pipeline import generate_to_files

    for stream in (False, True):
        generate_to_files(forcing, [PROMPT, "a blue square moving up"], [tmp_path / f"{stream}-{i}.mp4" for i in
                                                                       range(2)], 0, settings(forcing, stream=stream))
    for i in range(2):
        assert np.array_equal(read_video(tmp_path / f"False-{i}.mp4")[0], read_video(tmp_path / f"True-{i}.mp4")[0])


def test_the_memory_of_a_streamed_video_is_flat_in_its_length(shapes_dir, tmp_path):
    """The Python-side peak (tracemalloc: numpy frames, the encoder's and the writer's buffers) of a 240-frame
    video is within 10% of a 60-frame one's when streamed; written at once, the whole video's frames are held."""
    from sora.inference.pipeline import generate_to_files

    bundle = tiny_bundle(shapes_dir, tmp_path, size=96)  # frames that carry the watermark

    def peak(num_frames: int, stream: bool) -> int:
        s = settings(bundle, stream=stream).override(num_frames=num_frames, steps=1)
        generate_to_files(bundle, [PROMPT], [tmp_path / "warm.mp4"], 0, s.override(num_frames=8))  # imports, caches
        tracemalloc.start()
        try:
            generate_to_files(bundle, [PROMPT], [tmp_path / f"{num_frames}.mp4"], 0, s)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = peak(60, True), peak(240, True)
    assert long < 1.1 * short, (short, long)
    held = peak(240, False)  # at once: 240 x 96 x 96 x 3 bytes of frames (6.6 MB) at least
    assert held > short + 240 * 96 * 96 * 3 * 0.9, (short, held)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the option, before anything runs
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(shapes_dir, tmp_path_factory):
    """Exports of a synchronous-only model (today's training) and of a per-frame one."""
    root = tmp_path_factory.mktemp("forcing_ckpts")
    tiny_bundle(shapes_dir, root).save(str(root / "plain.safetensors"))
    tiny_bundle(shapes_dir, root, *FORCING).save(str(root / "forcing.safetensors"))
    return root


@pytest.mark.parametrize("ckpt, args, message", [
    ("plain", ["long.ar_step=2"], "long.ar_step=2: a rolling schedule gives each frame its own timestep, and this "
                                  "checkpoint trained with one timestep a clip"),
    ("plain", ["long.history_guidance=2"], "long.history_guidance=2.0: its unconditional branch gives the history "
                                           "fully noised, which this checkpoint was never given"),
    ("plain", ["long.context_noise=0.3"], "long.context_noise=0.3: this checkpoint was given frames at noise levels "
                                          "up to conditioning.frame_noise=0.05 only"),
    ("forcing", ["long.ar_step=1", "sampler=heun"], "long.ar_step=1: the rolling schedule steps each frame by Euler"),
    ("forcing", ["num_frames=12", "overlap_frames=4"], "overlap_frames=4: each later window of a 12-frame video is "
                                                       "given 1 to 3 frames"),
    ("forcing", ["num_frames=12", "window_prompts=[a red circle moving left,a red circle moving right]"],
     "window_prompts: 2 prompts for a video of 5 windows"),
    ("forcing", ["long.later_windows_cfg=-1"], "long.later_windows_cfg must be >= 0, got -1.0"),
    ("forcing", ["long.draft_frames=1", "image={root}/still.png"], "long.draft_frames=1 makes the first frames "
                                                                   "from text, and image= gives the video its frames"),
    ("forcing", ["long.draft_frames=4"], "long.draft_frames=4: the first window is made again given that many frames "
                                         "of its draft, and it has 4; use fewer"),
    ("forcing", ["long.candidates=0"], "long.candidates must be in [1, 64], got 0"),
    ("forcing", ["window_prompts=[a]", "prompt=a"], "give exactly one of prompt="),
    ("forcing", ["window_prompts_file={root}/none.txt"], "window_prompts_file='{root}/none.txt' is not a file"),
])
def test_bad_long_video_inputs_get_one_line_and_write_nothing(checkpoints, tmp_path, ckpt, args, message):
    out = tmp_path / "x.mp4"
    has_prompt = any(a.startswith("window_prompts") for a in args)
    proc = sample_in_process(f"ckpt={checkpoints}/{ckpt}.safetensors", f"out={out}", "steps=1",
                             *([] if has_prompt else [f"prompt={PROMPT}"]), *[a.format(root=tmp_path) for a in args])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert message.format(root=tmp_path) in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def test_a_long_video_with_every_switch_through_sample_py(checkpoints, tmp_path):
    from sora.data.video_io import read_video

    story = tmp_path / "story.txt"
    story.write_text("a red circle moving left\na red circle moving right\n\na blue square moving up\n")
    out = tmp_path / "x.mp4"
    proc = sample_in_process(f"ckpt={checkpoints}/forcing.safetensors", f"window_prompts_file={story}", f"out={out}",
                             "steps=2", "num_frames=8", "long.latent_context=true", "long.context_noise=0.1",
                             "long.history_guidance=1.5", "long.ar_step=1", "long.later_windows_cfg=1",
                             "long.stream=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_video(out)[0].shape == (8, 16, 16, 3)
