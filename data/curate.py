"""Curate raw footage into captioned clips for data/make_shards.py, one resumable stage at a time.

    python data/curate.py split  raw_videos/    --out work/split.jsonl   --workers 8
    python data/curate.py score  work/split.jsonl --out work/score.jsonl --workers 8 [--clip-dir D --aesthetic-mlp F]
    python data/curate.py dedup  work/score.jsonl --out work/dedup.jsonl
    python data/curate.py filter work/dedup.jsonl --out work/filter.jsonl --min motion=0.3 --max text=0.02
    python data/curate.py caption work/filter.jsonl --out work/caption.jsonl --model-dir models/Qwen2.5-VL-7B-Instruct
    python data/curate.py export work/caption.jsonl --out clips/manifest.jsonl
    python data/curate.py report work/*.jsonl --out work/report/
    python data/make_shards.py clips/manifest.jsonl --out shards/

Each stage appends to its --out manifest (one JSON line per clip, keyed by source, start and end frame) and reruns
resume after the last clip written. A bad option or input ends in one line `error: ...` (exit status 2); an
unusable video is skipped with its reason, counted in the stage's summary (OUT.summary.json) and the report.
docs/CURATION.md describes each stage, its thresholds and where each model's weights go.
"""

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from sora.errors import ArgumentParser, SoraError, exit_on_user_error


def _common(p, workers=True, models=True) -> None:
    p.add_argument("--out", required=True, help="the stage's manifest (JSONL); an existing one is resumed")
    if workers:
        p.add_argument("--workers", type=int, default=1, help="processes (Ray actors with --engine ray)")
        p.add_argument("--engine", default="local", choices=["local", "ray"],
                       help="local: a process pool on this machine; ray: Ray Data over a cluster")
    if models:
        p.add_argument("--device", default="cpu", help="cpu, cuda (the workers spread over the GPUs) or cuda:N")


def parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    s = sub.add_parser("split", help="a folder of videos -> clips between scene cuts")
    s.add_argument("input", help="a folder of videos (searched recursively)")
    _common(s)
    s.add_argument("--detector", default="content", choices=["content", "adaptive", "transnetv2"])
    s.add_argument("--threshold", type=float, default=None, help="default 27 (content), 3 (adaptive), 0.5 (transnetv2)")
    s.add_argument("--min-seconds", type=float, default=2.0)
    s.add_argument("--max-seconds", type=float, default=10.0)
    s.add_argument("--trim-frames", type=int, default=2, help="frames dropped on each side of a cut")

    s = sub.add_parser("score", help="motion, sharpness, text coverage, aesthetic score of each clip")
    s.add_argument("input", help="a split (or dedup) manifest")
    _common(s)
    s.add_argument("--scores", default=None, help="comma-separated, of motion,sharpness,text,aesthetic (default: "
                   "motion,sharpness,text, and aesthetic when --clip-dir is given)")
    s.add_argument("--frames", type=int, default=4, help="frames sampled per clip")
    s.add_argument("--max-side", type=int, default=640)
    s.add_argument("--clip-dir", default=None, help="a transformers CLIPModel folder (aesthetic)")
    s.add_argument("--aesthetic-mlp", default=None, help="LAION's aesthetic MLP weights (.pth or .safetensors)")

    s = sub.add_parser("dedup", help="drop near-duplicate clips (perceptual hashes; optionally CLIP)")
    s.add_argument("input", help="a split, score or filter manifest")
    _common(s)
    s.add_argument("--frames", type=int, default=3, help="key frames hashed per clip")
    s.add_argument("--max-distance", type=float, default=8.0, help="mean Hamming distance (of 64 bits) of duplicates")
    s.add_argument("--clip-dir", default=None, help="also compare CLIP embeddings (a CLIPModel folder)")
    s.add_argument("--min-cosine", type=float, default=0.95, help="CLIP cosine similarity of duplicates")

    s = sub.add_parser("filter", help="thresholds on the scores")
    s.add_argument("input", help="a score or dedup manifest")
    _common(s, workers=False, models=False)
    s.add_argument("--min", action="append", metavar="SCORE=X", help="drop clips whose SCORE is below X (repeat)")
    s.add_argument("--max", action="append", metavar="SCORE=X", help="drop clips whose SCORE is above X (repeat)")

    s = sub.add_parser("caption", help="a detailed caption per clip by a local vision-language model")
    s.add_argument("input", help="a filter, dedup, score or split manifest")
    _common(s)
    s.add_argument("--model-dir", required=True, help="a transformers image-text-to-text model folder")
    s.add_argument("--frames", type=int, default=4, help="frames per clip given to the model")
    s.add_argument("--batch-size", type=int, default=8)

    s = sub.add_parser("export", help="kept, captioned clips cut to files + a manifest for data/make_shards.py")
    s.add_argument("input", help="a caption manifest (or any, with --no-caption)")
    _common(s, models=False)
    s.add_argument("--crf", type=int, default=18, help="H.264 quality of the cut clips")
    s.add_argument("--no-caption", action="store_true", help="export clips with no caption (make_shards skips them)")

    s = sub.add_parser("report", help="counts, score histograms and a contact sheet of manifests")
    s.add_argument("manifests", nargs="+", help="the manifests of one run, any stages")
    s.add_argument("--out", required=True, help="a folder for report.json, report.md and the PNGs")
    return p


def check_common(a) -> None:
    if getattr(a, "workers", 1) < 1:
        raise SoraError(f"--workers must be >= 1, got {a.workers}")
    if a.stage != "report" and not Path(a.input).exists():
        raise SoraError(f"{a.input!r} does not exist")


def run(a) -> dict:
    from sora.curation import stages

    if a.stage == "report":
        from sora.curation.report import write_report

        return write_report(a.manifests, a.out)
    common = {"workers": a.workers, "engine": a.engine} if hasattr(a, "workers") else {}
    if hasattr(a, "device"):
        common["device"] = a.device
    if a.stage == "split":
        from sora.curation.split import SplitArgs

        args = SplitArgs(a.detector, a.threshold, a.min_seconds, a.max_seconds, a.trim_frames)
        return stages.split(a.input, a.out, args, **common)
    if a.stage == "score":
        from sora.curation.scores import ScoreArgs

        names = a.scores.split(",") if a.scores else ["motion", "sharpness", "text"] + \
            (["aesthetic"] if a.clip_dir else [])
        args = ScoreArgs([n.strip() for n in names if n.strip()], a.frames, a.max_side, a.clip_dir, a.aesthetic_mlp)
        return stages.score(a.input, a.out, args, **common)
    if a.stage == "dedup":
        from sora.curation.dedup import DedupArgs

        return stages.dedup(a.input, a.out, DedupArgs(a.frames, a.max_distance, a.clip_dir, a.min_cosine), **common)
    if a.stage == "filter":
        from sora.curation.filtering import FilterArgs, parse_thresholds

        args = FilterArgs(parse_thresholds(a.min, "--min"), parse_thresholds(a.max, "--max"))
        return stages.filter_clips(a.input, a.out, args)
    if a.stage == "caption":
        from sora.curation.caption_stage import CaptionArgs

        return stages.caption(a.input, a.out, CaptionArgs(a.model_dir, a.frames, a.batch_size), **common)
    from sora.curation.export import ExportArgs

    common.pop("engine", None)
    return stages.export(a.input, a.out, ExportArgs(a.crf, not a.no_caption), **common)


@exit_on_user_error
def main(argv=None) -> int:
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    check_common(a)
    print(json.dumps(run(a), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
