"""Training on curation scores (data.min_scores): scores travel in each sample's .json through the shard writer's
JSONL manifest, the training stream keeps exactly the samples at or above every minimum and counts the rest by the
score they fall short on, and a sample without a named score stops the run at start in one line."""

import json
import re
from pathlib import Path

import pytest

from sora.data.buckets import BucketSet
from sora.data.preflight import preflight, survey
from sora.data.shard_writer import read_manifest, write_shards
from sora.data.stream import ClipStream, expand_shards, strip_bookkeeping
from sora.errors import SoraError
from tests.conftest import compose_config, shrunk_overrides, train_in_process
from tests.media import moving_square, write_video

N = 12
MINIMA = {"motion": 0.5, "aesthetic": 4.5}


def scores(i: int) -> dict:
    return {"motion": i / 10, "aesthetic": 3.0 + i % 4, "text_coverage": 0.01 * i, "blur": 100.0 - i}


def expected() -> tuple[set, dict]:
    """The clips kept by MINIMA, and the dropped ones counted by the first score (in MINIMA's order) they miss."""
    kept, dropped = set(), {}
    for i in range(N):
        miss = next((name for name, low in MINIMA.items() if scores(i)[name] < low), None)
        if miss is None:
            kept.add(f"clip {i}")
        else:
            dropped[f"min_scores.{miss}"] = dropped.get(f"min_scores.{miss}", 0) + 1
    return kept, dropped


def write_scored(root: Path, lacking: int | None = None) -> Path:
    """N captioned clips through a JSONL manifest (as data/curate.py's export writes one) into 3 shards; clip
    `lacking` has no aesthetic score."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(N):
        path = write_video(root / f"c{i}.mp4", moving_square(8, 32, 32))
        s = scores(i)
        if i == lacking:
            del s["aesthetic"]
        lines.append(json.dumps({"path": str(path), "caption": f"clip {i}", "scores": s}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    write_shards(read_manifest(str(root / "manifest.jsonl")), str(root / "shards"), samples_per_shard=4, workers=1)
    return root / "shards"


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    return write_scored(tmp_path_factory.mktemp("scored"))


def data_cfg(shards: Path, *extra: str):
    return compose_config("train", [f"data.shards={shards}/shard-*.tar", "data.num_workers=0", "data.num_frames=4",
                                    "data.height=32", "data.width=32", "data.batch_size_per_gpu=1",
                                    "data.shuffle_buffer=1", "data.eval_shards=null", *extra]).data


def one_epoch(cfg) -> tuple[list[str], dict]:
    """(captions, skipped and dropped counts) of one epoch of the training stream."""
    captions, counts = [], {}
    for batch in ClipStream(expand_shards(cfg.shards), cfg, BucketSet.from_config(cfg)):
        batch, position, skipped = strip_bookkeeping(batch)
        if position["epoch"] > 0:
            break
        for k, v in skipped.items():
            counts[k] = counts.get(k, 0) + v
        captions += batch["caption"]
    return captions, counts


def test_scores_travel_in_the_samples_json(scored):
    import webdataset as wds

    metas = [json.loads(s["json"]) for s in wds.WebDataset(f"{scored}/shard-{{000000..000002}}.tar",
                                                             shardshuffle=False)]
    assert [m["scores"] for m in metas] == [scores(i) for i in range(N)]


def test_the_stream_keeps_exactly_the_samples_at_or_above_every_minimum(scored):
    kept, dropped = expected()
    assert 0 < len(kept) < N and len(dropped) == 2  # the case drops some of each reason and keeps some
    captions, counts = one_epoch(data_cfg(scored, "data.min_scores={motion:0.5,aesthetic:4.5}"))
    assert sorted(captions) == sorted(kept)
    assert counts == dropped
    everything, none_dropped = one_epoch(data_cfg(scored))
    assert len(everything) == N and none_dropped == {}


def test_a_score_at_its_minimum_is_kept_and_strict_mode_does_not_stop_on_a_drop(scored):
    captions, counts = one_epoch(data_cfg(scored, "data.min_scores={motion:0.6}", "data.strict=true"))
    assert sorted(captions) == sorted(f"clip {i}" for i in range(N) if i / 10 >= 0.6)
    assert counts == {"min_scores.motion": 6}


def test_the_check_before_training_counts_the_dropped_apart(scored):
    cfg = data_cfg(scored, "data.min_scores={motion:0.5,aesthetic:4.5}")
    s = preflight(_plain(cfg))
    kept, dropped = expected()
    assert sum(s.clips.values()) == len(kept) and s.skipped == {}
    assert {f"min_scores.{k}": v for k, v in s.dropped.items()} == dropped
    assert "dropped below data.min_scores: aesthetic=" in s.describe()


def test_a_threshold_no_clip_reaches_stops_the_run_saying_so(scored):
    with pytest.raises(SoraError, match=r"data.min_scores drops every clip read \(motion=12\)"):
        preflight(_plain(data_cfg(scored, "data.min_scores={motion:5}")))


def test_a_sample_without_the_score_stops_the_check_naming_score_and_shard(tmp_path):
    shards = write_scored(tmp_path / "lacking", lacking=5)
    cfg = data_cfg(shards, "data.min_scores={aesthetic:4.5}")
    with pytest.raises(SoraError, match=r"^data.min_scores.aesthetic: shard '.*shard-000001.tar' has a sample "
                                        r"without that score") as e:
        preflight(_plain(cfg))
    assert "\n" not in str(e.value)
    # The loader itself, past what the check reads, skips it as a bad sample (or stops, with data.strict=true).
    captions, counts = one_epoch(cfg)
    assert counts["no_score"] == 1 and "clip 5" not in captions
    with pytest.raises(SoraError, match="no_score: no number at scores.aesthetic"):
        one_epoch(data_cfg(shards, "data.min_scores={aesthetic:4.5}", "data.strict=true"))
    survey(ClipStream(expand_shards(cfg.shards), _plain(data_cfg(shards)), BucketSet.from_config(cfg)))  # unfiltered


def test_a_latent_cache_written_with_min_scores_holds_only_the_kept_clips(scored, shapes_dir, tmp_path):
    from sora.data.latent_cache import write_latent_cache
    from sora.inference.bundle import ModelBundle

    kept, dropped = expected()
    overrides = [o for o in shrunk_overrides(shapes_dir, tmp_path) if not o.startswith("hydra.")]
    cfg = compose_config("train", [*overrides, f"data.shards={scored}/shard-*.tar", "data.eval_shards=null",
                                   "data.frame_stride=1", "data.min_scores={motion:0.5,aesthetic:4.5}"])
    bundle = ModelBundle.build(cfg)
    info = write_latent_cache(cfg, bundle.vae, bundle.text, bundle.geometry, str(tmp_path / "cache"))
    assert info["num_samples"] == len(kept) and info["skipped"] == dropped
    assert info["min_scores"] == MINIMA


def test_min_scores_with_a_latent_cache_is_one_line(scored, tmp_path):
    (tmp_path / "cache").mkdir()
    cfg = _plain(data_cfg(scored, "data.min_scores={motion:0.5}", f"data.latent_cache={tmp_path}/cache"))
    with pytest.raises(SoraError, match="data.min_scores reads each sample's .json scores, which a latent cache"):
        preflight(cfg)


@pytest.mark.parametrize("override, message", [
    ("data.min_scores={motion:abc}", "data.min_scores.motion must be a number, got 'abc'"),
    ("data.min_scores={motion:true}", "data.min_scores.motion must be a number, got True"),
    ("data.min_scores=3", "data.min_scores must be a mapping {NAME: MIN, ...}"),
])
def test_a_bad_min_scores_is_one_line_naming_the_key(override, message):
    from sora.config import check_train_config

    with pytest.raises(SoraError, match=re.escape(message)):
        check_train_config(compose_config("train", [override]))


def test_an_empty_score_name_is_one_line():
    from sora.data.data_args import DataArgs

    with pytest.raises(SoraError, match="min_scores: a score name is empty"):
        DataArgs(min_scores={" ": 1.0})


def test_a_run_reports_what_it_dropped_and_a_missing_score_ends_it_in_one_line(scored, shapes_dir, tmp_path):
    kept, dropped = expected()
    run = tmp_path / "run"
    base = [*shrunk_overrides(shapes_dir, run), f"data.shards={scored}/shard-*.tar", "data.eval_shards=null",
            "data.eval_prompts=null", "data.train_prompts=null", "train.final_samples=false",
            "train.sample_every_n_steps=0", "train.max_steps=2", "data.batch_size_per_gpu=2", "data.frame_stride=1"]
    proc = train_in_process(*base, "data.min_scores={motion:0.5,aesthetic:4.5}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert {k: v for k, v in results["skipped_samples"].items() if k.startswith("min_scores.")}.keys() == \
        dropped.keys()
    said = re.search(r"data: dropped (\d+) sample\(s\) below data.min_scores on rank 0: (.*)", proc.stderr)
    assert said and "aesthetic=" in said.group(2) and "motion=" in said.group(2)
    assert "reader 0 dropped 1 sample(s) so far below data.min_scores." in proc.stderr
    skip_file = run / "skipped_samples.jsonl"  # the bad samples' file: the dropped are not bad
    assert not skip_file.exists() or "min_scores" not in skip_file.read_text()

    dry = [o.replace(str(run), str(tmp_path / "dry")) for o in base]
    proc = train_in_process(*dry, "data.min_scores={motion:0.5,aesthetic:4.5}", "train.dry_run=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "dry" / "dry_run.json").read_text())
    assert report["skipped"] == dropped and sum(r["clips"] for r in report["buckets"]) == len(kept)

    lacking = write_scored(tmp_path / "lacking", lacking=0)
    proc = train_in_process(*[o.replace(str(scored), str(lacking)) for o in base], "data.min_scores={aesthetic:4.5}")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "data.min_scores.aesthetic: shard" in errors[0] and "shard-000000.tar" in errors[0]


def _plain(cfg):
    """The composed data node as the DataArgs a run hands preflight."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(cfg)


def test_held_out_clips_are_read_unfiltered(shapes_dir, tmp_path):
    """The moving-shapes held-out shards carry no scores: with data.min_scores set, evaluation still reads them."""
    from sora.eval.modes import held_out_clips
    from sora.eval.validation import eval_data_config

    overrides = [o for o in shrunk_overrides(shapes_dir, tmp_path) if not o.startswith("hydra.")]
    data = compose_config("train", [*overrides, "data.min_scores={motion:0.5}"]).data
    assert eval_data_config(data).min_scores is None
    clips, captions = held_out_clips(data, f"{shapes_dir}/test-*.tar", 2, 4)
    assert clips.shape[0] == 2 and len(captions) == 2
