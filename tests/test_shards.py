"""The shard writer on a deliberately broken folder and on manifests; what it writes trains."""

import json

import pytest
import webdataset as wds

from sora.data.buckets import BucketSet
from sora.data.shard_writer import Filters, read_manifest, scan_folder, write_shards
from sora.data.stream import ClipStream, expand_shards, strip_bookkeeping
from sora.errors import SoraError
from tests.conftest import compose_config, run_entry
from tests.media import moving_square, write_broken_folder, write_video


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    return root, write_broken_folder(root)


def test_broken_folder_is_written_skipped_and_counted_by_reason(broken, tmp_path):
    root, expected = broken
    sources, skipped = scan_folder(str(root))
    summary = write_shards(sources, str(tmp_path / "out"), samples_per_shard=4, workers=2,
                           filters=Filters(min_frames=4), skipped=skipped)
    assert summary["written"] == expected["written"]
    assert summary["skipped"] == expected["skipped"]
    assert summary["handled"] == expected["handled"]
    assert summary["shards"] == 4  # 15 samples, 4 a shard
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    metas = {json.loads(s["json"])["source"].split("/")[-1]: s
             for s in wds.WebDataset(f"{tmp_path}/out/shard-{{000000..000003}}.tar", shardshuffle=False)}
    assert "mkv" in metas["webm_named.mp4"]  # stored under what it really is
    rotated = json.loads(metas["rotated.mp4"]["json"])
    assert rotated["rotation"] == 90 and (rotated["height"], rotated["width"]) == (48, 32)
    assert json.loads(metas["vfr.mp4"]["json"])["vfr"] is True
    assert metas["good.mp4"]["txt"].decode() == "a clip called good"


def test_written_shards_load_in_buckets_rotated_clips_upright(broken, tmp_path):
    root, _ = broken
    sources, skipped = scan_folder(str(root))
    write_shards(sources, str(tmp_path / "out"), workers=1, filters=Filters(min_frames=4), skipped=skipped)
    cfg = compose_config("train", [f"data.shards={tmp_path}/out/shard-*.tar", "data.num_workers=0",
                                   "data.buckets=[[1,32,48],[1,32,32],[4,32,48],[4,48,32],[4,32,32]]",
                                   "data.frame_stride=2", "data.batch_size_per_gpu=1", "data.shuffle_buffer=1"]).data
    seen, skipped_total = [], 0
    stream = ClipStream(expand_shards(cfg.shards), cfg, BucketSet.from_config(cfg))
    for batch in stream:
        batch, position, skipped = strip_bookkeeping(batch)
        if position["epoch"] > 0:
            break
        skipped_total += sum(skipped.values())
        seen.append((batch["caption"][0].split()[-1], tuple(batch["video"].shape[2:])))
    assert skipped_total == 0 and len(seen) == 15
    shapes = {}
    for name, shape in seen:
        shapes.setdefault(name, set()).add(shape)
    assert shapes["rotated"] == {(4, 48, 32)}  # portrait after applying the display rotation
    assert shapes["good"] == {(4, 32, 48)} and shapes["vfr"] == {(4, 32, 48)} and shapes["image"] == {(1, 32, 48)}
    assert shapes["gray"] == {(1, 32, 32), (4, 32, 32)}


def test_manifests_csv_and_jsonl(tmp_path):
    write_video(tmp_path / "a.mp4", moving_square(8, 32, 32))
    (tmp_path / "m.csv").write_text("path,caption,score\na.mp4,a square,0.9\nmissing.mp4,gone,0.1\n")
    record = {"path": str(tmp_path / "a.mp4"), "caption": "a square", "src": "x"}
    (tmp_path / "m.jsonl").write_text(json.dumps(record) + "\n")
    for name in ("m.csv", "m.jsonl"):
        summary = write_shards(read_manifest(str(tmp_path / name)), str(tmp_path / name.replace(".", "_")), workers=1)
        assert summary["written"] == 1
    assert summary["skipped"] == {}
    again = write_shards(read_manifest(str(tmp_path / "m.csv")), str(tmp_path / "again"), workers=1)
    assert again["skipped"] == {"unreadable": 1}
    first_shard = wds.WebDataset(str(tmp_path / "m_csv" / "shard-000000.tar"), shardshuffle=False)
    meta = json.loads(next(iter(first_shard))["json"])
    assert meta["score"] == "0.9"
    (tmp_path / "bad.csv").write_text("file,caption\na.mp4,x\n")
    with pytest.raises(SoraError, match="has no 'path'"):
        read_manifest(str(tmp_path / "bad.csv"))


def test_cli_prints_the_summary_and_clear_errors(broken, tmp_path):
    root, expected = broken
    done = run_entry("data/make_shards.py", str(root), "--out", str(tmp_path / "s"), "--workers", "2",
                     "--min-frames", "4")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["written"] == expected["written"] and summary["skipped_total"] == 9
    assert "skipping" in done.stderr and "zero.mp4: empty_file" in done.stderr
    again = run_entry("data/make_shards.py", str(root), "--out", str(tmp_path / "s"))
    assert again.returncode == 2 and again.stderr.startswith("error:") and "already holds" in again.stderr
    missing = run_entry("data/make_shards.py", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "t"))
    assert missing.returncode == 2 and "nope.csv" in missing.stderr and "Traceback" not in missing.stderr


def test_without_decord_pyav_decodes_the_same_frames(tmp_path, monkeypatch):
    """decord has no wheels for macOS or aarch64: there PyAV decodes, and must pick the very same frames."""
    import random

    import sora.data.decode as decode

    if not decode.HAVE_DECORD:
        pytest.skip("decord is not installed here: nothing to compare against")
    data = write_video(tmp_path / "clip.mp4", moving_square(24, 64, 96)).read_bytes()
    with_decord = decode.decode_clip(data, "mp4", 6, 3, random.Random(7))
    monkeypatch.setattr(decode, "HAVE_DECORD", False)
    with_pyav = decode.decode_clip(data, "mp4", 6, 3, random.Random(7))
    assert with_pyav.shape == with_decord.shape == (6, 64, 96, 3)
    assert (with_pyav.int() - with_decord.int()).abs().max() <= 1  # the same frames, as both decode with FFmpeg
