"""Drift: whether a long video of the moving-shapes dataset keeps its subject and its motion, window by window.

    python -m sora.eval.drift --prompts PROMPTS.txt DIR [--window 8]   # DIR/000.mp4, 001.mp4, ... one a prompt

A video is cut into windows of `window` frames (the clip length the model trained on; the last, shorter one
counts if it has 2 frames or more). The shape is read as the probe reads it (sora/eval/probe.py: the bright
pixels, their box, colour, fill and top share), with the video's dim occluding bar found as the columns or rows
that are dim throughout. A frame is *whole* when the shape's box touches neither the frame's edge nor the bar.
Each window passes when every check passes:

  visible   every frame shows the shape, or it is hidden behind the bar (the frames seen last before and first
            after touch the bar, and it is wholly hidden no longer than it takes to pass behind it at the
            first window's speed, with 2 frames to spare: an occlusion), or, for a moving prompt, it has
            left through the edge it moved towards and is not seen again;
  colour    the window's bright pixels, and each frame's showing a quarter of the shape or more, are
            nearest the prompt's colour;
  shape     the median fill of the box and share in its upper half of its whole frames are in the prompt
            shape's band (SHAPE_BANDS);
  size      the median sqrt(bright pixels) of its whole frames is within SIZE_RATIO of the first window's;
  speed     the centre's path along the prompt's axis a frame is within SPEED_RATIO of the first window's;
  axis      the centre across the prompt's axis stays within AXIS_SHARE of the frame of where it was in the
            first window (the motion is on the prompt's axis);
  start     along the axis it first goes the prompt's way (a failure of the window it is first seen in);
  turns     a moving shape never turns; a bouncing one turns only where its box reaches, within EDGE_SHARE of the
            frame, the edge it was moving towards. Turns are read with hysteresis (a retreat of TURN_PX from the
            furthest point so far), so jitter is not a turn.

After an occlusion the shape must come back as it went in: its colour, shape and size are checked in every window
against the prompt and the first window. The centre along the axis is taken from the box's far end where the
bar or the frame's edge cuts the near one (`probe.along_centres`), so a shape partly behind the bar keeps its
position. Checks with nothing to measure in a window (no whole frame, fewer than two centres) pass.

The report: the share of videos whose every window passes, the pass rate of each window over time, the median
frames to the first failure (the start of the first failing window; a video that never fails counts its
length), each check's failures, the wrong turns by the bounces before each, and the same by verb
(moving, bouncing) and for the videos with a bar and without (object permanence apart from the rest: the bar is
drawn by the model, read from the video as above).
"""

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from sora.data.moving_shapes import COLORS, DIRECTION_VECTORS, caption_verb, parse_caption
from sora.data.video_io import read_video
from sora.errors import SoraError, exit_on_user_error
from sora.eval.probe import (
    BRIGHT,
    TOUCH_PX,
    along_centres,
    cut_ends,
    find_bar,
    print_scores,
    read_frames,
    read_prompt_file,
)

SIZE_RATIO = 1.25  # a window's size within [1/1.25, 1.25] of the first window's
SPEED_RATIO = 1.75  # a window's speed within [1/1.75, 1.75] of the first window's
AXIS_SHARE = 0.08  # the centre across the axis within 8% of the frame (2.6 px at 32) of its first-window place
EDGE_SHARE = 0.1  # a turn is a bounce if the box's end is within 10% of the frame (3.2 px at 32) of that edge
TURN_PX = 1.5  # a turn: a retreat of this many pixels from the furthest point so far
START_PX = 1.0  # the way it starts: the first move of this many pixels from where it is first seen
MIN_SPEED_FRAMES = 5  # a window's speed is measured over steps that span this many frames or more
COLOUR_SHARE = 0.25  # frames showing this share of the shape's most pixels are checked one by one for colour
SLIVER = 0.05  # a shape showing under this share of its most pixels in any frame has no measured centre (a sliver)
# Each shape's band of (fill of its box, share of its pixels in the box's upper half), a window's medians: a square
# fills its box (1), a circle pi/4 of it, the apex-up triangle about half with a quarter in the upper half. The
# bands hold every window of 700 rendered 8-frame windows (32x32, before and after mp4) with a margin; they
# overlap where a 32-pixel shape is ambiguous, so a shape fails only when it is plainly not the prompt's.
SHAPE_BANDS = {"square": ((0.82, 1.0), (0.40, 1.0)), "circle": ((0.62, 0.92), (0.35, 1.0)),
               "triangle": ((0.0, 0.88), (0.0, 0.42))}
CHECKS = ("visible", "colour", "shape", "size", "speed", "axis", "start", "turns")

# ---------------------------------------------------------------------------------------------------------------
# One video
# ---------------------------------------------------------------------------------------------------------------


def nearest_color(rgb) -> str:
    return min(COLORS, key=lambda c: float(np.sum((np.array(COLORS[c]) - rgb) ** 2)))


def looks_like(shape: str, fill: float, top: float) -> bool:
    """Whether a shape's fill of its box and share in the box's upper half are within its band (SHAPE_BANDS)."""
    (fill_lo, fill_hi), (top_lo, top_hi) = SHAPE_BANDS[shape]
    return fill_lo <= fill <= fill_hi and top_lo <= top <= top_hi


def turns(frames_idx: np.ndarray, centres: np.ndarray) -> tuple[int, list[tuple[int, float, int]], int | None]:
    """(the sign it starts moving in, 0 if it never moves START_PX; [(frame, centre, sign before), ...] at each
    turn; the frame of the furthest point since the last turn if the path has come back from it since, by less
    than a turn: a turn the video may end in): the furthest points of the centre's path along the axis, read
    with TURN_PX of hysteresis."""
    if len(centres) == 0:
        return 0, [], None
    start, out = 0, []
    sign, far, far_i = 0, centres[0], frames_idx[0]
    for i, p in zip(frames_idx[1:], centres[1:]):
        if sign == 0:  # the first way needs less: a video may start just before a bounce
            if abs(p - centres[0]) >= START_PX:
                sign = start = 1 if p > centres[0] else -1
                far, far_i = p, i
        elif (p - far) * sign > 0:
            far, far_i = p, i
        elif (far - p) * sign >= TURN_PX:
            out.append((int(far_i), float(far), sign))
            sign, far, far_i = -sign, p, i
    return start, out, (int(far_i) if sign and far != centres[-1] else None)


def drift_video(frames: np.ndarray, prompt: str, window: int) -> dict:
    """One video (uint8 t h w 3) against its moving-shapes prompt: {"windows": [{"start", "passed", "failed":
    [check, ...]}, ...], "passed" (every window), "first_failure_frame" (None: none)}."""
    want = parse_caption(prompt)
    if want is None:
        raise SoraError(f"prompt {prompt!r} is not a moving-shapes caption "
                        "('a {color} {shape} moving {direction}' or 'a {color} {shape} bouncing {direction}', "
                        "either may end 'behind a bar')")
    color, shape, direction = want
    bouncing = caption_verb(prompt) == "bouncing"
    ux, uy = DIRECTION_VECTORS[direction]
    axis, way = (0, ux) if ux else (1, uy)  # along x or y; +1 towards larger coordinates
    n, h, w = frames.shape[:3]
    size_px, across_px = (w, h) if axis == 0 else (h, w)
    windows = [(s, min(s + window, n)) for s in range(0, n, window) if min(s + window, n) - s >= 2 or s == 0]

    r, bar = read_frames(frames), find_bar(frames)
    bar = bar if bar is not None and bar[0] == axis else None  # a bar along the path does not hide it
    seen = r["seen"]
    # A bouncing shape at the frame's edge is whole (it turns there); a moving one is cut there as it leaves.
    lo, hi, cut_lo, cut_hi = cut_ends(r, axis, size_px, bar, edges=not bouncing)
    a_lo, a_hi, a_cut_lo, a_cut_hi = cut_ends(r, 1 - axis, across_px, None)
    whole = seen & ~cut_lo & ~cut_hi & ~a_cut_lo & ~a_cut_hi
    # The first window's whole frames are the reference; if it has none, the first whole frames of the video.
    ref_frames = np.flatnonzero(whole[: windows[0][1]])
    if not len(ref_frames):
        ref_frames = np.flatnonzero(whole)[:window]
    # Its whole extent along the axis; never seen whole, its widest extent across (a square, a circle and the
    # triangle are as wide as they are high, and the bar does not cut across).
    extent = float(np.median((hi - lo)[ref_frames])) if len(ref_frames) else float(np.nanmax(a_hi - a_lo, initial=0))
    centre = along_centres(r, axis, size_px, bar, extent, edges=not bouncing)  # t, NaN where unseen or cut at both ends
    centre[r["count"] < SLIVER * r["count"].max()] = np.nan  # a sliver's box (or an mp4 smear) says little
    across = (a_lo + a_hi) / 2  # t
    sqrt_count = np.sqrt(r["count"].astype(np.float64))
    size_ref = float(np.median(sqrt_count[ref_frames])) if len(ref_frames) else None
    across_ref = float(np.median(across[ref_frames])) if len(ref_frames) else None
    measured = np.flatnonzero(np.isfinite(centre))
    start, found, last = turns(measured, centre[measured])  # the first way, where each turn is
    # Straight stretches: the measured frames between turns, leaving out the turns. A box's ends move in whole
    # pixels (in twos where mp4's 2x2 chroma carries the colour), so the speed is a least-squares slope over a
    # stretch, not a step.
    turn_frames = np.array([f for f, _, _ in found] + ([last] if last is not None else []), int)
    away = ~np.isin(measured, turn_frames)
    stretch = np.searchsorted(turn_frames, measured)  # t_measured: which stretch between turns each frame is in

    def window_speed(s: int, e: int, min_frames: int = MIN_SPEED_FRAMES) -> float | None:
        """Pixels a frame along the axis in frames [s, e): the stretches' least-squares slopes, weighted by the
        frames each spans; None if they span under min_frames."""
        slopes, spans = [], []
        for k in np.unique(stretch):
            pick = away & (stretch == k) & (measured >= s) & (measured < e)
            f = measured[pick]
            if len(f) >= 3:
                slopes.append(abs(np.polyfit(f, centre[f], 1)[0]))
                spans.append(f[-1] - f[0])
        if sum(spans) < min_frames:
            return None
        return float(np.average(slopes, weights=spans))

    # The first window's speed; if it spans too few frames (an occlusion, a turn), from the first windows that do.
    speed_ref = next((v for e in range(windows[0][1], n + window, window)
                      if (v := window_speed(0, min(e, n), window - 1)) is not None), None)
    failed = [set() for _ in windows]

    def fail(frame: int, check: str) -> None:
        failed[min(frame // window, len(windows) - 1)].add(check)

    if start and start != way:
        fail(int(measured[0]), "start")
    wrong_turns, bounces = [], 0  # each turn `turns` fails: after how many bounces, how far from the edge
    for frame, far, sign in found:
        end = far + sign * extent / 2  # the box's end on the side it was moving towards
        at_edge = end >= size_px - EDGE_SHARE * size_px if sign > 0 else end <= EDGE_SHARE * size_px
        if bouncing and at_edge:
            bounces += 1
            continue
        fail(frame, "turns")
        gap_px = size_px - end if sign > 0 else end
        wrong_turns.append({"frame": frame, "bounces_before": bounces, "edge_gap_px": round(float(gap_px), 1)})

    # visible: unseen frames are an occlusion, or the shape has left (moving prompts only)
    seen_idx = np.flatnonzero(seen)
    touches_bar = np.zeros(n, bool)
    if bar is not None:
        touches_bar = seen & ((hi >= bar[1] - TOUCH_PX) & (lo <= bar[2] + TOUCH_PX))
    max_hidden = window if bar is None or not speed_ref else int(np.ceil((bar[2] - bar[1] - extent) / speed_ref)) + 2
    for t in np.flatnonzero(~seen):
        before, after = seen_idx[seen_idx < t], seen_idx[seen_idx > t]
        prev = int(before[-1]) if len(before) else None
        nxt = int(after[0]) if len(after) else None
        # behind the bar: seen touching it before and after, and not for longer than it takes to cross it
        hidden = (n if nxt is None else nxt) - (-1 if prev is None else prev) - 1
        occluded = bar is not None and (prev is None or touches_bar[prev]) and (nxt is None or touches_bar[nxt]) \
            and (prev is not None or nxt is not None) and hidden <= max_hidden
        left = (not bouncing and prev is not None and nxt is None
                and (hi[prev] >= size_px - TOUCH_PX if way > 0 else lo[prev] <= TOUCH_PX))
        if not (occluded or left):
            fail(int(t), "visible")

    rows = []
    for k, (s, e) in enumerate(windows):
        idx = np.arange(s, e)
        ws = idx[whole[idx]]
        size = float(np.median(sqrt_count[ws])) if len(ws) else None
        speed = window_speed(s, e)
        if seen[idx].any():
            mean_rgb = frames[s:e][frames[s:e].max(axis=-1) > BRIGHT].astype(np.float64).mean(axis=0)
            big = idx[r["count"][idx] >= COLOUR_SHARE * r["count"].max()]  # not a sliver: its colour is its own
            if nearest_color(mean_rgb) != color or any(nearest_color(r["rgb"][i]) != color for i in big):
                failed[k].add("colour")
        if len(ws):
            if not looks_like(shape, float(np.median(r["fill"][ws])), float(np.median(r["top"][ws]))):
                failed[k].add("shape")
            if size_ref and not 1 / SIZE_RATIO <= size / size_ref <= SIZE_RATIO:
                failed[k].add("size")
        # across the axis: every frame that no bar or edge cuts along it (one that runs into an edge across it is
        # off its axis too)
        wa = idx[seen[idx] & ~cut_lo[idx] & ~cut_hi[idx]]
        if across_ref is not None and len(wa) and np.max(np.abs(across[wa] - across_ref)) > AXIS_SHARE * across_px:
            failed[k].add("axis")
        if speed is not None and speed_ref and not 1 / SPEED_RATIO <= speed / speed_ref <= SPEED_RATIO:
            failed[k].add("speed")
        rows.append({"start": s, "passed": not failed[k], "failed": sorted(failed[k], key=CHECKS.index),
                     "size_px": None if size is None else round(size, 2),
                     "speed_px": None if speed is None else round(speed, 3)})
    first_fail = next((row["start"] for row in rows if not row["passed"]), None)
    return {"prompt": prompt, "num_frames": n, "bar": list(bar[1:]) if bar else None, "windows": rows,
            "passed": first_fail is None, "first_failure_frame": first_fail, "wrong_turns": wrong_turns}


# ---------------------------------------------------------------------------------------------------------------
# Many videos
# ---------------------------------------------------------------------------------------------------------------


def summarize(rows: list[dict], window: int) -> dict:
    """The share of videos whose every window passes, each window's pass rate, the median frames to the first
    failure (a video that never fails counts its length) and each check's failed windows."""
    if not rows:
        return {"n": 0}
    num_windows = max(len(r["windows"]) for r in rows)
    per_window = [float(np.mean([r["windows"][k]["passed"] for r in rows if k < len(r["windows"])]))
                  for k in range(num_windows)]
    to_failure = [r["first_failure_frame"] if r["first_failure_frame"] is not None else r["num_frames"]
                  for r in rows]
    checks = Counter(c for r in rows for wrow in r["windows"] for c in wrow["failed"])
    # The turns `turns` fails, by the bounces before them: a bouncing shape that started its caption's way moves
    # that way again after 2, from the edge no 20-frame training clip reaches (docs/results/LONG_VIDEO.md).
    after = Counter(t["bounces_before"] for r in rows for t in r.get("wrong_turns", []))
    return {"n": len(rows), "window": window, "num_frames": max(r["num_frames"] for r in rows),
            "all_windows_pass": float(np.mean([r["passed"] for r in rows])),
            "per_window_pass": [round(x, 3) for x in per_window],
            "median_frames_to_first_failure": float(np.median(to_failure)),
            "failed_windows_by_check": {c: checks[c] for c in CHECKS if checks[c]},
            "wrong_turns_by_bounces_before": {str(k): after[k] for k in sorted(after)}}


def score_drift(videos: list[np.ndarray], prompts: list[str], window: int) -> dict:
    """Drift of videos (uint8 t h w 3 each) against their moving-shapes prompts, `window` frames a window: the
    summary (see `summarize`), the same for each verb present ("by_verb") and for the videos drawn with and without
    an occluding bar ("by_bar": "bar", "no_bar"; the model draws the bar, so a video's bar is read from its frames),
    and every video's windows ("videos")."""
    if len(videos) != len(prompts):
        raise SoraError(f"{len(videos)} videos for {len(prompts)} prompts")
    rows = [drift_video(v, p, window) for v, p in zip(videos, prompts)]
    verbs = sorted({caption_verb(p) for p in prompts})
    by_verb = {v: summarize([r for r in rows if caption_verb(r["prompt"]) == v], window) for v in verbs}
    by_bar = {name: summarize([r for r in rows if (r["bar"] is not None) == has_bar], window)
              for name, has_bar in (("bar", True), ("no_bar", False))}
    return {**summarize(rows, window), "by_verb": by_verb, "by_bar": by_bar, "videos": rows}


def score_drift_dir(video_dir: str | Path, prompts: list[str], window: int) -> dict:
    """Score DIR/000.mp4, 001.mp4, ... against prompts in order (see score_drift)."""
    paths = [Path(video_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SoraError(f"{len(missing)} video(s) missing for the prompts, first {missing[0]}")
    return score_drift([read_video(p)[0] for p in paths], prompts, window)


# ---------------------------------------------------------------------------------------------------------------
# Long videos of a model, scored (the end of a run, val.* during one)
# ---------------------------------------------------------------------------------------------------------------


def drift_prompts(data_cfg) -> list[str]:
    """The held-out prompts to score drift on: data.eval_prompts' and, when the built-in dataset has bouncing
    clips, its held-out bouncing prompts (heldout_bouncing_prompts.txt beside its shards)."""
    from sora.data.moving_shapes import BOUNCING_PROMPTS

    files = [data_cfg.eval_prompts]
    if data_cfg.moving_shapes is not None:
        files.append(str(Path(data_cfg.moving_shapes.root) / BOUNCING_PROMPTS))
    prompts = []
    for path in files:
        if path and Path(path).is_file():
            prompts += [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    return [p for p in prompts if parse_caption(p)]


def measure_drift(bundle, prompts: list[str], out_dir: str | Path, settings, windows: int = 4,
                  samples_per_prompt: int = 1, seed: int = 0, batch_size: int = 8) -> dict:
    """Make each prompt's video `windows` times the trained window long with the pipeline's long-video sampler
    (`generate_long`, as it is), score their drift per trained window (score_drift, on the frames as made: an
    mp4's 4:2:0 chroma moves a 32-pixel shape's box in steps of two pixels), and write them to out_dir (000.mp4,
    ..., prompts.txt, drift.json). settings: a SampleSettings whose window is the trained one. Returns the scores
    without the per-video rows."""
    from dataclasses import replace

    import torch

    from sora.data.video_io import to_uint8_frames, write_mp4
    from sora.inference.pipeline import generate_long

    prompts = [p for p in prompts for _ in range(samples_per_prompt)]
    if not prompts:
        raise SoraError("drift: no moving-shapes prompts to sample (data.eval_prompts, or the built-in dataset's)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    long = replace(settings, window_frames=settings.window, num_frames=windows * settings.window)
    frames = []
    for start in range(0, len(prompts), batch_size):
        with torch.no_grad():
            videos = generate_long(bundle, prompts[start : start + batch_size], seed + start, long)  # b 3 T h w
        for i, video in enumerate(videos.float().cpu(), start):
            write_mp4(out / f"{i:03d}.mp4", video, long.fps)
            frames.append(to_uint8_frames(video))  # T h w 3
    (out / "prompts.txt").write_text("".join(p + "\n" for p in prompts))
    scores = score_drift(frames, prompts, settings.window)
    (out / "drift.json").write_text(json.dumps(scores, indent=1))
    return {k: v for k, v in scores.items() if k != "videos"}


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video_dir", help="folder with 000.mp4, 001.mp4, ... (as sample.py prompts=... writes)")
    parser.add_argument("--prompts", required=True, help="the prompt file the videos were sampled from")
    parser.add_argument("--window", type=int, default=8, help="frames a window: the clip length the model trained "
                        "on (data.num_frames; default 8)")
    parser.add_argument("--json", action="store_true", help="print every video's windows too")
    args = parser.parse_args(argv)
    prompts = read_prompt_file(args.prompts)
    if args.window < 2:
        raise SoraError(f"--window must be 2 frames or more, got {args.window}")
    print_scores(score_drift_dir(args.video_dir, prompts, args.window), args.json)


if __name__ == "__main__":
    main()
