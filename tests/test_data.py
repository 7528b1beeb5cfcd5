import json
import logging

import pytest
import torch
import webdataset as wds

from sora.data import ClipStream, decode_clip, expand_shards, make_loader, resize_crop
from sora.errors import SoraError
from tests.conftest import compose_config


def test_loader_yields_bcthw_in_range(shapes_dir):
    cfg = compose_config("train", [f"data.shards={shapes_dir}/train-*.tar", "data.num_workers=0",
                                   "data.batch_size_per_gpu=4", "data.num_frames=4", "data.frame_stride=3",
                                   "data.height=16", "data.width=24"]).data
    batch = next(iter(make_loader(cfg, seed=0)))
    assert batch["video"].shape == (4, 3, 4, 16, 24)
    assert batch["video"].min() >= -1 and batch["video"].max() <= 1 and batch["video"].max() > 0.5
    assert all(c.startswith("a ") and " moving " in c for c in batch["caption"])


def test_shard_patterns(shapes_dir):
    shards = expand_shards(f"{shapes_dir}/train-*.tar")
    assert len(shards) == 4
    assert expand_shards(f"{shapes_dir}/train-{{000000..000003}}.tar") == shards
    with pytest.raises(SoraError, match="matches no file"):
        expand_shards(f"{shapes_dir}/nothing-*.tar")
    with pytest.raises(SoraError, match="missing"):
        expand_shards(f"{shapes_dir}/train-{{000000..000009}}.tar")


def test_shards_split_across_ranks_and_workers(shapes_dir):
    shards = expand_shards(f"{shapes_dir}/train-*.tar")
    seen = []
    for rank in range(2):
        stream = ClipStream(shards, 2, 1, 8, 8, seed=3, rank=rank, world_size=2)
        seen.append(set(stream._my_shards(epoch=0)))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(shards)
    # a new epoch reshuffles which shard goes where
    assert [ClipStream(shards, 2, 1, 8, 8, seed=3)._my_shards(e) for e in range(4)] != [sorted(shards)] * 4


def test_shards_split_across_dataloader_workers(shapes_dir, monkeypatch):
    import sora.data
    from types import SimpleNamespace

    shards = expand_shards(f"{shapes_dir}/train-*.tar")
    stream = ClipStream(shards, 2, 1, 8, 8, seed=0, rank=1, world_size=2)
    mine = []
    for worker in range(2):
        monkeypatch.setattr(sora.data, "get_worker_info", lambda w=worker: SimpleNamespace(id=w, num_workers=2))
        mine.append(stream._my_shards(epoch=0))
    assert all(len(m) == 1 for m in mine) and mine[0] != mine[1]  # 4 shards over 2 ranks x 2 workers
    monkeypatch.setattr(sora.data, "get_worker_info", lambda: None)
    rank0 = ClipStream(shards, 2, 1, 8, 8, seed=0, rank=0, world_size=2)
    monkeypatch.setattr(sora.data, "get_worker_info", lambda: SimpleNamespace(id=0, num_workers=2))
    others = [rank0._my_shards(0)[0]]
    monkeypatch.setattr(sora.data, "get_worker_info", lambda: SimpleNamespace(id=1, num_workers=2))
    others.append(rank0._my_shards(0)[0])
    assert sorted(others + [m[0] for m in mine]) == shards  # every shard read by exactly one reader


def test_clip_sampling_and_resize(shapes_dir):
    sample = next(iter(wds.WebDataset(f"{shapes_dir}/train-000000.tar", shardshuffle=False)))
    meta = json.loads(sample["json"])
    frames = decode_clip(sample["mp4"], num_frames=4, frame_stride=5, rng=None)
    assert frames.shape == (4, meta["height"], meta["width"], 3) and frames.dtype == torch.uint8
    with pytest.raises(ValueError, match="needs 21"):
        decode_clip(sample["mp4"], num_frames=6, frame_stride=4, rng=None)
    wide = torch.zeros(2, 10, 40, 3, dtype=torch.uint8)
    assert resize_crop(wide, 20, 20).shape == (3, 2, 20, 20)  # scale to cover, then crop: no distortion


def test_corrupt_sample_is_skipped_and_logged(tmp_path, shapes_dir, caplog):
    good = next(iter(wds.WebDataset(f"{shapes_dir}/train-000000.tar", shardshuffle=False)))
    with wds.TarWriter(str(tmp_path / "mixed-000000.tar")) as sink:
        sink.write({"__key__": "broken", "mp4": b"not a video at all", "txt": "a red square moving up"})
        sink.write({"__key__": "novideo", "txt": "a red square moving up"})
        sink.write({"__key__": "good", "mp4": good["mp4"], "txt": good["txt"]})
    stream = ClipStream([str(tmp_path / "mixed-000000.tar")], 2, 1, 8, 8, shuffle_buffer=1)
    with caplog.at_level(logging.WARNING, logger="sora.data"):
        first = next(iter(stream))
    assert first["caption"] == good["txt"].decode()
    assert "broken" in caplog.text and "novideo" in caplog.text
