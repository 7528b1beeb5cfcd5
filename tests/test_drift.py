"""The drift score (sora/eval/drift.py): 1.0 on rendered ground truth, and each planted drift caught in its window."""

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from sora.data.moving_shapes import (
    ALL_COMBOS,
    COLORS,
    VERBS,
    MovingShapesArgs,
    Track,
    caption,
    draw_track,
    reflect,
    render_long_clip,
    speed_px,
)
from sora.data.video_io import encode_mp4
from sora.errors import SoraError
from sora.eval.drift import drift_video, main, measure_drift, score_drift

CFG = MovingShapesArgs()  # 32x32, the quick start's
WINDOW = 8  # the quick start's trained clip: 8 frames at stride 2


def ground_truth(num_frames: int, combos, occluder: bool, seed: int = 0):
    """(videos, prompts): every verb of each combination, rendered as training reads them (stride 2)."""
    rng = np.random.default_rng(seed)
    videos, prompts = [], []
    for verb in VERBS:
        for color, shape, direction in combos:
            frames, _ = render_long_clip(color, shape, direction, verb, rng, num_frames, CFG, 2, occluder)
            videos.append(frames)
            prompts.append(caption(color, shape, direction, verb))
    return videos, prompts


@pytest.mark.parametrize("occluder", [False, True])
def test_ground_truth_at_4x_the_window_scores_1(occluder):
    videos, prompts = ground_truth(4 * WINDOW, ALL_COMBOS[::3], occluder)
    result = score_drift(videos, prompts, WINDOW)
    failed = [(v["prompt"], [w["failed"] for w in v["windows"]]) for v in result["videos"] if not v["passed"]]
    assert result["all_windows_pass"] == 1.0, failed
    assert result["per_window_pass"] == [1.0] * 4 and result["median_frames_to_first_failure"] == 4 * WINDOW
    assert result["wrong_turns_by_bounces_before"] == {}
    assert set(result["by_verb"]) == {"moving", "bouncing"} and result["n"] == 2 * len(ALL_COMBOS[::3])
    with_bar = sum(v["bar"] is not None for v in result["videos"])  # the report apart for videos with a bar
    assert result["by_bar"]["bar"]["n"] == with_bar and result["by_bar"]["no_bar"]["n"] == result["n"] - with_bar
    assert all(part.get("all_windows_pass", 1.0) == 1.0 for part in result["by_bar"].values())
    if occluder:  # the shape really is hidden in some frames: an occlusion is not a vanished shape
        assert any(v["bar"] for v in result["videos"]) and result["by_bar"]["bar"]["n"] > 0
        assert any((f.max(axis=-1) > 100).sum((1, 2)).min() == 0 for f in videos[len(videos) // 2:])


@pytest.mark.parametrize("occluder", [False, True])
def test_ground_truth_at_a_minute_scores_1(occluder):
    videos, prompts = ground_truth(240, ALL_COMBOS[1::9], occluder, seed=1)
    result = score_drift(videos, prompts, WINDOW)
    assert result["all_windows_pass"] == 1.0, [v["windows"] for v in result["videos"] if not v["passed"]]
    assert len(result["per_window_pass"]) == 30 and result["median_frames_to_first_failure"] == 240
    # a bouncing shape turns many times in a minute, every turn at an edge
    assert all(len(v["windows"]) == 30 for v in result["videos"])


def bouncing_through_mp4(occluder: bool, n: int = 64, tmp=None) -> dict:
    """The drift score of n rendered bouncing videos of the held-out bouncing combinations, 4 windows long, after
    the mp4 round trip a sampled video goes through (written as the bench writes it, read back as it reads it):
    what a model that drew the ground truth would score.

        python -c "from tests.test_drift import bouncing_through_mp4 as f; print(f(True)['all_windows_pass'])"
    """
    import tempfile
    from pathlib import Path

    from sora.data.moving_shapes import HELDOUT_BOUNCING as combos
    from sora.data.video_io import read_video

    cfg = MovingShapesArgs(bouncing_share=0.5, occluder_share=0.25)  # the long-video preset's
    with tempfile.TemporaryDirectory(dir=tmp) as folder:
        videos, prompts = [], []
        for i in range(n):
            color, shape, direction = combos[i % len(combos)]
            frames, _ = render_long_clip(color, shape, direction, "bouncing", np.random.default_rng(i), 4 * WINDOW, cfg,
                                         2, occluder)
            path = Path(folder) / f"{i:03d}.mp4"
            path.write_bytes(encode_mp4(frames, 4, generated=True))
            videos.append(read_video(path)[0])
            prompts.append(caption(color, shape, direction, "bouncing"))
        return score_drift(videos, prompts, WINDOW)


@pytest.mark.parametrize("occluder", [False, True])
def test_rendered_bouncing_videos_pass_after_the_mp4_round_trip(occluder, tmp_path):
    """The bench scores the mp4 it wrote: rendered ground truth with a bar, in the bench's held-out prompts, still
    passes after it, so a sampled video with a bar fails for what it shows, not for the file."""
    result = bouncing_through_mp4(occluder, 32, tmp_path)
    assert result["all_windows_pass"] >= 0.95, result["failed_windows_by_check"]
    assert (result["by_bar"]["bar"]["n"] == 32) == occluder


def one(verb: str, occluder: bool = False, direction: str = "left", seed: int = 3):
    rng = np.random.default_rng(seed)
    frames, track = render_long_clip("red", "square", direction, verb, rng, 4 * WINDOW, CFG, 2, occluder)
    prompt = caption("red", "square", direction, verb)
    assert drift_video(frames, prompt, WINDOW)["passed"]
    return frames, track, prompt


def failures(frames, prompt) -> list[list[str]]:
    return [w["failed"] for w in drift_video(frames, prompt, WINDOW)["windows"]]


@pytest.mark.parametrize("verb", VERBS)
def test_a_planted_colour_change_fails_its_window(verb):
    frames, _, prompt = one(verb)
    bright = frames.max(axis=-1) > 100  # t h w
    changed = frames.copy()
    changed[12:][bright[12:]] = COLORS["blue"]  # red until frame 12, blue after
    got = failures(changed, prompt)
    shown = [bright[s : s + WINDOW].any() for s in range(0, len(frames), WINDOW)]  # a moving one leaves
    assert got[0] == [] and all(("colour" in w) == on for w, on in zip(got[1:], shown[1:])), got
    assert drift_video(changed, prompt, WINDOW)["first_failure_frame"] == WINDOW


@pytest.mark.parametrize("occluder", [False, True])
def test_a_vanished_shape_fails_but_an_occlusion_does_not(occluder):
    frames, track, prompt = one("bouncing", occluder)
    gone = frames.copy()
    # where it goes: mid-frame, or with a bar, 3 px or more clear of it
    if track.bar is None:
        middle, clear = 16, 4
    else:
        middle, clear = sum(track.bar) / 2, 3 + (track.bar[1] - track.bar[0] + track.side) / 2
    away = np.abs(track.centers[:, 0] - middle) > clear  # t
    t = next(i for i in range(10, len(frames)) if away[i] == (track.bar is not None))
    bright = gone.max(axis=-1) > 100
    gone[t:][bright[t:]] = 0  # the shape goes out where no bar hides it
    got = failures(gone, prompt)
    assert all(w == [] for w in got[: t // WINDOW]) and "visible" in got[t // WINDOW], (t, got)
    if occluder:  # gone behind the bar for good: a bar hides a shape only as long as it takes to cross it
        behind = frames.copy()
        s = next(i for i in range(8, len(frames) - 8) if (frames[i].max(axis=-1) > 100).sum() == 0)  # hidden here
        behind[s:][bright[s:]] = 0
        got = failures(behind, prompt)
        assert any("visible" in w for w in got), (s, got)


def test_the_report_gives_the_videos_with_a_bar_apart():
    barred, _, prompt = one("bouncing", occluder=True)
    plain, _, _ = one("bouncing")
    gone = barred.copy()
    gone[16:][gone[16:].max(axis=-1) > 100] = 0  # gone for good from frame 16: longer than the bar hides it
    result = score_drift([gone, plain, plain], [prompt] * 3, WINDOW)
    assert result["all_windows_pass"] == 2 / 3
    assert result["by_bar"]["bar"]["n"] == 1 and result["by_bar"]["bar"]["all_windows_pass"] == 0.0
    assert result["by_bar"]["no_bar"]["n"] == 2 and result["by_bar"]["no_bar"]["all_windows_pass"] == 1.0


def test_a_moving_shape_may_leave_through_the_edge_it_moves_to_but_not_come_back():
    frames, track, prompt = one("moving", direction="right")
    seen = (frames.max(axis=-1) > 100).sum((1, 2)) > 0
    assert not seen[-1]  # it left the frame
    assert failures(frames, prompt) == [[]] * 4
    wrapped = frames.copy()
    wrapped[-4:] = frames[:4]  # back at the start: a wrap-around is not leaving
    assert any(w for w in failures(wrapped, prompt))


def turned_track(verb_ok_at_edge: bool):
    """A square moving right from x=8 and back, between the left edge and the right edge or x=20 (mid-frame)."""
    side, speed = 9.0, speed_px(32, 16) * 2
    along = reflect(8 + speed * np.arange(4 * WINDOW), side / 2, 32 - side / 2 if verb_ok_at_edge else 20.0)
    centers = np.stack([along, np.full(len(along), 16.0)], 1)
    return draw_track("red", "square", Track(centers, side, True), 32)


@pytest.mark.parametrize("verb", VERBS)
def test_a_wrong_turn_fails(verb):
    mid = turned_track(verb_ok_at_edge=False)
    got = failures(mid, f"a red square {verb} right")
    assert any("turns" in w for w in got), got
    # each wrong turn with the bounces before it (only a bouncing prompt's turns at the left edge are bounces)
    # and how far from the edge it came: the box's right end at 20 + 4.5, 7.5 px from the right edge
    turns = drift_video(mid, f"a red square {verb} right", WINDOW)["wrong_turns"]
    assert [t["bounces_before"] for t in turns] == ([0, 1] if verb == "bouncing" else [0, 0, 0]), turns
    summary = score_drift([mid], [f"a red square {verb} right"], WINDOW)["wrong_turns_by_bounces_before"]
    assert summary == ({"0": 1, "1": 1} if verb == "bouncing" else {"0": 3}), summary
    assert all(6.5 <= t["edge_gap_px"] <= 8.5 for t in turns[::2]), turns
    # the same turn at the edge is a bounce: right for a bouncing prompt, wrong for a moving one
    edge = failures(turned_track(verb_ok_at_edge=True), f"a red square {verb} right")
    assert (edge == [[]] * 4) == (verb == "bouncing"), edge
    # and a shape that starts the other way fails its first window on the way it starts
    assert "start" in failures(mid, f"a red square {verb} left")[0]


@pytest.mark.parametrize("verb", VERBS)
def test_a_size_change_fails_its_window(verb):
    """Windows of 4 frames here: a moving shape at the dataset's speed is near the edge by frame 8."""
    frames, track = render_long_clip("green", "circle", "left", verb, np.random.default_rng(5), 16, CFG, 2)
    bigger = draw_track("green", "circle", replace(track, side=track.side * 1.5), 32)
    grown = np.concatenate([frames[:4], bigger[4:]])
    prompt = f"a green circle {verb} left"
    assert [w["failed"] for w in drift_video(frames, prompt, 4)["windows"]][:2] == [[], []]
    got = [w["failed"] for w in drift_video(grown, prompt, 4)["windows"]]
    assert got[0] == [] and "size" in got[1], got


def test_a_wrong_shape_and_off_axis_wandering_fail():
    frames, track, prompt = one("bouncing", direction="left")
    triangle = draw_track("red", "triangle", track, 32)
    assert all("shape" in w for w in failures(triangle, prompt))
    drifting = track.centers.copy()
    drifting[:, 1] += np.linspace(0, 8, len(drifting))  # wanders 8 px down while it bounces left and right
    got = failures(draw_track("red", "square", replace(track, centers=drifting), 32), prompt)
    assert got[0] == [] and "axis" in got[-1], got  # it runs into the bottom edge: off its axis too


def test_the_cli_scores_a_folder_and_names_a_bad_prompt(tmp_path, capsys):
    videos, prompts = ground_truth(2 * WINDOW, ALL_COMBOS[:1], occluder=False)
    for i, frames in enumerate(videos):
        (tmp_path / f"{i:03d}.mp4").write_bytes(encode_mp4(frames, 4))
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    main(["--prompts", str(tmp_path / "prompts.txt"), str(tmp_path), "--window", str(WINDOW)])
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2 and result["all_windows_pass"] == 1.0 and "videos" not in result
    (tmp_path / "bad.txt").write_text("a red circle flying left\nx\n")
    with pytest.raises(SystemExit) as exit:
        main(["--prompts", str(tmp_path / "bad.txt"), str(tmp_path)])
    assert exit.value.code == 2 and "is not a moving-shapes caption" in capsys.readouterr().err
    with pytest.raises(SoraError, match="2 videos for 1 prompts"):
        score_drift(videos, prompts[:1], WINDOW)


@pytest.fixture(scope="module")
def tiny_bundle():
    from sora.config.checks import check_train_config
    from sora.inference.bundle import ModelBundle
    from tests.conftest import compose_config

    cfg = compose_config("train", ["dit.hidden_size=32", "dit.depth=1", "dit.num_heads=2", "text.width=16",
                                   "text.num_heads=2", "data.num_frames=4", "sampler.steps=1", "val.drift_windows=2"])
    check_train_config(cfg)
    return ModelBundle.build(cfg).eval(), cfg


def test_measure_drift_makes_long_videos_with_generate_long_and_scores_them(tiny_bundle, tmp_path):
    from sora.inference.pipeline import SampleSettings

    bundle, cfg = tiny_bundle
    prompts = ["a red circle moving left", "a blue square bouncing up"]
    scores = measure_drift(bundle, prompts, tmp_path, SampleSettings.of(cfg), windows=3)
    assert scores["n"] == 2 and scores["window"] == 4 and scores["num_frames"] == 12
    assert len(scores["per_window_pass"]) == 3 and 0 <= scores["all_windows_pass"] <= 1
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["000.mp4", "001.mp4"]
    assert len(json.loads((tmp_path / "drift.json").read_text())["videos"]) == 2


def test_val_drift_runs_during_training_and_logs_a_row(tiny_bundle, tmp_path):
    from sora.training.validation import DriftValidation

    bundle, cfg = tiny_bundle
    cfg.val.drift_every_n_steps = 2
    callback = DriftValidation(cfg, tmp_path / "drift")
    callback.prompts = ["a green triangle bouncing right"]
    module = SimpleNamespace(cfg=cfg, gather_for_sampling=lambda: None, sampling_bundle=lambda ema: bundle)
    trainer = SimpleNamespace(global_step=3, is_global_zero=True, loggers=[])
    callback.on_train_batch_end(trainer, module, None, None, 0)  # not a multiple of 2: nothing
    assert not (tmp_path / "drift.jsonl").exists()
    trainer.global_step = 4
    callback.on_train_batch_end(trainer, module, None, None, 0)
    row = json.loads((tmp_path / "drift.jsonl").read_text())
    assert row["step"] == 4 and row["n"] == 1 and row["num_frames"] == 8
    assert (tmp_path / "drift" / "step_0000004" / "000.mp4").exists()
