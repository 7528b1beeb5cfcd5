"""Write webdataset shards from a folder of videos/images with sidecar captions, or from a CSV/JSONL manifest.

    python data/make_shards.py my_videos/ --out shards/                 # my_videos/**/clip.mp4 + clip.txt
    python data/make_shards.py manifest.csv --out shards/ --workers 8   # columns: path, caption, [extra...]
    python train.py data.shards='shards/shard-*.tar' ...

Videos: mp4 webm mkv avi mov gif; images (1-frame samples): jpg png webp. Unusable files are skipped, counted
by reason and listed in the log; OUT/summary.json holds the counts. A bad option or input, or an input with no
usable sample, ends in one line `error: ...` (exit status 2).
"""

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from sora.data.shard_writer import (
    Filters,
    check_output_dir,
    read_manifest,
    scan_folder,
    write_shards,
)
from sora.errors import ArgumentParser, SoraError, exit_on_user_error


def check_arguments(a) -> None:
    """The options this script passes on as they are: refused here, naming the option, before anything is read."""
    if a.samples_per_shard < 1:
        raise SoraError(f"--samples-per-shard must be >= 1, got {a.samples_per_shard}")
    if not a.max_shard_mb > 0:
        raise SoraError(f"--max-shard-mb must be > 0, got {a.max_shard_mb}")
    if a.workers < 1:
        raise SoraError(f"--workers must be >= 1, got {a.workers}")
    if not a.prefix or Path(a.prefix).name != a.prefix:
        raise SoraError(f"--prefix={a.prefix!r} must be a file name's start, with no folder in it")
    if not Path(a.input).exists():
        raise SoraError(f"{a.input!r} does not exist: give a folder of media with NAME.txt captions, or a .csv / "
                        ".jsonl manifest")
    out = Path(a.out).absolute()
    there = next(q for q in (out, *out.parents) if q.exists())  # the folder itself, or where it would be made
    if not there.is_dir():
        raise SoraError(f"--out={a.out!r} cannot be a folder: {there} is a file")


@exit_on_user_error
def main(argv=None) -> int:
    d = Filters()
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="a folder (media + NAME.txt captions) or a .csv / .jsonl manifest")
    p.add_argument("--out", required=True, help="output folder for PREFIX-NNNNNN.tar and summary.json")
    p.add_argument("--prefix", default="shard")
    p.add_argument("--samples-per-shard", type=int, default=1000)
    p.add_argument("--max-shard-mb", type=float, default=1024)
    p.add_argument("--workers", type=int, default=4, help="probing processes")
    p.add_argument("--min-frames", type=int, default=d.min_frames)
    p.add_argument("--min-duration", type=float, default=d.min_duration_s, help="seconds")
    p.add_argument("--min-side", type=int, default=d.min_side_px, help="pixels")
    p.add_argument("--max-aspect", type=float, default=d.max_aspect, help="longer side / shorter side")
    p.add_argument("--no-images", action="store_true", help="skip still images")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        check_arguments(a)
        check_output_dir(a.out, a.prefix)
        if Path(a.input).is_dir():
            sources, skipped = scan_folder(a.input)
        else:
            sources, skipped = read_manifest(a.input), None
        if not sources:
            found = f" (skipped: {dict(skipped)})" if skipped else ""
            raise SoraError(f"{a.input!r} lists no video or image file{found}: nothing to write")
        flt = Filters(a.min_frames, a.min_duration, a.min_side, a.max_aspect, not a.no_images)
        summary = write_shards(sources, a.out, a.samples_per_shard, a.max_shard_mb, a.workers, flt, a.prefix, skipped)
        if not summary["written"]:  # every file was skipped: the log names each, with its reason
            for empty in Path(a.out).glob(f"{a.prefix}-*.tar"):  # none was there before (check_output_dir)
                empty.unlink()  # an empty shard would only fail training later, and block a rerun here
            raise SoraError(f"no usable sample in {a.input!r}: all {summary['skipped_total']} skipped "
                            f"({summary['skipped']}; the log lists each), so no shard was written")
    except SoraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
