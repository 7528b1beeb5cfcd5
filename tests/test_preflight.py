"""Before the first step: every path a run reads resolved and checked (B), every bucket's clips counted from the
shards' metadata (C), and a DataLoader worker's error as the user's one line (D)."""

import dataclasses
import json
import logging
import os
import re
from collections import Counter

import pytest
import torch
import webdataset as wds

from sora.data.buckets import BucketSet
from sora.data.data_args import DataArgs, resolve_data_paths
from sora.data.decode import BadSample
from sora.data.moving_shapes import MovingShapesArgs
from sora.data.preflight import preflight, read_samples, survey
from sora.data.stream import ClipStream, expand_shards, raw_samples
from sora.errors import SoraError
from tests.conftest import captioned_shards, eval_in_process, shrunk_overrides, train_in_process


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def one_line_error(proc, *needles: str) -> str:
    """The run stopped with status 2 and exactly one `error:` line holding every needle, and no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Caught SoraError" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def own_shards(tmp_path_factory):
    """A user's own dataset, written by the project's shard writer: 9- to 12-frame square and wide videos and
    square images, captioned."""
    from tests.media import moving_square, write_image, write_video

    def media(src):
        for i in range(4):
            write_video(src / f"sq{i}.mp4", moving_square(9 + i, 32, 32))
            write_video(src / f"wide{i}.mp4", moving_square(9 + i, 32, 48))
            write_image(src / f"img{i}.png", 32, 32)

    return captioned_shards(tmp_path_factory, "own", media, samples_per_shard=4)


# ---------------------------------------------------------------------------------------------------------------
# B: paths follow data.shards' dataset, resolved and checked at start
# ---------------------------------------------------------------------------------------------------------------


def test_auto_paths_follow_the_dataset_of_data_shards(shapes_dir, own_shards, caplog):
    builtin = resolve_data_paths(DataArgs(shards=f"{shapes_dir}/train-*.tar",
                                          moving_shapes=MovingShapesArgs(root=str(shapes_dir), clips_per_combo=2,
                                                                         clips_per_shard=32)))
    assert builtin.eval_shards == f"{shapes_dir}/test-*.tar"
    assert builtin.eval_prompts == f"{shapes_dir}/heldout_prompts.txt"
    assert builtin.train_prompts == f"{shapes_dir}/train_prompts.txt"
    with caplog.at_level(logging.INFO, logger="sora.data.data_args"):
        own = resolve_data_paths(DataArgs(shards=f"{own_shards}/shard-*.tar"))  # data.moving_shapes still set
    assert own.eval_shards is None and own.eval_prompts is None and own.train_prompts is None
    notes = [r.getMessage() for r in caplog.records if "not the built-in dataset's" in r.getMessage()]
    assert len(notes) == 1 and "data.eval_shards, data.eval_prompts, data.train_prompts" in notes[0]
    kept = resolve_data_paths(DataArgs(shards=f"{shapes_dir}/train-*.tar", eval_shards=None, eval_prompts=None,
                                       moving_shapes=MovingShapesArgs(root=str(shapes_dir), clips_per_combo=2,
                                                                      clips_per_shard=32)))
    assert kept.eval_shards is None and kept.eval_prompts is None  # null is off, also on the built-in dataset


@pytest.mark.parametrize("key, value, message", [
    ("shards", "{tmp}/none-*.tar", "data.shards='{tmp}/none-*.tar' matches no file"),
    ("eval_shards", "{tmp}/none-*.tar", "data.eval_shards='{tmp}/none-*.tar' matches no file"),
    ("eval_shards", "{tmp}/bad-000000.tar", "shard '{tmp}/bad-000000.tar' is not a readable tar file"),
    ("latent_cache", "{tmp}/nocache", "data.latent_cache='{tmp}/nocache' is not a directory"),
])
def test_every_path_is_checked_naming_its_key(own_shards, tmp_path, key, value, message):
    (tmp_path / "bad-000000.tar").write_bytes(b"\x00garbage" * 10)
    data = dataclasses.replace(DataArgs(shards=f"{own_shards}/shard-*.tar"), **{key: value.format(tmp=tmp_path)})
    with pytest.raises(SoraError, match=re.escape(message.format(tmp=tmp_path))):
        resolve_data_paths(data)


def test_vae_on_own_shards_with_the_default_paths_trains_and_writes_results(own_shards, tmp_path, monkeypatch):
    """Once: every step trained, then `error: data.shards='data/moving_shapes/test-*.tar' matches no file` at the
    end-of-run reconstruction (the held-out default pointed at the built-in dataset), exit 2, no results.json."""
    monkeypatch.chdir(tmp_path)  # no built-in dataset here: nothing may point at one
    run = tmp_path / "run"
    proc = train_in_process(
        f"hydra.run.dir={run}", "task=vae", f"data.shards={own_shards}/shard-*.tar",
        "data.buckets=[[9,32,32],[9,32,48],[1,32,32]]", "data.frame_stride=1", "data.batch_size_per_gpu=2",
        "data.num_workers=0", "data.shuffle_buffer=4", "vae.latent_channels=4", "vae.base_channels=8",
        "vae.channel_mult=[1,1,2,2]", "train.max_steps=1", "train.max_minutes=null", "train.num_threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 1 and "reconstruction_psnr_db" in results  # reconstructed from data.shards
    assert "not the built-in dataset's" in proc.stderr
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["sora_config"]["data"]
    assert saved["eval_shards"] is None and saved["eval_prompts"] is None  # what the run read, not `auto`


def test_a_missing_held_out_pattern_stops_before_the_first_step(shapes_dir, tmp_path):
    proc = train_in_process(*shrunk_overrides(shapes_dir, tmp_path), f"data.eval_shards={tmp_path}/none-*.tar")
    one_line_error(proc, f"data.eval_shards='{tmp_path}/none-*.tar' matches no file")
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_checkpoints_record_resolved_paths_and_old_ones_still_evaluate(shapes_dir, tmp_path, monkeypatch):
    """`auto` is resolved before the config is stored; a checkpoint written before `auto` existed holds the old
    default string (data/moving_shapes/test-*.tar, relative to where it ran) and `python -m sora.eval` reads it."""
    run = tmp_path / "run"
    proc = train_in_process(*shrunk_overrides(shapes_dir, run), "data.eval_shards=auto", "data.eval_prompts=auto",
                            "data.train_prompts=auto", "train.max_steps=1", "train.final_samples=false",
                            "train.sample_every_n_steps=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["sora_config"]["data"]["eval_shards"] == f"{shapes_dir}/test-*.tar"
    assert ckpt["sora_config"]["data"]["eval_prompts"] == f"{shapes_dir}/heldout_prompts.txt"
    old = tmp_path / "old"
    (old / "data").mkdir(parents=True)
    os.symlink(shapes_dir, old / "data" / "moving_shapes")
    for key, name in (("eval_shards", "test-*.tar"), ("eval_prompts", "heldout_prompts.txt"),
                      ("train_prompts", "train_prompts.txt")):
        ckpt["sora_config"]["data"][key] = f"data/moving_shapes/{name}"
    torch.save(ckpt, old / "old.ckpt")
    monkeypatch.chdir(old)
    proc = eval_in_process(f"ckpt={old}/old.ckpt", f"out={old}/eval.json", "device=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((old / "eval.json").read_text())
    assert result["val"]["eval_shards"] == "data/moving_shapes/test-*.tar" and result["val"]["num_clips"] > 0


# ---------------------------------------------------------------------------------------------------------------
# C: buckets no clip can fill, found from the metadata at start
# ---------------------------------------------------------------------------------------------------------------


def test_a_bucket_no_clip_can_fill_stops_before_the_first_step(shapes_dir, tmp_path):
    """Once: one warning per clip, then `error: Caught SoraError in DataLoader worker process 0.` and a traceback.
    The fixture's clips have 16 frames; 9 frames at stride 2 need 17."""
    proc = train_in_process(*shrunk_overrides(shapes_dir, tmp_path), "data.num_frames=9", "data.frame_stride=2",
                            "dit.patch_size=[1,8,8]", "data.num_workers=1", "train.max_steps=1")
    line = one_line_error(proc, "data.num_frames, data.height, data.width: bucket [9, 16, 16] (frames, height, width) "
                                "receives no clip", "clips have 16 frames at data.frame_stride=2; the bucket needs 17")
    assert "skipped" not in proc.stderr.replace(line, "")  # no per-clip lines, no summaries
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "run.json").exists()


def _data(shards: str, **kw) -> DataArgs:
    return DataArgs(shards=shards, moving_shapes=None, eval_shards=None, eval_prompts=None, train_prompts=None, **kw)


def _loader_counts(stream: ClipStream) -> tuple[Counter, Counter]:
    """What the loader's own reading of every sample (all bytes) assigns."""
    clips, skipped = Counter(), Counter()
    for raw in raw_samples(stream.shards):
        try:
            clips[stream.locate(raw)[3]] += 1
        except BadSample as e:
            skipped[e.reason] += 1
    return clips, skipped


@pytest.mark.parametrize("overrides", [
    {},
    {"frame_stride": 3},  # the 8-frame clips are too short for 4 frames at stride 3 (10 needed)
    {"min_side_px": 40},
    {"max_aspect": 1.2},
    {"buckets": [[4, 32, 32], [8, 32, 48], [1, 32, 32]]},  # the wide images: no 1-frame bucket near their aspect
])
def test_survey_from_metadata_agrees_with_the_loader(mixed_shards, overrides):
    data = _data(f"{mixed_shards}/shard-*.tar", **{"num_frames": 4, "buckets": [[4, 32, 32], [4, 32, 48],
                                                                                [1, 32, 32], [1, 32, 48]], **overrides})
    stream = ClipStream(expand_shards(data.shards), data, BucketSet.from_config(data))
    s = survey(stream)
    assert s.complete and s.unmeasured == 0 and s.samples == 24
    assert (s.clips, s.skipped) == _loader_counts(stream)


def test_survey_reads_metadata_not_media(mixed_shards):
    path = expand_shards(f"{mixed_shards}/shard-*.tar")[0]
    samples = list(read_samples(path))
    full = list(raw_samples([path]))
    assert [s["__key__"] for s in samples] == [r["__key__"] for r in full]
    for small, raw in zip(samples, full):
        assert small["json"] == raw["json"] and small["txt"] == raw["txt"]
        media = [k for k in small if k not in ("json", "txt", "__key__", "__url__")]
        assert len(media) == 1 and small[media[0]] is None and raw[media[0]]  # present, not read


def test_each_empty_bucket_is_explained_by_what_the_data_has(mixed_shards, own_shards):
    mixed = f"{mixed_shards}/shard-*.tar"
    cases = [  # (data, the bucket named, why)
        (_data(mixed, num_frames=4, buckets=[[4, 32, 32], [8, 32, 48]], frame_stride=2),
         "[8, 32, 48]", "clips have 8 frames at data.frame_stride=2; the bucket needs 15"),
        (_data(f"{own_shards}/shard-*.tar", buckets=[[9, 32, 32], [1, 32, 32], [1, 32, 48]], frame_stride=1),
         "[1, 32, 48]", "its 4 image(s) go to buckets nearer their aspect ratio and size"),
        (_data(mixed, buckets=[[4, 32, 32], [2, 32, 32]], frame_stride=1),
         "[2, 32, 32]", "the 12 clip(s) long enough for it go to buckets nearer their aspect ratio, or longer ones"),
        (_data(mixed, num_frames=4, min_side_px=40), "[4, 32, 32]", "skipped: too_small=24"),
        (_data(f"{own_shards}/shard-*.tar", buckets=[[9, 32, 32], [13, 32, 32]], frame_stride=1),
         "[13, 32, 32]", "the longest clip has 12 frames at data.frame_stride=1; the bucket needs 13"),
    ]
    for data, bucket, why in cases:
        with pytest.raises(SoraError) as e:
            preflight(data)
        assert f": bucket {bucket} (frames, height, width) receives no clip from data.shards=" in str(e.value)
        assert why in str(e.value) and "\n" not in str(e.value)


def test_a_partial_read_or_missing_metadata_warns_instead(mixed_shards, shapes_dir, tmp_path, monkeypatch, caplog):
    import sora.data.preflight

    data = _data(f"{mixed_shards}/shard-*.tar", num_frames=4, buckets=[[4, 32, 32], [8, 32, 48]], frame_stride=2)
    monkeypatch.setattr(sora.data.preflight, "SAMPLES_PER_SHARD", 2)  # a rare long clip may sit in the rest
    with caplog.at_level(logging.INFO, logger="sora.data.preflight"):
        s = preflight(data)
    assert not s.complete and s.samples == 6
    assert "receives no clip" in caplog.text and "not certain (part of the data was read)" in caplog.text
    with pytest.raises(SoraError, match="receives no clip"):  # nothing at all for any bucket: a stop either way
        preflight(dataclasses.replace(data, min_side_px=40))
    bare = tmp_path / "bare-000000.tar"  # clips without .json metadata: one note, no check
    with wds.TarWriter(str(bare)) as sink:
        for raw in raw_samples([f"{shapes_dir}/train-000000.tar"]):
            sink.write({"__key__": raw["__key__"], "mp4": raw["mp4"], "txt": raw["txt"]})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sora.data.preflight"):
        s = preflight(_data(str(bare), num_frames=9, frame_stride=2))  # could not be filled: not known here
    assert s.unmeasured == s.samples > 0 and "carry no .json metadata" in caplog.text


def test_strict_mode_and_held_out_shards_are_checked_at_start(mixed_shards, shapes_dir, tmp_path):
    path = tmp_path / "nocap-000000.tar"
    good = next(iter(raw_samples([f"{shapes_dir}/train-000000.tar"])))
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "fine", "mp4": good["mp4"], "txt": good["txt"], "json": good["json"]})
        sink.write({"__key__": "nocaption", "mp4": good["mp4"], "json": good["json"]})
    with pytest.raises(SoraError, match=re.escape(f"{path}:nocaption: no_caption: missing or empty .txt (data.strict")):
        preflight(_data(str(path), num_frames=4, strict=True))
    preflight(_data(str(path), num_frames=4))  # not strict: skipped, counted
    held_out = f"{mixed_shards}/shard-*.tar"  # 8-frame clips; training's have 16, and 5 frames at stride 2 need 9
    with pytest.raises(SoraError, match=re.escape(f"receives no clip from data.eval_shards='{held_out}': clips have 8 "
                                                  "frames at data.frame_stride=2; the bucket needs 9")):
        preflight(dataclasses.replace(_data(f"{shapes_dir}/train-*.tar", num_frames=5), eval_shards=held_out))


# ---------------------------------------------------------------------------------------------------------------
# D: a DataLoader worker's SoraError is the user's one line
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [True, False])
def test_an_error_in_a_loader_worker_is_one_line(shapes_dir, tmp_path, strict):
    """Clips whose metadata is fine and whose media is not: found only when a worker decodes them. Once:
    `error: Caught SoraError in DataLoader worker process 0.` followed by the worker's traceback."""
    good = next(iter(raw_samples([f"{shapes_dir}/train-000000.tar"])))
    with wds.TarWriter(str(tmp_path / "broken-000000.tar")) as sink:
        for i in range(4):
            sink.write({"__key__": f"bad{i}", "mp4": b"not a video" * 10, "txt": good["txt"], "json": good["json"]})
    proc = train_in_process(*shrunk_overrides(shapes_dir, tmp_path / "run"), f"data.shards={tmp_path}/broken-*.tar",
                            f"data.strict={str(strict).lower()}", "data.num_workers=1", "train.max_steps=1")
    if strict:
        one_line_error(proc, "broken-000000.tar:bad", ": undecodable: ",
                       "(data.strict=true stops at the first bad sample)")
    else:
        one_line_error(proc, "found no usable sample in 1 shard(s)", "undecodable")
        records = [json.loads(line) for line in (tmp_path / "run" / "skipped_samples.jsonl").read_text().splitlines()]
        assert sorted(r["where"].rsplit(":", 1)[1] for r in records) == ["bad0", "bad1", "bad2", "bad3"]
