"""Write webdataset shards from a folder of videos/images with sidecar captions, or from a CSV/JSONL manifest.

    python data/make_shards.py my_videos/ --out shards/                 # my_videos/**/clip.mp4 + clip.txt
    python data/make_shards.py manifest.csv --out shards/ --workers 8   # columns: path, caption, [extra...]
    python train.py data.shards='shards/shard-*.tar' ...

Videos: mp4 webm mkv avi mov gif; images (1-frame samples): jpg png webp. Unusable files are skipped, counted
by reason and listed in the log; OUT/summary.json holds the counts.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from sora.errors import SoraError  # noqa: E402
from sora.data.shard_writer import Filters, check_output_dir, read_manifest, scan_folder, write_shards  # noqa: E402


def main(argv=None) -> int:
    d = Filters()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
        check_output_dir(a.out, a.prefix)
        if Path(a.input).is_dir():
            sources, skipped = scan_folder(a.input)
        else:
            sources, skipped = read_manifest(a.input), None
        flt = Filters(a.min_frames, a.min_duration, a.min_side, a.max_aspect, not a.no_images)
        summary = write_shards(sources, a.out, a.samples_per_shard, a.max_shard_mb, a.workers, flt, a.prefix, skipped)
    except SoraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
