"""Write the built-in "moving shapes" dataset as webdataset shards (train.py also does this on first use).

    python data/make_moving_shapes.py --root data/moving_shapes --clips-per-combo 32

Output: ROOT/train-NNNNNN.tar (64 colour x shape x direction combinations), ROOT/test-NNNNNN.tar (the 8 held-out
combinations), heldout_prompts.txt, train_prompts.txt and info.json. Each sample is KEY.mp4 (H.264),
KEY.txt (`a {color} {shape} moving {direction}`) and KEY.json (fps, num_frames, height, width, labels).
ROOT is replaced as a whole, so it must be new, empty, or an earlier copy of this dataset (it holds info.json).
A bad option ends in one line `error: ...` (exit status 2).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from sora.data.moving_shapes import (
    MovingShapesArgs,
    write_moving_shapes,
)
from sora.errors import ArgumentParser, exit_on_user_error


@exit_on_user_error
def main(argv=None) -> None:
    d = MovingShapesArgs()
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=d.root)
    p.add_argument("--clips-per-combo", type=int, default=d.clips_per_combo)
    p.add_argument("--clips-per-shard", type=int, default=d.clips_per_shard)
    p.add_argument("--num-frames", type=int, default=d.num_frames)
    p.add_argument("--size-px", type=int, default=d.size_px)
    p.add_argument("--fps", type=int, default=d.fps)
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args(argv)
    # The settings' ranges are checked where they are declared, on MovingShapesArgs (a SoraError naming the field).
    cfg = MovingShapesArgs(a.root, a.clips_per_combo, a.clips_per_shard, a.num_frames, a.size_px, a.fps, a.seed)
    t0 = time.time()
    root = write_moving_shapes(cfg, "--root")
    print(f"wrote {root} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
