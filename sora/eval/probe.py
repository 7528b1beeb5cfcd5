"""A probe for the moving-shapes dataset: read videos, recover (color, shape, direction), score against prompts.

    python -m sora.eval.probe --prompts PROMPTS.txt DIR      # DIR/000.mp4, 001.mp4, ... one per prompt line

The probe is hand-written, not learned: the shape is the set of bright pixels; its colour is the nearest pure
colour to their mean; its direction is the sign of the steeper least-squares slope of the centroid over time;
its shape is how much of its bounding box it fills (square 1, circle pi/4) and, for the apex-up triangle,
how little of it lies in the upper half of the box.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sora.data.moving_shapes import COLORS, parse_caption
from sora.data.video_io import read_video
from sora.errors import SoraError, exit_on_user_error

BRIGHT = 100  # a pixel belongs to the shape if its brightest channel exceeds this (of 255)
MIN_PIXELS = 3  # frames with fewer bright pixels show no shape


def centroids(frames: np.ndarray) -> np.ndarray:
    """uint8 t h w 3 -> t 2 (x, y) centre of the bright pixels of each frame; NaN where no shape is seen."""
    mask = frames.max(axis=-1) > BRIGHT  # t h w
    out = np.full((len(frames), 2), np.nan)
    for i, m in enumerate(mask):
        if m.sum() >= MIN_PIXELS:
            ys, xs = np.nonzero(m)
            out[i] = xs.mean(), ys.mean()
    return out


def analyze(frames: np.ndarray) -> dict:
    """uint8 t h w 3 -> {"color", "shape", "direction"}; "none" where nothing can be seen."""
    mask = frames.max(axis=-1) > BRIGHT  # t h w
    counts = mask.sum(axis=(1, 2))  # t
    seen = counts >= MIN_PIXELS
    if seen.sum() == 0:
        return {"color": "none", "shape": "none", "direction": "none"}
    mean_rgb = frames[mask].astype(np.float64).mean(axis=0)  # 3
    color = min(COLORS, key=lambda c: np.sum((np.array(COLORS[c]) - mean_rgb) ** 2))

    fills, tops, cx, cy, ts = [], [], [], [], []
    for i in np.flatnonzero(seen):
        ys, xs = np.nonzero(mask[i])
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fills.append(len(xs) / box)
        tops.append(np.mean(ys < (ys.min() + ys.max()) / 2))  # share of pixels in the upper half of the box
        cx.append(xs.mean()), cy.append(ys.mean()), ts.append(i)
    fill, top = float(np.median(fills)), float(np.median(tops))
    # An apex-up triangle keeps about a quarter of its pixels in the upper half; squares and circles, half.
    shape = "triangle" if top < 0.36 else "square" if fill > 0.88 else "circle"

    direction = "none"
    if len(ts) >= 2:
        slope_x, slope_y = np.polyfit(ts, cx, 1)[0], np.polyfit(ts, cy, 1)[0]
        travel = max(abs(slope_x), abs(slope_y)) * (ts[-1] - ts[0])
        if travel >= 1.0:  # at least a pixel over the clip
            if abs(slope_x) >= abs(slope_y):
                direction = "right" if slope_x > 0 else "left"
            else:
                direction = "down" if slope_y > 0 else "up"
    return {"color": color, "shape": shape, "direction": direction, "fill": round(fill, 3), "top": round(top, 3)}


def score(videos: list[np.ndarray], prompts: list[str]) -> dict:
    """Accuracy of each attribute over videos (uint8 t h w 3) against their moving-shapes prompts."""
    assert len(videos) == len(prompts), f"{len(videos)} videos for {len(prompts)} prompts"
    rows, hits = [], {"color": 0, "shape": 0, "direction": 0}
    for frames, prompt in zip(videos, prompts):
        want = parse_caption(prompt)
        if want is None:
            raise SoraError(f"prompt {prompt!r} is not a moving-shapes caption "
                            "('a {color} {shape} moving {direction}')")
        got = analyze(frames)
        for name, value in zip(("color", "shape", "direction"), want):
            hits[name] += got[name] == value
        rows.append({"prompt": prompt, **got})
    n = max(len(videos), 1)
    return {"n": len(videos), **{f"{k}_acc": v / n for k, v in hits.items()}, "videos": rows}


def score_dir(video_dir: str | Path, prompts: list[str]) -> dict:
    """Score DIR/000.mp4, 001.mp4, ... against prompts in order."""
    paths = [Path(video_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SoraError(f"{len(missing)} video(s) missing for the prompts, first {missing[0]}")
    return score([read_video(p)[0] for p in paths], prompts)


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video_dir", help="folder with 000.mp4, 001.mp4, ... (as sample.py prompts=... writes)")
    parser.add_argument("--prompts", required=True, help="the prompt file the videos were sampled from")
    parser.add_argument("--json", action="store_true", help="print every video's reading too")
    args = parser.parse_args(argv)
    if not Path(args.prompts).is_file():
        raise SoraError(f"--prompts {args.prompts!r} is not a file")
    prompts = [line.strip() for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    result = score_dir(args.video_dir, prompts)
    if not args.json:
        result.pop("videos")
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
