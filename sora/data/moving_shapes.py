"""The built-in "moving shapes" dataset: a coloured square, circle or triangle moving steadily on black.

Captions are exactly `a {color} {shape} moving {direction}`. Eight combinations never appear in the training
shards; they are the held-out test of compositional generalisation (written to test shards and to
`heldout_prompts.txt`). Everything is deterministic for a seed.
"""

import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds

from sora.data.video_io import encode_mp4
from sora.errors import SoraError
from sora.settings import Settings, setting

# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class MovingShapesArgs(Settings):
    """The built-in dataset (`data.moving_shapes`): written to `root` on first use when its shards are missing."""

    root: str = "data/moving_shapes"
    clips_per_combo: int = setting(32, ge=1)
    clips_per_shard: int = setting(256, ge=1)
    num_frames: int = setting(16, ge=1)
    # Written at the quick start's training size (data.height, data.width): decoding is 3x cheaper and no resize
    # is needed.
    size_px: int = setting(32, ge=8)
    fps: int = setting(8, ge=1)
    seed: int = setting(0, unbounded=True)


# ---------------------------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------------------------

COLORS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
# (dx, dy) in image coordinates: y grows downwards.
DIRECTION_VECTORS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

HELDOUT = (
    ("red", "triangle", "up"),
    ("green", "circle", "left"),
    ("blue", "square", "down"),
    ("yellow", "circle", "right"),
    ("cyan", "triangle", "down"),
    ("magenta", "square", "left"),
    ("red", "square", "right"),
    ("blue", "triangle", "left"),
)

ALL_COMBOS = tuple(itertools.product(COLORS, SHAPES, DIRECTIONS))
TRAIN_COMBOS = tuple(c for c in ALL_COMBOS if c not in HELDOUT)


def caption(color: str, shape: str, direction: str) -> str:
    return f"a {color} {shape} moving {direction}"


def parse_caption(text: str) -> tuple[str, str, str] | None:
    """`a red circle moving left` -> ("red", "circle", "left"); None if it is not a moving-shapes caption."""
    words = text.strip().lower().split()
    if len(words) != 5 or words[0] != "a" or words[3] != "moving":
        return None
    color, shape, direction = words[1], words[2], words[4]
    if color not in COLORS or shape not in SHAPES or direction not in DIRECTIONS:
        return None
    return color, shape, direction


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def shape_mask(shape: str, cx: float, cy: float, side: float, size_px: int) -> np.ndarray:
    """Boolean h w mask of a shape of width `side` centred at (cx, cy), sampled at pixel centres."""
    ys, xs = np.mgrid[0:size_px, 0:size_px] + 0.5  # pixel centres, h w
    dx, dy = xs - cx, ys - cy
    r = side / 2
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "triangle":  # isosceles, apex up: the half-width grows linearly from apex to base
        frac = (dy + r) / (2 * r)
        return (frac >= 0) & (frac <= 1) & (np.abs(dx) <= frac * r)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_clip(color: str, shape: str, direction: str, rng: np.random.Generator, num_frames: int,
                size_px: int) -> np.ndarray:
    """One clip as uint8 t h w 3; the shape moves at constant speed and stays wholly inside the frame."""
    side = rng.uniform(0.25, 0.35) * size_px
    travel = 0.4 * size_px  # total displacement over the clip
    ux, uy = DIRECTION_VECTORS[direction]
    lo, hi = side / 2 + 1, size_px - side / 2 - 1  # centre range that keeps the shape visible
    # Along the motion axis the start leaves room for the whole travel; across it, anywhere.
    along = rng.uniform(lo, hi - travel)
    across = rng.uniform(lo, hi)
    start = along if (ux + uy) > 0 else size_px - along
    cx0, cy0 = (start, across) if ux != 0 else (across, start)
    frames = np.zeros((num_frames, size_px, size_px, 3), np.uint8)  # t h w c
    for i in range(num_frames):
        step = travel * i / max(num_frames - 1, 1)
        frames[i][shape_mask(shape, cx0 + ux * step, cy0 + uy * step, side, size_px)] = COLORS[color]
    return frames


# ---------------------------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------------------------


def _write_shards(out_dir: Path, prefix: str, combos, clips_per_combo: int, clips_per_shard: int, cfg, rng) -> int:
    items = [c for c in combos for _ in range(clips_per_combo)]
    order = rng.permutation(len(items))  # mix combinations across shards
    num_shards = max(1, -(-len(items) // clips_per_shard))
    for shard in range(num_shards):
        with wds.TarWriter(str(out_dir / f"{prefix}-{shard:06d}.tar")) as sink:
            for j in order[shard * clips_per_shard : (shard + 1) * clips_per_shard]:
                color, shape, direction = items[j]
                frames = render_clip(color, shape, direction, rng, cfg.num_frames, cfg.size_px)
                meta = dict(fps=cfg.fps, num_frames=cfg.num_frames, height=cfg.size_px, width=cfg.size_px,
                            color=color, shape=shape, direction=direction)
                sink.write({"__key__": f"{prefix}{j:07d}", "mp4": encode_mp4(frames, cfg.fps),
                            "txt": caption(color, shape, direction), "json": json.dumps(meta)})
    return num_shards


def _settings(cfg) -> dict:
    return dict(clips_per_combo=cfg.clips_per_combo, clips_per_shard=cfg.clips_per_shard,
                num_frames=cfg.num_frames, size_px=cfg.size_px, fps=cfg.fps, seed=cfg.seed)


def check_root(root: str, where: str) -> None:
    """The root is replaced whole when written: refuse a file, or a folder of anything but an earlier copy of this
    dataset (its info.json), naming the setting `where` the root came from."""
    path = Path(root).absolute()
    there = next(q for q in (path, *path.parents) if q.exists())  # the folder itself, or where it would be made
    if not there.is_dir():
        raise SoraError(f"{where}={root!r} cannot be a folder: {there} is a file")
    if path.is_dir() and any(path.iterdir()) and not (path / "info.json").is_file():
        raise SoraError(f"{where}={root!r} holds other files (no info.json of the moving-shapes dataset), and "
                        "writing replaces the whole folder: choose a new or empty one")


def write_moving_shapes(cfg, where: str = "data.moving_shapes.root") -> Path:
    """Write train and held-out test shards plus prompt files under `cfg.root`, atomically (a temp dir, renamed)."""
    check_root(cfg.root, where)
    root = Path(cfg.root)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(cfg.seed)
    n_train = _write_shards(tmp, "train", TRAIN_COMBOS, cfg.clips_per_combo, cfg.clips_per_shard, cfg, rng)
    n_test = _write_shards(tmp, "test", HELDOUT, max(1, cfg.clips_per_combo // 4), cfg.clips_per_shard, cfg, rng)
    (tmp / "heldout_prompts.txt").write_text("".join(caption(*c) + "\n" for c in HELDOUT))
    # Eight training combinations spread over colours, shapes and directions, for the train-set figures.
    picks = [TRAIN_COMBOS[i] for i in np.linspace(0, len(TRAIN_COMBOS) - 1, 8).round().astype(int)]
    (tmp / "train_prompts.txt").write_text("".join(caption(*c) + "\n" for c in picks))
    (tmp / "info.json").write_text(json.dumps(dict(
        train_shards=n_train, test_shards=n_test, train_clips=len(TRAIN_COMBOS) * cfg.clips_per_combo,
        config=_settings(cfg)), indent=1))
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def ensure_moving_shapes(cfg) -> bool:
    """Build the dataset unless `cfg.root` holds a finished copy made with the same settings; True if built now."""
    info = Path(cfg.root) / "info.json"
    if info.exists() and json.loads(info.read_text()).get("config") == _settings(cfg):
        return False
    write_moving_shapes(cfg)
    return True
