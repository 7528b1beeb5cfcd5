import numpy as np
import pytest
import webdataset as wds

from sora.data.buckets import resize_crop
from sora.data.decode import decode_clip
from sora.data.moving_shapes import HELDOUT, TRAIN_COMBOS, caption, parse_caption, render_clip
from sora.data.video_io import to_uint8_frames
from sora.eval.probe import analyze, score


def test_probe_reads_the_ground_truth(shapes_dir):
    videos, prompts = [], []
    for shard in ("train-000000.tar", "test-000000.tar"):
        for s in wds.WebDataset(str(shapes_dir / shard), shardshuffle=False):
            frames = decode_clip(s["mp4"], "mp4", 8, 2, None)  # through H.264, as the probe will meet samples
            videos.append(to_uint8_frames(resize_crop(frames, 32, 32)))
            prompts.append(s["txt"].decode())
    result = score(videos, prompts)
    assert result["color_acc"] == 1.0 and result["direction_acc"] == 1.0 and result["shape_acc"] >= 0.95


def test_probe_says_none_for_an_empty_video_and_wrong_for_a_wrong_one():
    assert analyze(np.zeros((4, 16, 16, 3), np.uint8))["color"] == "none"
    clip = render_clip("red", "square", "left", np.random.default_rng(0), 8, 32)
    assert score([clip, clip[::-1]], ["a red square moving left"] * 2)["direction_acc"] == 0.5


def test_dataset_holds_out_its_test_combinations(shapes_dir):
    shards = wds.WebDataset(f"{shapes_dir}/train-{{000000..000003}}.tar", shardshuffle=False)
    train = {parse_caption(s["txt"].decode()) for s in shards}
    assert train == set(TRAIN_COMBOS) and not train & set(HELDOUT)
    assert (shapes_dir / "heldout_prompts.txt").read_text().splitlines() == [caption(*c) for c in HELDOUT]


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_shapes_stay_visible_and_move_steadily(direction):
    rng = np.random.default_rng(1)
    for _ in range(20):
        clip = render_clip("cyan", "circle", direction, rng, 16, 32)
        mask = clip.max(-1) > 0
        assert mask.sum(axis=(1, 2)).min() > 0.5 * mask.sum(axis=(1, 2)).max()  # never leaves the frame
        assert not mask[:, 0].any() and not mask[:, -1].any() and not mask[:, :, 0].any() and not mask[:, :, -1].any()


def test_parse_caption_takes_both_verbs_and_the_probe_reads_a_bounce_by_its_start():
    from sora.data.moving_shapes import MovingShapesArgs, caption_verb, render_bouncing_clip

    assert parse_caption("a red circle bouncing left") == ("red", "circle", "left")
    assert caption_verb("a red circle bouncing left") == "bouncing"
    assert caption_verb("a red circle moving up") == "moving"
    assert parse_caption("a red circle jumping left") is None and caption_verb("hello") is None
    cfg, rng = MovingShapesArgs(), np.random.default_rng(0)
    videos, prompts = [], []
    for color, shape, direction in TRAIN_COMBOS[::4]:
        frames, _ = render_bouncing_clip(color, shape, direction, rng, cfg)
        videos.append(frames[:15:2])  # a training crop from the start: 8 frames at stride 2, a bounce in most
        prompts.append(caption(color, shape, direction, "bouncing"))
    result = score(videos, prompts)
    assert result["color_acc"] == 1.0 and result["direction_acc"] == 1.0 and result["shape_acc"] >= 0.9
    # the bounce turns the fitted slope in some of them: the direction is the one it starts in
    assert any(row["direction"] != row["initial_direction"] for row in result["videos"])


def test_the_probe_reads_bouncing_clips_behind_an_occluder():
    from sora.data.moving_shapes import BAR_COLOR, MovingShapesArgs, render_bouncing_clip
    from sora.eval.probe import BRIGHT, find_bar

    assert max(BAR_COLOR) < BRIGHT  # the probe never sees the bar as the shape
    cfg, rng = MovingShapesArgs(bouncing_share=1, occluder_share=1), np.random.default_rng(1)
    videos, prompts = [], []
    for color, shape, direction in TRAIN_COMBOS:
        frames, track = render_bouncing_clip(color, shape, direction, rng, cfg, occluder=True)
        axis = 0 if track.horizontal else 1
        assert find_bar(frames) == (axis, *track.bar)
        videos.append(frames[:15:2])
        prompts.append(caption(color, shape, direction, "bouncing"))
    result = score(videos, prompts)
    # behind a bar as wide as a third of the frame, a few 8-frame crops show too little of the shape's start
    assert result["color_acc"] == 1.0 and result["direction_acc"] >= 0.95 and result["shape_acc"] >= 0.85
