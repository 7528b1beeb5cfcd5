"""The built-in "moving shapes" dataset: a coloured square, circle or triangle moving steadily on black.

Captions are exactly `a {color} {shape} moving {direction}`. Eight combinations never appear in the training
shards; they are the held-out test of compositional generalisation (written to test shards and to
`heldout_prompts.txt`). Everything is deterministic for a seed.

With `bouncing_share` > 0, that share of each combination's clips *bounce* instead: `a {color} {shape} bouncing
{direction}`, the same colours, shapes, sizes and speed, reflected elastically at the frame's edges, in clips
long enough that training crops hold a bounce (the long motion a video longer than a clip needs). Eight other
combinations of the bouncing verb are held out (`test_bouncing-*.tar`, `heldout_bouncing_prompts.txt`). With
`occluder_share` > 0, that share of bouncing clips have a dim bar across the shape's path that it passes behind
and comes out of unchanged (object permanence); with `occluder_in_caption` their captions end `behind a bar`. With
both shares at 0 (the default) the dataset is bit for bit what it was before either existed.
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
    # Share of each combination's clips that bounce off the frame's edges instead of moving straight (0: none,
    # and the dataset is exactly what it was before bouncing clips existed).
    bouncing_share: float = setting(0.0, ge=0, le=1)
    # A bouncing clip's frames. Its first bounce comes within its first num_frames frames (the span a training
    # crop of the quick start covers: 8 frames at stride 2), so most crops hold a bounce and a few start after one
    # (what a window of a long video continues from). The caption names the way it starts, so crops must mostly
    # start that way: at 20 frames 89% of crops do (9% start after the bounce, 88% hold one); at 24, 72% (24%
    # after), and 71% moved mostly against their caption, so the long-video preset's first windows from text
    # went the wrong way (tests/test_data.py: bouncing_crop_shares; docs/results/LONG_VIDEO.md, "Crops that start
    # the caption's way").
    bouncing_num_frames: int = setting(20, ge=2)
    # Share of bouncing clips drawn behind a dim bar across the shape's path (0: none).
    occluder_share: float = setting(0.0, ge=0, le=1)
    # Where a clip's bar lies. "middle": near the frame's middle, wherever the shape is; in half of those clips the
    # shape turns at the frame's edge partly behind the bar, and 16% of their crops show it cross. "path": where that
    # clip's shape crosses it, its turn clear of the bar; a model fine-tuned on it passed fewer long videos
    # (docs/results/LONG_VIDEO.md, "A bar on the shape's path").
    occluder_placement: str = setting("middle", choices=lambda: ("middle", "path"))
    # Whether a clip with a bar says so (`a red circle bouncing left behind a bar`). Without it the caption is the
    # same with or without the bar, so a model draws one in prompts that never asked for it: 17 to 29 of 64 held-out
    # videos a row at 30,000 steps, nearly none of which pass. With it runs draw none unasked (0 of 192), yet pass no
    # more long videos at 30,000 steps and fewer at 60,000 (docs/results/LONG_VIDEO.md, "The bar in the caption").
    # The word encoder then needs `behind` and `bar` in text.vocab and text.max_tokens >= 9.
    occluder_in_caption: bool = False

    def check(self, at: str = "") -> None:
        if self.occluder_share > 0 and self.bouncing_share == 0:
            raise SoraError(f"{at}occluder_share={self.occluder_share} puts bars in bouncing clips, and "
                            f"{at}bouncing_share=0 makes none: set {at}bouncing_share > 0")
        if self.occluder_placement != "middle" and self.occluder_share == 0:
            raise SoraError(f"{at}occluder_placement={self.occluder_placement} places bars, and "
                            f"{at}occluder_share=0 draws none: set {at}occluder_share > 0")
        if self.occluder_in_caption and self.occluder_share == 0:
            raise SoraError(f"{at}occluder_in_caption=true names the bar in captions, and {at}occluder_share=0 "
                            f"draws none: set {at}occluder_share > 0")


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
VERBS = ("moving", "bouncing")
BEHIND_BAR = ("behind", "a", "bar")  # the words a caption ends with when its clip has the bar (occluder_in_caption)
# The occluder's colour: its brightest channel is under the probe's threshold (sora/eval/probe.py: BRIGHT = 100),
# so a reader of bright pixels sees the shape, or the part of it not behind the bar, and never the bar.
BAR_COLOR = (60, 60, 60)

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

# The bouncing verb's held-out combinations: others than the moving verb's, each colour, shape and direction in
# one or more (the moving versions of these are in training: the verb is what is new).
HELDOUT_BOUNCING = (
    ("red", "circle", "down"),
    ("green", "triangle", "right"),
    ("blue", "circle", "up"),
    ("yellow", "square", "left"),
    ("cyan", "square", "up"),
    ("magenta", "triangle", "down"),
    ("green", "square", "right"),
    ("yellow", "triangle", "left"),
)

ALL_COMBOS = tuple(itertools.product(COLORS, SHAPES, DIRECTIONS))
TRAIN_COMBOS = tuple(c for c in ALL_COMBOS if c not in HELDOUT)
TRAIN_COMBOS_BOUNCING = tuple(c for c in ALL_COMBOS if c not in HELDOUT_BOUNCING)


def caption(color: str, shape: str, direction: str, verb: str = "moving", bar: bool = False) -> str:
    return f"a {color} {shape} {verb} {direction}" + (" " + " ".join(BEHIND_BAR) if bar else "")


def caption_verb(text: str) -> str | None:
    """`a red circle bouncing left` -> "bouncing"; None if it is not a moving-shapes caption."""
    return text.strip().lower().split()[3] if parse_caption(text) else None


def parse_caption(text: str) -> tuple[str, str, str] | None:
    """`a red circle moving left` (or `bouncing left`: the direction it starts in; either may end `behind a bar`)
    -> ("red", "circle", "left"); None if it is not a moving-shapes caption (caption_verb says which verb)."""
    words = text.strip().lower().split()
    if words[5:] and tuple(words[5:]) != BEHIND_BAR:
        return None
    if len(words) < 5 or words[0] != "a" or words[3] not in VERBS:
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


def speed_px(size_px: int, num_frames: int) -> float:
    """Pixels a frame that a shape moves: a moving clip's 0.4 of the frame over its num_frames (render_clip)."""
    return 0.4 * size_px / max(num_frames - 1, 1)


def reflect(positions: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions on a line folded into [lo, hi] by elastic reflection at both ends (a triangle wave)."""
    span = hi - lo
    u = np.mod(positions - lo, 2 * span)
    return lo + np.where(u <= span, u, 2 * span - u)


@dataclass
class Track:
    """Where a clip's shape is: its centre in each frame, its width, and the occluding bar if it has one."""

    centers: np.ndarray  # t 2: (x, y) in pixels
    side: float  # the shape's width and height (shape_mask's `side`)
    horizontal: bool  # it moves along x (a bar is then a band of columns), else along y (a band of rows)
    bar: tuple[int, int] | None = None  # [start, stop) pixels along the motion axis, across the whole frame


def bouncing_track(direction: str, rng: np.random.Generator, num_frames: int, size_px: int, speed: float,
                   first_bounce_within: float, occluder: bool = False) -> Track:
    """A shape that starts towards `direction` at `speed` px a frame and bounces off the frame's edges: its centre
    is reflected at side/2 from each edge, where it touches that edge. The first bounce comes after a time drawn
    from [3, first_bounce_within] frames. With `occluder`, a bar a little wider than the shape lies across its
    path near the frame's middle: the shape is wholly behind it for a few frames."""
    side = rng.uniform(0.25, 0.35) * size_px
    ux, uy = DIRECTION_VECTORS[direction]
    sign = ux + uy
    lo, hi = side / 2, size_px - side / 2
    # Frames before the first bounce: 3 or more, so that a reader at stride 2 sees it start the caption's way.
    within = max(float(first_bounce_within), 1.0)
    bounce_in = rng.uniform(min(3.0, within), within)
    start = float(np.clip(hi - speed * bounce_in if sign > 0 else lo + speed * bounce_in, lo, hi))
    across = rng.uniform(side / 2 + 1, size_px - side / 2 - 1)
    along = reflect(start + sign * speed * np.arange(num_frames), lo, hi)  # t
    centers = np.stack([along, np.full(num_frames, across)] if ux else [np.full(num_frames, across), along], 1)
    return Track(centers, side, bool(ux), occluding_bar(rng, side, size_px) if occluder else None)


def occluding_bar(rng: np.random.Generator, side: float, size_px: int) -> tuple[int, int]:
    """[start, stop) pixels of a bar near the frame's middle, a little wider than the shape: wholly behind it
    for a frame or two at the dataset's speed."""
    width = side + rng.uniform(0.05, 0.1) * size_px
    middle = rng.uniform(0.35, 0.65) * size_px
    return max(0, int(round(middle - width / 2))), min(size_px, int(round(middle + width / 2)))


def bar_on_path(track: Track, rng: np.random.Generator, size_px: int, toward_high: bool) -> tuple[int, int] | None:
    """[start, stop) pixels of a bar that the clip's shape crosses (seen partly before it, then partly or wholly
    past it) and that is clear of the turn at the edge it first heads for (`toward_high`: the far edge): None if the
    clip moves too little for both. As wide as the shape (its ends rounded down: to within a pixel) or up to 0.05 of
    the frame wider, so most can hide it wholly."""
    along = track.centers[:, 0 if track.horizontal else 1]  # t: along the motion axis
    u = along if toward_high else size_px - along  # t: mirrored so the shape first heads for u = size_px
    width = track.side + rng.uniform(0.0, 0.05) * size_px
    # The bar's near end 1 px past the shape's near edge where it comes closest (it starts partly before the bar),
    # its far end 1 px short of the shape's near edge at the turn (it turns clear of the bar).
    lo, hi = u.min() - track.side / 2 + 1, u.max() - track.side / 2 - 1 - width
    if hi <= lo:
        return None
    start = rng.uniform(lo, hi)
    a, b = int(np.floor(start)), int(np.floor(start + width))
    return (a, b) if toward_high else (size_px - b, size_px - a)


def moving_track(direction: str, rng: np.random.Generator, num_frames: int, size_px: int, speed: float,
                 occluder: bool = False) -> Track:
    """A shape that moves straight at `speed` px a frame for any number of frames, placed as render_clip places
    it (room for 0.4 of the frame ahead of it) and leaving the frame when it reaches the edge: the ground truth
    of a long `moving` video."""
    side = rng.uniform(0.25, 0.35) * size_px
    ux, uy = DIRECTION_VECTORS[direction]
    lo, hi = side / 2 + 1, size_px - side / 2 - 1
    along = rng.uniform(lo, hi - 0.4 * size_px)
    across = rng.uniform(lo, hi)
    start = along if (ux + uy) > 0 else size_px - along
    path = start + (ux + uy) * speed * np.arange(num_frames)  # t
    centers = np.stack([path, np.full(num_frames, across)] if ux else [np.full(num_frames, across), path], 1)
    return Track(centers, side, bool(ux), occluding_bar(rng, side, size_px) if occluder else None)


def draw_track(color: str, shape: str, track: Track, size_px: int) -> np.ndarray:
    """The frames of a track as uint8 t h w 3: the shape on black, and the bar drawn over it (it is in front)."""
    frames = np.zeros((len(track.centers), size_px, size_px, 3), np.uint8)  # t h w c
    for i, (cx, cy) in enumerate(track.centers):
        frames[i][shape_mask(shape, cx, cy, track.side, size_px)] = COLORS[color]
    if track.bar is not None:
        a, b = track.bar
        if track.horizontal:
            frames[:, :, a:b] = BAR_COLOR
        else:
            frames[:, a:b, :] = BAR_COLOR
    return frames


def render_long_clip(color: str, shape: str, direction: str, verb: str, rng: np.random.Generator, num_frames: int,
                     cfg, frame_stride: int = 1, occluder: bool = False) -> tuple[np.ndarray, Track]:
    """A clip of any length (uint8 t h w 3) as the dataset's shapes move, read every `frame_stride` source frames
    (as training reads them: data.frame_stride), and its track; verb: moving (it leaves the frame at the edge)
    or bouncing. The ground truth the drift score (sora/eval/drift.py) is tested on."""
    speed = speed_px(cfg.size_px, cfg.num_frames) * frame_stride
    if verb == "bouncing":
        track = bouncing_track(direction, rng, num_frames, cfg.size_px, speed, (cfg.num_frames - 1) / frame_stride,
                               occluder)
    else:
        track = moving_track(direction, rng, num_frames, cfg.size_px, speed, occluder)
    return draw_track(color, shape, track, cfg.size_px), track


def bouncing_clip_track(direction: str, rng: np.random.Generator, cfg, occluder: bool = False) -> Track:
    """The track of one bouncing clip of the dataset (cfg: MovingShapesArgs). With a bar placed on the path, a
    track the bar cannot be crossed in (its shape moves too little) is drawn again."""
    on_path = occluder and cfg.occluder_placement == "path"
    while True:
        track = bouncing_track(direction, rng, cfg.bouncing_num_frames, cfg.size_px,
                               speed_px(cfg.size_px, cfg.num_frames), cfg.num_frames - 1, occluder and not on_path)
        if not on_path:
            return track
        track.bar = bar_on_path(track, rng, cfg.size_px, toward_high=sum(DIRECTION_VECTORS[direction]) > 0)
        if track.bar is not None:
            return track


def render_bouncing_clip(color: str, shape: str, direction: str, rng: np.random.Generator, cfg,
                         occluder: bool = False) -> tuple[np.ndarray, Track]:
    """One bouncing clip of the dataset (cfg: MovingShapesArgs) as uint8 t h w 3, and its track."""
    track = bouncing_clip_track(direction, rng, cfg, occluder)
    return draw_track(color, shape, track, cfg.size_px), track


# ---------------------------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------------------------


def _write_shards(out_dir: Path, prefix: str, items: list, clips_per_shard: int, cfg, rng) -> int:
    """Shards of `items`, (verb, color, shape, direction) each, in an order drawn from rng; the number written.
    Moving clips draw from rng exactly as they did before bouncing clips existed."""
    order = rng.permutation(len(items))  # mix combinations across shards
    num_shards = max(1, -(-len(items) // clips_per_shard))
    for shard in range(num_shards):
        with wds.TarWriter(str(out_dir / f"{prefix}-{shard:06d}.tar")) as sink:
            for j in order[shard * clips_per_shard : (shard + 1) * clips_per_shard]:
                verb, color, shape, direction = items[j]
                if verb == "moving":
                    frames = render_clip(color, shape, direction, rng, cfg.num_frames, cfg.size_px)
                    meta = dict(fps=cfg.fps, num_frames=cfg.num_frames, height=cfg.size_px, width=cfg.size_px,
                                color=color, shape=shape, direction=direction)
                    text = caption(color, shape, direction)
                else:
                    occluder = bool(rng.random() < cfg.occluder_share) if cfg.occluder_share > 0 else False
                    frames, track = render_bouncing_clip(color, shape, direction, rng, cfg, occluder)
                    meta = dict(fps=cfg.fps, num_frames=cfg.bouncing_num_frames, height=cfg.size_px,
                                width=cfg.size_px, color=color, shape=shape, direction=direction, motion=verb,
                                occluder=list(track.bar) if track.bar else None)
                    text = caption(color, shape, direction, verb, bar=bool(track.bar) and cfg.occluder_in_caption)
                sink.write({"__key__": f"{prefix}{j:07d}", "mp4": encode_mp4(frames, cfg.fps), "txt": text,
                            "json": json.dumps(meta)})
    return num_shards


def clip_counts(cfg) -> tuple[int, int]:
    """(moving, bouncing) clips of each training combination: clips_per_combo split by bouncing_share."""
    bouncing = int(round(cfg.bouncing_share * cfg.clips_per_combo))
    return cfg.clips_per_combo - bouncing, bouncing


def _settings(cfg) -> dict:
    out = dict(clips_per_combo=cfg.clips_per_combo, clips_per_shard=cfg.clips_per_shard,
               num_frames=cfg.num_frames, size_px=cfg.size_px, fps=cfg.fps, seed=cfg.seed)
    if cfg.bouncing_share > 0:  # only then: a copy written before bouncing clips existed still matches
        out.update(bouncing_share=cfg.bouncing_share, bouncing_num_frames=cfg.bouncing_num_frames,
                   occluder_share=cfg.occluder_share)
        if cfg.occluder_placement != "middle":  # only then: a copy written before the setting existed still matches
            out.update(occluder_placement=cfg.occluder_placement)
        if cfg.occluder_in_caption:  # likewise
            out.update(occluder_in_caption=True)
    return out


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


BOUNCING_PROMPTS = "heldout_bouncing_prompts.txt"  # the bouncing verb's held-out prompts, in the dataset's root
BAR_PROMPTS = "heldout_bouncing_bar_prompts.txt"  # ... ending `behind a bar` (occluder_in_caption only)


def write_moving_shapes(cfg, where: str = "data.moving_shapes.root") -> Path:
    """Write train and held-out test shards plus prompt files under `cfg.root`, atomically (a temp dir, renamed)."""
    check_root(cfg.root, where)
    root = Path(cfg.root)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(cfg.seed)
    n_moving, n_bouncing = clip_counts(cfg)
    n_test = max(1, cfg.clips_per_combo // 4)
    train = [("moving", *c) for c in TRAIN_COMBOS for _ in range(n_moving)]
    train += [("bouncing", *c) for c in TRAIN_COMBOS_BOUNCING for _ in range(n_bouncing)]
    n_train_shards = _write_shards(tmp, "train", train, cfg.clips_per_shard, cfg, rng)
    test = [("moving", *c) for c in HELDOUT for _ in range(n_test)]
    n_test_shards = _write_shards(tmp, "test", test, cfg.clips_per_shard, cfg, rng)
    (tmp / "heldout_prompts.txt").write_text("".join(caption(*c) + "\n" for c in HELDOUT))
    # Eight training combinations spread over colours, shapes and directions, for the train-set figures.
    picks = [TRAIN_COMBOS[i] for i in np.linspace(0, len(TRAIN_COMBOS) - 1, 8).round().astype(int)]
    (tmp / "train_prompts.txt").write_text("".join(caption(*c) + "\n" for c in picks))
    info = dict(train_shards=n_train_shards, test_shards=n_test_shards, train_clips=len(train), config=_settings(cfg))
    if n_bouncing:  # in their own shards: data.eval_shards (test-*.tar) and the prompting modes read moving clips
        test = [("bouncing", *c) for c in HELDOUT_BOUNCING for _ in range(n_test)]
        info["test_bouncing_shards"] = _write_shards(tmp, "test_bouncing", test, cfg.clips_per_shard, cfg, rng)
        (tmp / BOUNCING_PROMPTS).write_text("".join(caption(*c, "bouncing") + "\n" for c in HELDOUT_BOUNCING))
        if cfg.occluder_in_caption:
            (tmp / BAR_PROMPTS).write_text("".join(caption(*c, "bouncing", bar=True) + "\n" for c in HELDOUT_BOUNCING))
    (tmp / "info.json").write_text(json.dumps(info, indent=1))
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
