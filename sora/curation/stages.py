"""Each stage as a function of its input, its output manifest and its settings: what is left to do, then the run
(sora/curation/runner.py). data/curate.py calls these; so can a notebook or a test."""

import json
from pathlib import Path

from sora.curation.caption_stage import CaptionArgs, CaptionWorker, check_model_dir
from sora.curation.clip_models import check_clip_dir
from sora.curation.dedup import DedupArgs, DuplicateIndex, Hasher
from sora.curation.export import ExportArgs, Exporter
from sora.curation.filtering import FilterArgs, apply, check_scores, removed_by
from sora.curation.manifest import read_input, read_records
from sora.curation.runner import done_records, pending_clips, pending_sources, run_stage
from sora.curation.scores import ScoreArgs, Scorer, check_models
from sora.curation.split import SplitArgs, Splitter, find_videos
from sora.curation.tasks import group_tasks
from sora.errors import SoraError


def _check_out(out: str, input_path: str) -> None:
    if Path(out).resolve() == Path(input_path).resolve():
        raise SoraError(f"--out={out!r} is the input manifest: each stage writes a manifest of its own")
    if Path(out).is_dir():
        raise SoraError(f"--out={out!r} is a folder: give the manifest's file name (e.g. {Path(out) / 'stage.jsonl'})")


def split(folder: str, out: str, args: SplitArgs, workers: int = 1, device: str = "cpu", engine: str = "local"
          ) -> dict:
    """A folder of videos -> clips between scene cuts."""
    _check_out(out, folder)
    sources = find_videos(folder)
    if not sources:
        raise SoraError(f"{folder!r} holds no video file (looked for .mp4, .webm, .mkv, .mov, .avi, .gif, ...)")
    done = done_records(out, "split")
    todo = pending_sources(sources, done)
    return run_stage("split", Splitter(args), [[(s, None)] for s in todo], out, workers, device, done=done,
                     engine=engine, extra={"videos_found": len(sources), "detector": args.detector.value})


def _clip_stage(stage: str, input_path: str, out: str, worker, workers: int, device: str, engine: str,
                min_clips: int = 1, finish=None, extra: dict | None = None, before=None,
                not_kept_out: str | None = None) -> dict:
    """A stage over the clips of an input manifest, resuming after what `out` (and `not_kept_out`) already hold."""
    _check_out(out, input_path)
    records = read_input(input_path, stage)
    done = done_records(out, stage) + (done_records(not_kept_out, stage) if not_kept_out else [])
    todo, passthrough = pending_clips(records, done)
    if before is not None:
        before(done)
    return run_stage(stage, worker, group_tasks(todo, min_clips), out, workers, device, passthrough=passthrough,
                     finish=finish, done=done, engine=engine, extra=extra, not_kept_out=not_kept_out)


def score(input_path: str, out: str, args: ScoreArgs, workers: int = 1, device: str = "cpu",
          engine: str = "local") -> dict:
    """Motion, sharpness, text coverage and aesthetic scores of each clip."""
    check_models(args)
    return _clip_stage("score", input_path, out, Scorer(args), workers, device, engine,
                       extra={"scores": list(args.scores)})


def dedup(input_path: str, out: str, args: DedupArgs, workers: int = 1, device: str = "cpu",
          engine: str = "local") -> dict:
    """Near-duplicates dropped (the first kept), decided in manifest order in this process."""
    if args.clip_dir:
        check_clip_dir(args.clip_dir)
    index = DuplicateIndex(args)
    return _clip_stage("dedup", input_path, out, Hasher(args), workers, device, engine, finish=index.decide,
                       before=index.remember, extra={"max_distance": args.max_distance})


class _Thresholds:
    """The filter's worker: no model, the thresholds applied to each clip."""

    def __init__(self, args: FilterArgs):
        self.args = args

    def setup(self, device: str) -> None:
        pass

    def run(self, source: str, records: list[dict]) -> list[dict]:
        return apply(records, self.args)


def filter_clips(input_path: str, out: str, args: FilterArgs) -> dict:
    """Thresholds on the scores; the summary says what each threshold removed."""
    _check_out(out, input_path)
    records = read_input(input_path, "filter")
    check_scores(records, args)
    done = done_records(out, "filter")
    todo, passthrough = pending_clips(records, done)
    todo += [r for r in passthrough if not r.get("skipped")]  # an earlier filter's drops are judged again
    passthrough = [r for r in passthrough if r.get("skipped")]
    summary = run_stage("filter", _Thresholds(args), group_tasks(todo), out, passthrough=passthrough, done=done,
                        extra={"min": args.min, "max": args.max})
    summary["removed"] = removed_by(read_records(out, "filter"), args)
    Path(str(out) + ".summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def caption(input_path: str, out: str, args: CaptionArgs, workers: int = 1, device: str = "cpu",
            engine: str = "local", captioner=None) -> dict:
    """A caption for each kept clip; `captioner` (an object with `caption(clips) -> captions`) replaces the model."""
    if captioner is None and not args.model_dir:
        raise SoraError("--model-dir is required: a local image-text-to-text model folder (e.g. Qwen2.5-VL)")
    if captioner is not None and workers > 1:
        raise SoraError("a captioner object runs in this process: use workers=1")
    if captioner is None:
        check_model_dir(args.model_dir)
    return _clip_stage("caption", input_path, out, CaptionWorker(args, captioner), workers, device, engine,
                       min_clips=args.batch_size, extra={"model_dir": args.model_dir})


def export(input_path: str, out: str, args: ExportArgs, workers: int = 1) -> dict:
    """Kept clips cut to files beside `out`, and `out` a manifest data/make_shards.py reads: exported clips only
    (each line has a path); the clips not exported, with their reasons, go to OUT_NAME.not_kept.jsonl."""
    not_kept = str(Path(out).with_suffix("")) + ".not_kept.jsonl"
    return _clip_stage("export", input_path, out, Exporter(args, str(Path(out).parent)), workers, "cpu", "local",
                       not_kept_out=not_kept)
