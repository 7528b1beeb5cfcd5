"""The loader on generated shards: shapes, shard patterns, splitting, resume, skipped samples, strict mode."""

import json
import logging
import random
import re
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
import webdataset as wds

import sora.data.decode
import sora.data.stream
from sora.data.buckets import BucketSet, resize_crop
from sora.data.decode import BadSample, DecodedClips, decode_clip
from sora.data.stream import ClipStream, check_shards, expand_shards, make_loader, strip_bookkeeping
from sora.errors import SoraError
from tests.conftest import compose_config


def data_cfg(shapes_dir, *overrides):
    return compose_config("train", [f"data.shards={shapes_dir}/train-*.tar", "data.num_workers=0",
                                    "data.batch_size_per_gpu=4", "data.num_frames=4", "data.frame_stride=3",
                                    "data.height=16", "data.width=24", "data.shuffle_buffer=8", *overrides]).data


def test_loader_yields_bcthw_in_range(shapes_dir):
    batch, position, skipped = strip_bookkeeping(next(iter(make_loader(data_cfg(shapes_dir), seed=0))))
    assert batch["video"].shape == (4, 3, 4, 16, 24)
    assert batch["video"].min() >= -1 and batch["video"].max() <= 1 and batch["video"].max() > 0.5
    assert all(c.startswith("a ") and " moving " in c for c in batch["caption"])
    assert position["reader"] == 0 and position["epoch"] == 0 and skipped == {}


def test_random_crop_moves_the_window_and_can_be_turned_off(shapes_dir):
    """A 32x32 clip covers a 16x24 bucket at 24x24: the crop's offset is random per sample (data.random_crop), or
    always the centre (once it was always the centre, whatever the setting)."""
    raw = next(iter(wds.WebDataset(f"{shapes_dir}/train-000000.tar", shardshuffle=False)))
    crops = {}
    for random_crop in (True, False):
        cfg = data_cfg(shapes_dir, f"data.random_crop={random_crop}", "data.random_start=false")
        stream = ClipStream(expand_shards(cfg.shards), cfg, BucketSet.from_config(cfg))
        crops[random_crop] = [stream.process(raw, random.Random(i))[1]["video"] for i in range(8)]
    assert any(not torch.equal(crops[True][0], c) for c in crops[True][1:])
    assert all(torch.equal(crops[False][0], c) for c in crops[False])
    centre = resize_crop(decode_clip(raw["mp4"], "mp4", 4, 3, None, json.loads(raw["json"])), 16, 24)
    assert torch.equal(crops[False][0], centre)


def test_clip_start_share_starts_that_share_at_frame_0_and_marks_the_others_late(shapes_dir):
    """data.clip_start_share: a crop from the clip's start is the clip read from frame 0; the others start at a
    random time and say so (`late`, which training gives its first frames); null keeps today's crops, unmarked."""
    raw = next(iter(wds.WebDataset(f"{shapes_dir}/train-000000.tar", shardshuffle=False)))

    def crops(*overrides):
        cfg = data_cfg(shapes_dir, "data.random_crop=false", *overrides)
        stream = ClipStream(expand_shards(cfg.shards), cfg, BucketSet.from_config(cfg))
        return [stream.process(raw, random.Random(i))[1] for i in range(40)], stream

    first = crops("data.random_start=false")[0][0]
    assert "late" not in first and all("late" not in it for it in crops()[0])
    from_start, _ = crops("data.clip_start_share=1")
    assert all(not it["late"] and torch.equal(it["video"], first["video"]) for it in from_start)
    later, _ = crops("data.clip_start_share=0")
    assert all(it["late"] for it in later) and any(not torch.equal(it["video"], first["video"]) for it in later)
    mixed, stream = crops("data.clip_start_share=0.5")
    assert 10 < sum(it["late"] for it in mixed) < 30
    assert all(torch.equal(it["video"], first["video"]) for it in mixed if not it["late"])
    assert stream.collate("0", mixed[:4])["late"] == [it["late"] for it in mixed[:4]]
    cfg = data_cfg(shapes_dir, "data.random_crop=false", "data.clip_start_share=0")
    cfg.random_start = False  # as sora/eval/validation.py reads held-out clips: from frame 0, none late
    stream = ClipStream(expand_shards(cfg.shards), cfg, BucketSet.from_config(cfg))
    assert all(not stream.process(raw, random.Random(i))[1]["late"] for i in range(8))


def test_shard_patterns(shapes_dir, tmp_path):
    shards = expand_shards(f"{shapes_dir}/train-*.tar")
    assert len(shards) == 4
    assert expand_shards(f"{shapes_dir}/train-{{000000..000003}}.tar") == shards
    with pytest.raises(SoraError, match="matches no file"):
        expand_shards(f"{shapes_dir}/nothing-*.tar")
    with pytest.raises(SoraError, match="missing"):
        expand_shards(f"{shapes_dir}/train-{{000000..000009}}.tar")
    (tmp_path / "bad-000000.tar").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(SoraError, match="bad-000000.tar.*not a readable tar"):
        check_shards([str(tmp_path / "bad-000000.tar")])


def _epoch_keys(stream, readers_per_rank, monkeypatch):
    """Keys each reader yields over its first epoch (captions carry the key in these tests)."""
    out = {}
    for worker in range(readers_per_rank):
        monkeypatch.setattr(sora.data.stream, "get_worker_info",
                            lambda w=worker: SimpleNamespace(id=w, num_workers=readers_per_rank))
        keys = []
        for batch in stream:
            if batch["_position"]["epoch"] > 0:
                break
            keys += batch["caption"]
        out[(stream.rank, worker)] = keys
    return out


@pytest.mark.parametrize("num_shards", [8, 3])  # whole shards per reader, and samples split within shards
def test_world_2_by_2_workers_sees_every_sample_once_per_epoch(tmp_path, shapes_dir, monkeypatch, num_shards):
    good = next(iter(wds.WebDataset(f"{shapes_dir}/train-000000.tar", shardshuffle=False)))
    keys = []
    for s in range(num_shards):
        with wds.TarWriter(str(tmp_path / f"k-{s:06d}.tar")) as sink:
            for i in range(5 + s):  # uneven shards
                key = f"s{s}i{i}"
                sink.write({"__key__": key, "mp4": good["mp4"], "txt": key, "json": good["json"]})
                keys.append(key)
    cfg = data_cfg(shapes_dir, f"data.shards={tmp_path}/k-*.tar", "data.batch_size_per_gpu=3")
    shards = expand_shards(cfg.shards)
    seen = {}
    for rank in range(2):
        stream = ClipStream(shards, cfg, BucketSet.from_config(cfg), seed=5, rank=rank, world_size=2)
        seen.update(_epoch_keys(stream, 2, monkeypatch))
    all_seen = [k for ks in seen.values() for k in ks]
    assert sorted(all_seen) == sorted(keys)  # none twice, none lost
    assert all(len(ks) > 0 for ks in seen.values())  # every reader works


def test_resume_continues_the_exact_stream(shapes_dir):
    """Positions carried by batches restore a reader mid-epoch, shuffle buffer and partial buckets included."""
    cfg = data_cfg(shapes_dir, "data.batch_size_per_gpu=3", "data.shuffle_buffer=16")
    shards = expand_shards(cfg.shards)
    buckets = BucketSet.from_config(cfg)
    full = [b for _, b in zip(range(60), ClipStream(shards, cfg, buckets, seed=1))]  # crosses an epoch (128 clips)
    cut = 23
    state = {0: full[cut - 1]["_position"]}
    resumed = [b for _, b in zip(range(60 - cut), ClipStream(shards, cfg, buckets, seed=1, state=state))]
    for a, b in zip(full[cut:], resumed):
        assert a["caption"] == b["caption"]
        assert torch.equal(a["video"], b["video"])  # same random starts and crops too
    assert full[-1]["_position"]["epoch"] == 1


def test_decoded_clips_kept_in_memory_give_the_batches_decoding_gives(shapes_dir):
    """data.decoded_cache_mb: over two epochs the stream's batches equal those of decoding every time, and the
    second epoch decodes nothing."""
    batches = {}
    for mb in (0, 64):
        cfg = data_cfg(shapes_dir, f"data.decoded_cache_mb={mb}", "data.shuffle_buffer=16")
        stream = ClipStream(expand_shards(cfg.shards), cfg, BucketSet.from_config(cfg), seed=3)
        batches[mb] = [b for _, b in zip(range(40), stream)]  # past the first epoch
        assert batches[mb][-1]["_position"]["epoch"] >= 1
    for a, b in zip(batches[0], batches[64]):
        assert a["caption"] == b["caption"] and torch.equal(a["video"], b["video"])
    clips = sum(1 for _ in wds.WebDataset(expand_shards(cfg.shards), shardshuffle=False))
    assert stream.decoded is not None and len(stream.decoded.clips) == clips  # every clip kept, once


def test_decoded_clips_keep_only_what_fits_and_decode_the_rest(shapes_dir, monkeypatch):
    raws = [r for _, r in zip(range(3), wds.WebDataset(f"{shapes_dir}/train-000000.tar", shardshuffle=False))]
    info = json.loads(raws[0]["json"])
    one_clip = info["num_frames"] * info["height"] * info["width"] * 3
    cache = DecodedClips(1)
    cache.max_bytes = 2 * one_clip  # room for two clips
    for i, raw in enumerate(raws):
        want = decode_clip(raw["mp4"], "mp4", 4, 3, random.Random(i), json.loads(raw["json"]))
        got = cache.decode(raw["__key__"], raw["mp4"], "mp4", 4, 3, random.Random(i), json.loads(raw["json"]))
        assert torch.equal(want, got)
    assert sorted(cache.clips) == sorted(r["__key__"] for r in raws[:2]) and cache.used_bytes == 2 * one_clip
    decoded = []
    monkeypatch.setattr(sora.data.decode, "_decode_decord", lambda *a, **k: decoded.append(a) or 1 / 0)
    cache.decode(raws[0]["__key__"], raws[0]["mp4"], "mp4", 4, 3, random.Random(0), json.loads(raws[0]["json"]))
    assert decoded == []  # served from memory
    with pytest.raises(BadSample, match="too_short"):  # a kept clip still says when it is too short
        cache.decode(raws[0]["__key__"], raws[0]["mp4"], "mp4", 40, 3, random.Random(0), json.loads(raws[0]["json"]))


def test_clip_sampling_and_resize(shapes_dir):
    sample = next(iter(wds.WebDataset(f"{shapes_dir}/train-000000.tar", shardshuffle=False)))
    meta = json.loads(sample["json"])
    frames = decode_clip(sample["mp4"], "mp4", num_frames=4, frame_stride=5, rng=None)
    assert frames.shape == (4, meta["height"], meta["width"], 3) and frames.dtype == torch.uint8
    with pytest.raises(BadSample, match="needs 21"):
        decode_clip(sample["mp4"], "mp4", num_frames=6, frame_stride=4, rng=None)
    wide = torch.zeros(2, 10, 40, 3, dtype=torch.uint8)
    assert resize_crop(wide, 20, 20).shape == (3, 2, 20, 20)  # scale to cover, then crop: no distortion
    assert resize_crop(wide, 20, 20, random.Random(0)).shape == (3, 2, 20, 20)


def _mixed_shard(tmp_path, shapes_dir):
    good = next(iter(wds.WebDataset(f"{shapes_dir}/train-000000.tar", shardshuffle=False)))
    path = tmp_path / "mixed-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "broken", "mp4": b"not a video at all", "txt": "a red square moving up"})
        sink.write({"__key__": "empty", "mp4": b"", "txt": "a red square moving up"})
        sink.write({"__key__": "novideo", "txt": "a red square moving up"})
        sink.write({"__key__": "nocaption", "mp4": good["mp4"], "json": good["json"]})
        truncated = good["mp4"][: len(good["mp4"]) // 3]
        sink.write({"__key__": "truncated", "mp4": truncated, "txt": "a red square moving up"})
        for i in range(4):
            sink.write({"__key__": f"good{i}", "mp4": good["mp4"], "txt": good["txt"], "json": good["json"]})
    return path, good


def test_bad_samples_are_skipped_counted_and_listed(tmp_path, shapes_dir, caplog):
    """Every skipped sample is named in the skip file; the log gets one summary line per reason, not one per clip."""
    path, good = _mixed_shard(tmp_path, shapes_dir)
    cfg = data_cfg(shapes_dir, f"data.shards={path}", "data.shuffle_buffer=1", "data.batch_size_per_gpu=4")
    listed = tmp_path / "skipped_samples.jsonl"
    stream = ClipStream([str(path)], cfg, BucketSet.from_config(cfg), skipped_path=listed)
    with caplog.at_level(logging.WARNING, logger="sora.data.stream"):
        first = next(iter(stream))
    assert first["caption"] == [good["txt"].decode()] * 4
    skipped = Counter(first["_skipped"])
    assert skipped["undecodable"] >= 1 and skipped["empty_file"] == 1 and skipped["not_media"] == 1
    assert skipped["no_caption"] == 1 and sum(skipped.values()) == 5  # truncated: undecodable or too_short
    records = [json.loads(line) for line in listed.read_text().splitlines()]
    for key in ("broken", "empty", "novideo", "nocaption", "truncated"):
        assert f"{path}:{key}" in [r["where"] for r in records]
    assert Counter(r["reason"] for r in records) == skipped and all(r["detail"] for r in records)
    summaries = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(summaries) == len(skipped)  # the first of each reason: one line each, naming it
    assert all(str(listed) in line and f"{path}:" in line for line in summaries)


def test_skip_summaries_come_at_1_10_100_skips_of_a_reason(caplog):
    from sora.data.skip_log import SkipLog

    skips = SkipLog(None, reader=3)
    with caplog.at_level(logging.WARNING, logger="sora.data.stream"):
        for i in range(150):
            skips.add("too_short", f"{i} frames", f"a.tar:k{i}", epoch=0)
        skips.add("too_small", "4x4", "a.tar:small", epoch=0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and [re.search(r"skipped (\d+) ", line)[1] for line in lines[:3]] == ["1", "10", "100"]
    assert "a.tar:k99 (99 frames)" in lines[2] and "a.tar:k97" in lines[2] and "a.tar:k96" not in lines[2]
    assert "reader 3 skipped 1 sample(s) so far as too_small" in lines[3]


def test_strict_mode_stops_at_the_first_bad_sample_naming_it(tmp_path, shapes_dir):
    path, _ = _mixed_shard(tmp_path, shapes_dir)
    cfg = data_cfg(shapes_dir, f"data.shards={path}", "data.shuffle_buffer=1", "data.strict=true")
    with pytest.raises(SoraError, match=r"mixed-000000.tar:broken: undecodable"):
        next(iter(ClipStream([str(path)], cfg, BucketSet.from_config(cfg))))


def test_a_shard_of_only_bad_samples_is_a_clear_error(tmp_path, shapes_dir):
    path = tmp_path / "bad-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "x", "mp4": b"nope", "txt": "a"})
    cfg = data_cfg(shapes_dir, f"data.shards={path}")
    with pytest.raises(SoraError, match="no usable sample"):
        next(iter(ClipStream([str(path)], cfg, BucketSet.from_config(cfg))))


class _Recorder:
    """A LightningModule with one weight that records the captions of every batch it trains on."""

    @staticmethod
    def make():
        import lightning as L

        class Recorder(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(()))
                self.seen = []

            def training_step(self, batch, batch_idx):
                self.seen.append(list(batch["caption"]))
                return (self.w - batch["video"].mean()) ** 2

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Recorder()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_lightning_resume_continues_the_loader_where_it_stopped(shapes_dir, tmp_path, num_workers):
    import lightning as L

    from sora.training.datamodule import ClipDataModule

    cfg = data_cfg(shapes_dir, f"data.num_workers={num_workers}", "data.batch_size_per_gpu=3")
    kw = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False)
    straight = _Recorder.make()
    L.Trainer(max_steps=7, **kw).fit(straight, datamodule=ClipDataModule(cfg, seed=2))
    first = _Recorder.make()
    trainer = L.Trainer(max_steps=3, **kw)
    trainer.fit(first, datamodule=ClipDataModule(cfg, seed=2))
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    saved = torch.load(tmp_path / "c.ckpt", weights_only=True)["ClipDataModule"]
    assert saved["batches_seen"] == 3 and len(saved["positions"]) == max(1, num_workers)
    second = _Recorder.make()
    L.Trainer(max_steps=7, **kw).fit(second, datamodule=ClipDataModule(cfg, seed=2), ckpt_path=tmp_path / "c.ckpt",
                                     weights_only=True)
    assert first.seen + second.seen == straight.seen


def test_data_settings_check_their_ranges_in_python_and_in_a_config():
    """DataArgs owns data.*'s ranges and rules: the same check built in Python and on a composed config."""
    import sora.config.checks as checks
    from sora.config import check_train_config
    from sora.data.data_args import DataArgs
    from sora.data.moving_shapes import MovingShapesArgs

    with pytest.raises(SoraError, match=re.escape("num_workers must be >= 0, got -1")):
        DataArgs(num_workers=-1)
    with pytest.raises(SoraError, match=re.escape("buckets: each bucket is [num_frames, height, width] >= 1")):
        DataArgs(buckets=[[9, 32]])
    with pytest.raises(SoraError, match=re.escape("packing=true packs clips up to tokens_per_batch tokens")):
        DataArgs(packing=True)
    with pytest.raises(SoraError, match=re.escape("size_px must be >= 8, got 4")):
        MovingShapesArgs(size_px=4)
    for override, message in [("data.moving_shapes.size_px=4", "data.moving_shapes.size_px must be >= 8, got 4"),
                              ("data.max_aspect=0.5", "data.max_aspect must be >= 1, got 0.5"),
                              ("data.buckets=[[0,32,32]]", "data.buckets: each bucket is [num_frames, height, width]")]:
        with pytest.raises(SoraError, match=re.escape(message)):
            check_train_config(compose_config("train", [override]))
    assert not hasattr(checks, "TRAIN_LIMITS")  # one place: the dataclass, no string-keyed range table
    assert DataArgs().batch_size_per_gpu == 16 and MovingShapesArgs().size_px == 32  # the quick start's


# ---------------------------------------------------------------------------------------------------------------
# The built-in dataset: bouncing clips and the occluder
# ---------------------------------------------------------------------------------------------------------------

# sha256 of every rendered frame, member name and non-video member of the default dataset (clips_per_combo=3,
# clips_per_shard=50, seed 0), taken from the code before bouncing clips existed (main at 4d863f7).
DEFAULT_DATASET_SHA256 = "7f8159a2ed887616edb6cff983735c9f6bd9fe88d873dda289566bd699078d23"


def dataset_fingerprint(root, monkeypatch, **settings) -> str:
    """sha256 of the frames handed to the mp4 encoder and of everything else written (the mp4 bytes themselves
    depend on the encoder's build)."""
    import hashlib
    import tarfile

    import numpy as np

    import sora.data.moving_shapes as ms

    h = hashlib.sha256()

    def frames_only(frames, fps):
        h.update(np.ascontiguousarray(frames).tobytes())
        return b"x"

    monkeypatch.setattr(ms, "encode_mp4", frames_only)
    out = ms.write_moving_shapes(ms.MovingShapesArgs(root=str(root), clips_per_combo=3, clips_per_shard=50,
                                                     **settings))
    for path in sorted(out.iterdir()):
        if path.suffix == ".tar":
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    if not member.name.endswith(".mp4"):
                        h.update(member.name.encode()), h.update(tar.extractfile(member).read())
        else:
            h.update(path.name.encode()), h.update(path.read_bytes())
    return h.hexdigest()


def test_the_default_dataset_is_bit_for_bit_what_it_was(tmp_path, monkeypatch):
    assert dataset_fingerprint(tmp_path / "a", monkeypatch) == DEFAULT_DATASET_SHA256
    # shares of 0 given explicitly are the default; a bouncing share changes it
    assert dataset_fingerprint(tmp_path / "b", monkeypatch, bouncing_share=0.0, occluder_share=0.0) == \
        DEFAULT_DATASET_SHA256
    assert dataset_fingerprint(tmp_path / "c", monkeypatch, bouncing_share=0.5) != DEFAULT_DATASET_SHA256


def test_a_small_clip_encodes_to_the_same_mp4_bytes_every_time():
    """144 32x32 clips (the dataset's size) encoded three times give the same bytes each time; with x264's mb-tree
    on at this size some came out different (this test failed 3 runs in 3, PyAV 18.1)."""
    import numpy as np

    import sora.data.moving_shapes as ms
    from sora.data.video_io import encode_mp4

    cfg, rng = ms.MovingShapesArgs(), np.random.default_rng(0)
    clips = [ms.render_bouncing_clip(color, shape, direction, rng, cfg)[0]
             for color in ms.COLORS for shape in ms.SHAPES for direction in ms.DIRECTIONS for _ in range(2)]
    assert clips[0].shape[1:3] == (32, 32)
    first = [encode_mp4(frames, cfg.fps) for frames in clips]
    for _ in range(2):
        assert [encode_mp4(frames, cfg.fps) for frames in clips] == first


def test_bouncing_clips_their_captions_and_held_out_combinations(tmp_path):
    from sora.data.moving_shapes import (
        BOUNCING_PROMPTS,
        HELDOUT,
        HELDOUT_BOUNCING,
        MovingShapesArgs,
        caption,
        write_moving_shapes,
    )

    cfg = MovingShapesArgs(root=str(tmp_path / "ms"), clips_per_combo=4, clips_per_shard=300, bouncing_share=0.5,
                           occluder_share=0.5)
    root = write_moving_shapes(cfg)
    seen = Counter()
    for name, verbs in (("train", {"moving", "bouncing"}), ("test", {"moving"}), ("test_bouncing", {"bouncing"})):
        for sample in wds.WebDataset(f"{root}/{name}-000000.tar", shardshuffle=False):
            text, meta = sample["txt"].decode(), json.loads(sample["json"])
            verb = text.split()[3]
            assert verb in verbs and verb == meta.get("motion", "moving")
            combo = (meta["color"], meta["shape"], meta["direction"])
            assert text == caption(*combo, verb)
            held = HELDOUT if verb == "moving" else HELDOUT_BOUNCING
            assert (combo in held) == (name != "train")
            if verb == "bouncing":
                assert meta["num_frames"] == cfg.bouncing_num_frames
                seen["occluded"] += meta["occluder"] is not None
            seen[name, verb] += 1
    assert seen["train", "moving"] == 64 * 2 and seen["train", "bouncing"] == 64 * 2  # half of 4 clips a combination
    assert seen["test", "moving"] == 8 and seen["test_bouncing", "bouncing"] == 8
    assert 0 < seen["occluded"] < seen["train", "bouncing"] + 8
    assert (root / BOUNCING_PROMPTS).read_text().splitlines() == [caption(*c, "bouncing") for c in HELDOUT_BOUNCING]
    assert not set(HELDOUT) & set(HELDOUT_BOUNCING)
    info = json.loads((root / "info.json").read_text())
    assert info["config"]["bouncing_share"] == 0.5 and info["test_bouncing_shards"] == 1


def test_bouncing_shapes_reflect_exactly_at_the_edges():
    import numpy as np

    from sora.data.moving_shapes import bouncing_track, reflect, speed_px

    assert np.allclose(reflect(np.array([2.0, 5.0, 11.0, 13.0, -1.0, 21.0]), 2.0, 10.0), [2, 5, 9, 7, 5, 5])
    size, speed = 32, speed_px(32, 16)
    for direction in ("left", "right", "up", "down"):
        track = bouncing_track(direction, np.random.default_rng(1), 200, size, speed, 15)
        axis = 0 if direction in ("left", "right") else 1
        along, lo, hi = track.centers[:, axis], track.side / 2, size - track.side / 2
        assert along.min() >= lo - 1e-9 and along.max() <= hi + 1e-9  # the shape touches an edge, never passes it
        assert np.ptp(track.centers[:, 1 - axis]) == 0  # on its axis
        steps = np.diff(along)
        sign = -1 if direction in ("left", "up") else 1
        assert np.sign(steps[0]) == sign  # it starts the caption's way
        bounced = np.flatnonzero(np.abs(np.abs(steps) - speed) > 1e-9)  # every other step is one frame's travel
        assert len(bounced) >= 200 * speed / (hi - lo) - 2  # about one bounce each crossing
        for j in bounced:  # elastic: the distances to the wall before and after the bounce add up to the travel
            wall = hi if along[j] + along[j + 1] > lo + hi else lo
            assert abs(abs(wall - along[j]) + abs(wall - along[j + 1]) - speed) < 1e-9
        first_bounce = np.flatnonzero(np.sign(steps) != sign)[0]
        assert 2 <= first_bounce <= 15  # within the first num_frames frames: training crops hold a bounce


def bouncing_crops(num_frames: int, n: int, occluder: bool = False, placement: str = "middle"):
    """n training crops of bouncing clips num_frames long, starting "right" (the dataset's defaults, its bar placed
    by `placement`; the quick start's data.num_frames at its data.frame_stride, picked as decode picks them):
    (track, picked frames) each."""
    import numpy as np

    from sora.data.data_args import DataArgs
    from sora.data.decode import _pick, frame_times
    from sora.data.moving_shapes import MovingShapesArgs, bouncing_clip_track

    cfg, data = MovingShapesArgs(bouncing_num_frames=num_frames), DataArgs()
    if occluder:
        cfg = MovingShapesArgs(bouncing_num_frames=num_frames, bouncing_share=0.5, occluder_share=0.25,
                               occluder_placement=placement)
    rng, crop_rng = np.random.default_rng(0), random.Random(0)
    times_s = np.arange(num_frames) / cfg.fps
    for _ in range(n):
        track = bouncing_clip_track("right", rng, cfg, occluder)
        yield track, _pick(times_s, frame_times(data.num_frames, data.frame_stride, cfg.fps, num_frames / cfg.fps,
                                                crop_rng))


def bouncing_crop_shares(num_frames: int, n: int = 2000) -> dict:
    """Of n training crops of bouncing clips num_frames long (`bouncing_crops`), the share that: first moves a pixel
    the caption's way ("caption_way"), starts after the bounce (its first two steps go against it: "after"), holds a
    bounce ("bounced"), and moves against the caption in more of its steps than with it ("mostly_against").

        python -c "from tests.test_data import bouncing_crop_shares as f; print(f(20), f(24))"
    """
    import numpy as np

    count = dict.fromkeys(("caption_way", "after", "bounced", "mostly_against"), 0)
    for track, picked in bouncing_crops(num_frames, n):
        x = track.centers[picked, 0]  # t: along the axis, "right" is +x
        steps = np.diff(x)
        count["caption_way"] += next((v > 0 for v in x[1:] - x[0] if abs(v) >= 1), False)
        count["after"] += steps[0] < 0 and steps[1] < 0
        count["bounced"] += bool(np.any(steps[1:] * steps[:-1] < 0))
        count["mostly_against"] += np.sum(steps < 0) > np.sum(steps > 0)
    return {k: round(float(v) / n, 3) for k, v in count.items()}


def occluder_crop_shares(n: int = 4000, placement: str = "middle") -> dict:
    """Of n training crops of bouncing clips with a bar (`bouncing_crops` at the dataset's clip length, the bar placed
    by `placement`), the share in which the shape is wholly behind the bar in some frame ("hidden"), in which it is
    seen partly on both sides of the bar, one side in some frames and the other in others: it crosses behind it
    ("crossing"), in which the clip's shape turns at the edge partly behind the bar ("turns_at_bar"), as a shape
    bouncing off the bar would look, in which the crop's last frame has the shape at or behind the bar
    ("ends_at_bar"), and in which it is seen wholly before the bar and wholly past it ("whole_both_sides").

        python -c "from tests.test_data import occluder_crop_shares as f; print(f(), f(placement='path'))"
    """
    import numpy as np

    from sora.data.moving_shapes import MovingShapesArgs

    count = dict.fromkeys(("hidden", "crossing", "turns_at_bar", "ends_at_bar", "whole_both_sides"), 0)
    for track, picked in bouncing_crops(MovingShapesArgs().bouncing_num_frames, n, True, placement):
        x, (start, stop) = track.centers[picked, 0], track.bar  # t: along the axis; the bar's columns
        before, after = x - track.side / 2 < start, x + track.side / 2 > stop  # t: some of it left / right of the bar
        count["hidden"] += bool(np.any(~before & ~after))
        count["crossing"] += bool(np.any(before & ~after) and np.any(after & ~before))
        count["turns_at_bar"] += bool(track.centers[:, 0].max() - track.side / 2 < stop)  # "right": it turns at x.max
        clear_before, clear_past = x + track.side / 2 <= start, x - track.side / 2 >= stop  # t: wholly one side
        count["ends_at_bar"] += bool(not (clear_before[-1] or clear_past[-1]))
        count["whole_both_sides"] += bool(np.any(clear_before) and np.any(clear_past))
    return {k: round(float(v) / n, 3) for k, v in count.items()}


def test_the_shape_passes_behind_the_bar_in_crops_of_clips_with_one():
    """A bar is there to hide the shape and let it come out again (object permanence): some crops show it wholly
    hidden, and some show it on both sides of the bar."""
    shares = occluder_crop_shares(1000)
    assert shares["hidden"] >= 0.2 and shares["crossing"] >= 0.1, shares


def test_a_bar_on_the_path_is_crossed_more_often_and_never_where_the_shape_turns():
    """In the middle, half the bars cover part of the shape where it turns at the edge (as a shape bouncing off the
    bar would look); on the path none does, and the crops show it crossing more often, still wholly hidden in some."""
    middle, path = occluder_crop_shares(1000), occluder_crop_shares(1000, "path")
    assert middle["turns_at_bar"] >= 0.3 and path["turns_at_bar"] == 0, (middle, path)
    assert path["crossing"] >= 1.5 * middle["crossing"] and path["hidden"] >= 0.1, (middle, path)


def test_every_clip_with_a_bar_on_its_path_crosses_it_and_turns_clear_of_it():
    """Every direction: the shape is seen partly before the bar and partly past it, and at its turn clear of it."""
    import numpy as np

    from sora.data.moving_shapes import DIRECTIONS, MovingShapesArgs, bouncing_clip_track

    cfg = MovingShapesArgs(bouncing_share=0.5, occluder_share=0.25, occluder_placement="path")
    rng = np.random.default_rng(0)
    for direction in DIRECTIONS:
        toward_high = direction in ("right", "down")
        for _ in range(100):
            track = bouncing_clip_track(direction, rng, cfg, occluder=True)
            along, (start, stop) = track.centers[:, 0 if track.horizontal else 1], track.bar  # t; the bar's pixels
            before, after = along - track.side / 2 < start, along + track.side / 2 > stop  # t
            assert np.any(before & ~after) and np.any(after & ~before), direction
            turn = along.max() - track.side / 2 - stop if toward_high else start - (along.min() + track.side / 2)
            assert turn >= 1, direction  # px between the bar and the shape's near edge where it turns


def test_most_bouncing_crops_start_the_way_their_caption_says():
    """The caption names the way a bouncing clip starts; a model prompted with text alone draws what its crops
    showed, so most crops must start that way, most hold a bounce, and some start after one (a later window's
    history). The clip length that was there before (24 frames) fails: 72% start the caption's way."""
    from sora.data.moving_shapes import MovingShapesArgs

    shares = bouncing_crop_shares(MovingShapesArgs().bouncing_num_frames)
    assert shares["caption_way"] >= 0.85 and shares["bounced"] >= 0.8 and 0.03 <= shares["after"] <= 0.15
    assert bouncing_crop_shares(24)["caption_way"] < 0.8


def test_an_occluder_needs_bouncing_clips():
    from sora.data.moving_shapes import MovingShapesArgs

    with pytest.raises(SoraError, match="occluder_share=0.5 puts bars in bouncing clips"):
        MovingShapesArgs(occluder_share=0.5)
    with pytest.raises(SoraError, match="occluder_placement=path places bars, and occluder_share=0 draws none"):
        MovingShapesArgs(bouncing_share=0.5, occluder_placement="path")
    with pytest.raises(SoraError, match="occluder_placement"):
        MovingShapesArgs(bouncing_share=0.5, occluder_share=0.5, occluder_placement="edge")
    cfg = data_cfg("/tmp", "data.moving_shapes.occluder_share=0.5")  # a composed config names the full key
    from sora.config.checks import check_train_config

    with pytest.raises(SoraError, match="data.moving_shapes.bouncing_share=0"):
        check_train_config(compose_config("train", ["data.moving_shapes.occluder_share=0.5"]))
    assert cfg.moving_shapes.occluder_share == 0.5


def test_a_caption_names_the_bar_only_with_occluder_in_caption(tmp_path):
    """With the setting, exactly the clips with a bar end `behind a bar` (train and held-out shards), their frames
    are the same as without it, and the held-out bar prompts are written; without it no caption names the bar."""
    import sora.data.moving_shapes as ms

    def clips(**extra):
        cfg = ms.MovingShapesArgs(root=str(tmp_path / str(len(extra))), clips_per_combo=4, clips_per_shard=300,
                                  bouncing_share=0.5, occluder_share=0.5, **extra)
        root = ms.write_moving_shapes(cfg)
        out = {}
        for name in ("train", "test_bouncing"):
            for sample in wds.WebDataset(f"{root}/{name}-000000.tar", shardshuffle=False):
                out[sample["__key__"]] = (sample["txt"].decode(), json.loads(sample["json"]), sample["mp4"])
        return root, out

    plain_root, plain = clips()
    named_root, named = clips(occluder_in_caption=True)
    assert plain.keys() == named.keys()
    with_bar = 0
    for key, (text, meta, mp4) in named.items():
        bar = meta.get("occluder") is not None
        with_bar += bar
        combo = (meta["color"], meta["shape"], meta["direction"])
        assert text == ms.caption(*combo, meta.get("motion", "moving"), bar=bar)
        assert text.endswith(" behind a bar") == bar and ms.parse_caption(text) == combo
        assert plain[key][0] == ms.caption(*combo, meta.get("motion", "moving"))  # the plain run never names it
        assert plain[key][1:] == (meta, mp4)  # the same clip, frames and all
    assert 0 < with_bar < sum(m.get("motion") == "bouncing" for _, m, _ in named.values())
    assert (named_root / ms.BAR_PROMPTS).read_text().splitlines() == \
        [f"{ms.caption(*c, 'bouncing')} behind a bar" for c in ms.HELDOUT_BOUNCING]
    assert not (plain_root / ms.BAR_PROMPTS).exists()
    assert json.loads((named_root / "info.json").read_text())["config"]["occluder_in_caption"] is True
    assert "occluder_in_caption" not in json.loads((plain_root / "info.json").read_text())["config"]


def test_parse_caption_takes_the_bar_ending_and_nothing_else():
    from sora.data.moving_shapes import caption_verb, parse_caption

    assert parse_caption("a red circle bouncing left behind a bar") == ("red", "circle", "left")
    assert caption_verb("a red circle bouncing left behind a bar") == "bouncing"
    assert parse_caption("a red circle bouncing left") == ("red", "circle", "left")
    for text in ("a red circle bouncing left behind a box", "a red circle bouncing left behind", "a red circle",
                 "a red circle bouncing left behind a bar now"):
        assert parse_caption(text) is None


def test_occluder_in_caption_is_checked_at_start():
    """It needs bars, and a word encoder that reads all of `behind a bar`: else one line naming the key."""
    from sora.config.checks import check_train_config
    from sora.data.moving_shapes import MovingShapesArgs

    with pytest.raises(SoraError, match="occluder_in_caption=true names the bar in captions, and occluder_share=0"):
        MovingShapesArgs(bouncing_share=0.5, occluder_in_caption=True)
    on = ["+experiment=long_video", "data.moving_shapes.occluder_in_caption=true"]
    with pytest.raises(SoraError, match="text.vocab lacks behind, bar: add them"):
        check_train_config(compose_config("train", on))
    vocab = "text.vocab=[a,moving,bouncing,red,green,blue,yellow,cyan,magenta,square,circle,triangle,left,right,up," \
        "down,behind,bar]"
    with pytest.raises(SoraError, match="text.max_tokens=8 cuts them: set text.max_tokens >= 9"):
        check_train_config(compose_config("train", [*on, vocab]))
    check_train_config(compose_config("train", [*on, vocab, "text.max_tokens=9"]))


def test_info_json_names_the_bar_placement_only_when_it_is_not_the_middle():
    """A copy written before the setting existed (the long-video preset's) still matches and is not rebuilt; one
    written with bars on the path does not match the middle's."""
    from sora.data.moving_shapes import MovingShapesArgs, _settings

    middle = _settings(MovingShapesArgs(bouncing_share=0.5, occluder_share=0.25))
    path = _settings(MovingShapesArgs(bouncing_share=0.5, occluder_share=0.25, occluder_placement="path"))
    assert "occluder_placement" not in middle and path == {**middle, "occluder_placement": "path"}
