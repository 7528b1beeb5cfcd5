"""A probe for the moving-shapes dataset: read videos, recover (color, shape, direction), score against prompts.

    python -m sora.eval.probe --prompts PROMPTS.txt DIR      # DIR/000.mp4, 001.mp4, ... one per prompt line

The probe is hand-written, not learned: the shape is the set of bright pixels; its colour is the nearest pure
colour to their mean; its direction is the sign of the steeper least-squares slope of the centroid over time
(for a `bouncing` prompt, the direction it starts in: the first run of centroid steps one way, of a pixel or
more, along the axis it travels most on); its shape is how much of its bounding box it fills (square 1, circle
pi/4) and, for the apex-up triangle, how little of it lies in the upper half of the box. A dim occluding bar
(sora/data/moving_shapes.py: BAR_COLOR) is under the brightness threshold: the probe does not see it.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sora.data.moving_shapes import COLORS, caption_verb, parse_caption
from sora.data.video_io import read_video
from sora.errors import SoraError, exit_on_user_error

BRIGHT = 100  # a pixel belongs to the shape if its brightest channel exceeds this (of 255)
MIN_PIXELS = 3  # frames with fewer bright pixels show no shape
DIM = 30  # a pixel whose brightest channel is in (DIM, BRIGHT] is dim: an occluding bar's (BAR_COLOR is 60)
BAR_SHARE = 0.8  # a column (row) belongs to a bar if this share of its pixels is dim over the whole video
TOUCH_PX = 1.0  # a shape's box end this close to the frame's edge or a bar's side (a pixel apart) is cut there


def centroids(frames: np.ndarray) -> np.ndarray:
    """uint8 t h w 3 -> t 2 (x, y) centre of the bright pixels of each frame; NaN where no shape is seen."""
    mask = frames.max(axis=-1) > BRIGHT  # t h w
    out = np.full((len(frames), 2), np.nan)
    for i, m in enumerate(mask):
        if m.sum() >= MIN_PIXELS:
            ys, xs = np.nonzero(m)
            out[i] = xs.mean(), ys.mean()
    return out


def read_frames(frames: np.ndarray) -> dict:
    """uint8 t h w 3 -> per frame: "count" of bright pixels (t), "seen" (t), their "box" (t 4: x0, x1, y0, y1,
    the pixel ends, inclusive), "rgb" mean (t 3), "fill" of the box and share "top" in its upper half (t); NaN
    where the frame shows no shape."""
    mask = frames.max(axis=-1) > BRIGHT  # t h w
    count = mask.sum(axis=(1, 2))  # t
    t = len(frames)
    box, rgb, fill, top = np.full((t, 4), np.nan), np.full((t, 3), np.nan), np.full(t, np.nan), np.full(t, np.nan)
    for i in np.flatnonzero(count >= MIN_PIXELS):
        ys, xs = np.nonzero(mask[i])
        box[i] = xs.min(), xs.max(), ys.min(), ys.max()
        rgb[i] = frames[i][mask[i]].astype(np.float64).mean(axis=0)
        fill[i] = len(xs) / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
        top[i] = np.mean(ys < (ys.min() + ys.max()) / 2)
    return {"count": count, "seen": count >= MIN_PIXELS, "box": box, "rgb": rgb, "fill": fill, "top": top}


def find_bar(frames: np.ndarray) -> tuple[int, int, int] | None:
    """(axis, start, stop) of a dim bar across the whole frame: columns [start, stop) (axis 0, an upright bar,
    across horizontal motion) or rows (axis 1); the widest if there are several; None if there is none."""
    brightest = frames.max(axis=-1)  # t h w
    dim = (brightest > DIM) & (brightest <= BRIGHT)  # t h w
    best = None
    for axis, share in ((0, dim.mean(axis=(0, 1))), (1, dim.mean(axis=(0, 2)))):  # w (columns), h (rows)
        on = np.concatenate([[0], (share >= BAR_SHARE).astype(int), [0]])
        starts, stops = np.flatnonzero(np.diff(on) == 1), np.flatnonzero(np.diff(on) == -1)
        for a, b in zip(starts, stops):
            if best is None or b - a > best[2] - best[1]:
                best = (axis, int(a), int(b))
    return best


def cut_ends(reading: dict, axis: int, size_px: int, bar: tuple[int, int, int] | None,
             edges: bool = True) -> tuple[np.ndarray, ...]:
    """(low end, high end, cut at the low end, cut at the high end) of the shape's box along `axis` (0: x, 1: y)
    in each frame, in continuous pixels; an end is cut where it touches the side of a bar across that axis (the
    shape may go on behind it) or, with `edges`, the frame's edge (false: a shape that bounces there is whole)."""
    lo, hi = reading["box"][:, 2 * axis], reading["box"][:, 2 * axis + 1] + 1  # t: the box covers [lo, hi)
    cut_lo, cut_hi = (lo <= TOUCH_PX, hi >= size_px - TOUCH_PX) if edges else (lo < -1, hi < -1)  # all false
    if bar is not None and bar[0] == axis:
        cut_lo |= np.abs(lo - bar[2]) <= TOUCH_PX
        cut_hi |= np.abs(hi - bar[1]) <= TOUCH_PX
    return lo, hi, cut_lo, cut_hi


def along_centres(reading: dict, axis: int, size_px: int, bar: tuple[int, int, int] | None,
                  extent: float | None = None, edges: bool = True) -> np.ndarray:
    """The shape's centre along `axis` in each frame (t): its box's middle, or where a bar (or, with `edges`, the
    frame's edge) cuts one end, the other end less half the shape's whole `extent` (None: the median extent of
    the frames cut at neither end); NaN where it is unseen or cut at both ends."""
    lo, hi, cut_lo, cut_hi = cut_ends(reading, axis, size_px, bar, edges)
    whole = reading["seen"] & ~cut_lo & ~cut_hi
    if extent is None:
        extent = float(np.median((hi - lo)[whole])) if whole.any() else float(np.nanmax(hi - lo, initial=0.0))
    centre = (lo + hi) / 2
    centre = np.where(cut_lo & ~cut_hi, hi - extent / 2, centre)
    centre = np.where(cut_hi & ~cut_lo, lo + extent / 2, centre)
    return np.where(cut_lo & cut_hi, np.nan, centre)


def axis_direction(axis: int, sign: float) -> str:
    """(0: x, 1: y; the sign of the motion along it in image coordinates) -> left, right, up or down."""
    return ("right" if sign > 0 else "left") if axis == 0 else ("down" if sign > 0 else "up")


def initial_direction(cx, cy, min_run_px: float = 1.0, axis: int | None = None) -> str:
    """The direction a shape starts in (a bouncing one turns later): along `axis` (None: the one it travels
    most on; a bar lies across the axis of motion), the first run of steps one way that adds up to `min_run_px`
    or more; "none" if there is none."""
    if axis is None:
        axis = int(np.abs(np.diff(cy)).sum() > np.abs(np.diff(cx)).sum())
    run = 0.0
    for step in np.diff(cy if axis else cx):
        if run and np.sign(step) not in (0, np.sign(run)):  # a turn ends the run; a long enough one is the answer
            if abs(run) >= min_run_px:
                break
            run = 0.0
        run += step
    return axis_direction(axis, run) if abs(run) >= min_run_px else "none"


def analyze(frames: np.ndarray) -> dict:
    """uint8 t h w 3 -> {"color", "shape", "direction", "initial_direction"}; "none" where nothing can be seen."""
    mask = frames.max(axis=-1) > BRIGHT  # t h w
    counts = mask.sum(axis=(1, 2))  # t
    seen = counts >= MIN_PIXELS
    if seen.sum() == 0:
        return {"color": "none", "shape": "none", "direction": "none", "initial_direction": "none"}
    mean_rgb = frames[mask].astype(np.float64).mean(axis=0)  # 3
    color = min(COLORS, key=lambda c: np.sum((np.array(COLORS[c]) - mean_rgb) ** 2))

    fills, tops, cx, cy, ts = [], [], [], [], []
    for i in np.flatnonzero(seen):
        ys, xs = np.nonzero(mask[i])
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fills.append(len(xs) / box)
        tops.append(np.mean(ys < (ys.min() + ys.max()) / 2))  # share of pixels in the upper half of the box
        cx.append(xs.mean()), cy.append(ys.mean()), ts.append(i)
    reading, bar = read_frames(frames), find_bar(frames)
    if bar is not None:  # its shape from the frames where no bar cuts it, if there are any
        lo, hi, cut_lo, cut_hi = cut_ends(reading, bar[0], frames.shape[2 - bar[0]], bar)
        behind = (np.abs(lo - bar[2]) <= TOUCH_PX) | (np.abs(hi - bar[1]) <= TOUCH_PX)
        clear = ~behind[ts]
        if clear.any():
            fills, tops = np.array(fills)[clear], np.array(tops)[clear]
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
    # The start from the centres of the boxes, not the centroids: a shape partly behind a bar keeps its box's far
    # end, and its centroid moves off its centre.
    centres = [along_centres(reading, axis, frames.shape[2 - axis], bar) for axis in (0, 1)]
    start = initial_direction(*[c[np.isfinite(c)] for c in centres], axis=None if bar is None else bar[0])
    return {"color": color, "shape": shape, "direction": direction, "initial_direction": start,
            "fill": round(fill, 3), "top": round(top, 3)}


def score(videos: list[np.ndarray], prompts: list[str]) -> dict:
    """Accuracy of each attribute over videos (uint8 t h w 3) against their moving-shapes prompts; a bouncing
    prompt's direction is the one its video starts in."""
    assert len(videos) == len(prompts), f"{len(videos)} videos for {len(prompts)} prompts"
    rows, hits = [], {"color": 0, "shape": 0, "direction": 0}
    for frames, prompt in zip(videos, prompts):
        want = parse_caption(prompt)
        if want is None:
            raise SoraError(f"prompt {prompt!r} is not a moving-shapes caption "
                            "('a {color} {shape} moving {direction}' or 'a {color} {shape} bouncing {direction}')")
        got = analyze(frames)
        read = {**got, "direction": got["initial_direction"]} if caption_verb(prompt) == "bouncing" else got
        for name, value in zip(("color", "shape", "direction"), want):
            hits[name] += read[name] == value
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


def read_prompt_file(path: str, option: str = "--prompts") -> list[str]:
    """A command's prompt file, one prompt a line (blank lines skipped); a missing file is a user error naming
    `option`."""
    if not Path(path).is_file():
        raise SoraError(f"{option} {path!r} is not a file")
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def print_scores(result: dict, every_video: bool) -> None:
    """A score's JSON on stdout, its per-video rows ("videos") only with `every_video`."""
    if not every_video:
        result.pop("videos")
    json.dump(result, sys.stdout, indent=1)
    print()


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video_dir", help="folder with 000.mp4, 001.mp4, ... (as sample.py prompts=... writes)")
    parser.add_argument("--prompts", required=True, help="the prompt file the videos were sampled from")
    parser.add_argument("--json", action="store_true", help="print every video's reading too")
    args = parser.parse_args(argv)
    print_scores(score_dir(args.video_dir, read_prompt_file(args.prompts)), args.json)


if __name__ == "__main__":
    main()
