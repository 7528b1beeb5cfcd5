"""Write the built-in "moving shapes" dataset as webdataset shards (train.py also does this on first use).

    python data/make_moving_shapes.py --root data/moving_shapes --clips-per-combo 32

Output: ROOT/train-NNNNNN.tar (64 colour x shape x direction combinations), ROOT/test-NNNNNN.tar (the 8 held-out
combinations), heldout_prompts.txt, train_prompts.txt and info.json. Each sample is KEY.mp4 (H.264),
KEY.txt (`a {color} {shape} moving {direction}`) and KEY.json (fps, num_frames, height, width, labels).
"""

import argparse
import time

from sora.config import MovingShapesArgs
from sora.data.moving_shapes import write_moving_shapes


def main() -> None:
    d = MovingShapesArgs()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=d.root)
    p.add_argument("--clips-per-combo", type=int, default=d.clips_per_combo)
    p.add_argument("--clips-per-shard", type=int, default=d.clips_per_shard)
    p.add_argument("--num-frames", type=int, default=d.num_frames)
    p.add_argument("--size-px", type=int, default=d.size_px)
    p.add_argument("--fps", type=int, default=d.fps)
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args()
    t0 = time.time()
    root = write_moving_shapes(MovingShapesArgs(a.root, a.clips_per_combo, a.clips_per_shard, a.num_frames, a.size_px,
                                                a.fps, a.seed))
    print(f"wrote {root} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
