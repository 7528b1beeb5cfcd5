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
