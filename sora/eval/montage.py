"""Videos side by side as one PNG: a row a video, its frames left to right (for READMEs and reports).

    python -m sora.eval.montage OUT.png VIDEO.mp4 [VIDEO.mp4 ...] [--scale 4]
"""

import argparse
from pathlib import Path

import numpy as np

from sora.data.video_io import read_video
from sora.errors import SoraError, exit_on_user_error


def montage(videos: list[np.ndarray], scale: int = 4, gap: int = 2) -> np.ndarray:
    """uint8 t h w 3 videos -> one uint8 image: row i holds video i's frames, each scaled up `scale` times
    (nearest, so pixels stay pixels), with `gap` grey pixels between frames and rows."""
    if not videos:
        raise SoraError("montage needs at least one video")
    h, w = max(v.shape[1] for v in videos), max(v.shape[2] for v in videos)
    cols = max(v.shape[0] for v in videos)
    cell_h, cell_w = h * scale + gap, w * scale + gap
    out = np.full((len(videos) * cell_h + gap, cols * cell_w + gap, 3), 96, np.uint8)  # grey background
    for r, video in enumerate(videos):
        for c, frame in enumerate(video):
            big = frame.repeat(scale, axis=0).repeat(scale, axis=1)  # (h s) (w s) 3
            y, x = gap + r * cell_h, gap + c * cell_w
            out[y : y + big.shape[0], x : x + big.shape[1]] = big
    return out


@exit_on_user_error
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the PNG to write")
    p.add_argument("videos", nargs="+")
    p.add_argument("--scale", type=int, default=4)
    a = p.parse_args(argv)
    from PIL import Image

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(montage([read_video(v)[0] for v in a.videos], a.scale)).save(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
