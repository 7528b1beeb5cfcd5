"""Prompting with images and videos: files -> frames given as a condition (one mode at a time) -> videos.

    image=PATH [image_at=first|last]   animate a still
    video=PATH extend=forward|backward  continue a clip; the output is the given frames plus the new ones
    loop=true                           a video that ends where it starts
    connect=[A,B]                       a transition from clip A's end to clip B's start: A, the transition, B
    keyframes=[F:PATH,...]              images pinned at frames F of the video
    edit=PATH strength=S                re-make a clip from a new prompt (SDEdit: its latent noised to t = S)

Inputs of another size or aspect are resized to cover the video and centre-cropped, as training data is
(sora.data.buckets.resize_crop); videos are read at the checkpoint's frame stride, from their first frame. A path
that does not exist, cannot be decoded, or is too short is a one-line SoraError naming it, before anything runs.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from sora.data.buckets import resize_crop
from sora.data.decode import IMAGE_EXTENSIONS, MEDIA_EXTENSIONS, BadSample, decode_clip, read_media_info
from sora.errors import SoraError
from sora.inference.pipeline import (
    Given,
    SampleSettings,
    check_given_frames,
    generate,
    generate_long,
    long_video,
    num_windows,
    per_window,
)

# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------


def _read(path: str, key: str) -> tuple[bytes, str]:
    p = Path(path)
    if not p.is_file():
        raise SoraError(f"{key}={path!r} does not exist")
    ext = p.suffix.lower().lstrip(".")
    if ext not in MEDIA_EXTENSIONS:
        raise SoraError(f"{key}={path!r} is not an image or video file (.{ext}; expected one of "
                        f"{', '.join(MEDIA_EXTENSIONS)})")
    return p.read_bytes(), ext


def load_image(path: str, height: int, width: int, key: str = "image") -> torch.Tensor:
    """An image file (or a video's first frame) -> 3 h w in [-1, 1], resized to cover and centre-cropped."""
    data, ext = _read(path, key)
    try:
        frames = decode_clip(data, ext, 1, 1, None, vars(read_media_info(data, ext)))  # 1 h w c
    except BadSample as e:
        raise SoraError(f"{key}={path!r} cannot be decoded ({e.reason}: {e.detail})") from None
    return resize_crop(frames, height, width)[:, 0]  # 3 h w


def load_video(path: str, height: int, width: int, frame_stride: int, min_frames: int, key: str = "video",
               max_frames: int | None = None) -> torch.Tensor:
    """A video file -> 3 T h w in [-1, 1]: every frame_stride-th frame from the first (at most max_frames), resized
    to cover and centre-cropped; a SoraError when it holds fewer than min_frames such frames."""
    data, ext = _read(path, key)
    if ext in IMAGE_EXTENSIONS:
        raise SoraError(f"{key}={path!r} is an image; it needs a video (image=PATH animates a still)")
    try:
        info = read_media_info(data, ext)
        available = (info.num_frames - 1) // frame_stride + 1
        if available < min_frames:
            raise SoraError(f"{key}={path!r} is too short: {info.num_frames} frames give {available} at frame stride "
                            f"{frame_stride}, and this needs {min_frames}")
        n = available if max_frames is None else min(available, max_frames)
        frames = decode_clip(data, ext, n, frame_stride, None, vars(info))  # T h w c
    except BadSample as e:
        raise SoraError(f"{key}={path!r} cannot be decoded ({e.reason}: {e.detail})") from None
    return resize_crop(frames, height, width)  # 3 T h w


# ---------------------------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------------------------

PROMPT_MODES = ("text", "image", "extend", "loop", "connect", "keyframes", "edit")


@dataclass
class VisualPrompt:
    """What to give besides the text, as tensors in [-1, 1] (load() reads them from files). Frames and clips may
    carry a leading batch dimension, one per prompt, or none (the same for every prompt)."""

    mode: str = "text"  # one of PROMPT_MODES
    image: torch.Tensor | None = None  # (b) 3 h w: image (at image_at), loop (its start, optional)
    image_at: str = "first"  # first | last
    clip: torch.Tensor | None = None  # (b) 3 T h w: extend (its frames), edit (the clip to re-make)
    extend: str = "forward"  # forward | backward
    clips: tuple | None = None  # connect: two (b) 3 T h w clips, A then B
    keyframes: dict[int, torch.Tensor] = field(default_factory=dict)  # frame -> (b) 3 h w
    strength: float = 0.6  # edit: how far towards noise the clip goes before it is re-made

    def __post_init__(self):
        assert self.mode in PROMPT_MODES, f"mode {self.mode!r}: one of {PROMPT_MODES}"

    @property
    def gives_frames(self) -> bool:
        return self.mode not in ("text", "edit")


def check_draft_frames(settings: SampleSettings, mode: str) -> None:
    """SoraError unless long.draft_frames, if on, has a text prompt alone to make its draft from."""
    if settings.long.draft_frames and mode != "text":
        raise SoraError(f"long.draft_frames={settings.long.draft_frames} makes the first frames from text, and "
                        f"{mode}= gives the video its frames already; use long.draft_frames=0")


def load(settings: SampleSettings, frame_stride: int, image: str | None = None, image_at: str = "first",
         video: str | None = None, extend: str | None = None, loop: bool = False, connect=None, keyframes=(),
         edit: str | None = None, strength: float = 0.6) -> VisualPrompt:
    """sample.py's options -> a VisualPrompt, every file read and checked (one-line SoraError naming it)."""
    asked = [name for name, on in (("image", image and not loop), ("extend", video or extend), ("loop", loop),
                                   ("connect", connect), ("keyframes", keyframes), ("edit", edit)) if on]
    if len(asked) > 1:
        raise SoraError("give one of image=, video= with extend=, loop=, connect=, keyframes=, edit=; got "
                        f"{', '.join(asked)}")
    mode = asked[0] if asked else "text"
    check_draft_frames(settings, mode)
    if mode in ("loop", "connect", "keyframes", "edit") and settings.num_frames > settings.window:
        raise SoraError(f"{mode} makes one window of {settings.window} frames; num_frames={settings.num_frames} "
                        "longer than that is for text, image= and extend=")
    h, w = settings.height, settings.width
    if mode == "image":
        return VisualPrompt("image", image=load_image(image, h, w), image_at=image_at)
    if mode == "loop":
        return VisualPrompt("loop", image=load_image(image, h, w) if image else None)
    if mode == "extend":
        if not (video and extend):
            raise SoraError("video= and extend=forward|backward go together")
        return VisualPrompt("extend", clip=load_video(video, h, w, frame_stride, 1), extend=extend)
    if mode == "connect":
        if len(connect) != 2:
            raise SoraError(f"connect takes two clips, connect=[A,B]; got {len(connect)}")
        g = connect_frames(settings)
        return VisualPrompt("connect", clips=tuple(load_video(p, h, w, frame_stride, g, f"connect[{i}]")
                                                   for i, p in enumerate(connect)))
    if mode == "keyframes":
        pinned = {}
        for item in keyframes:
            index, _, path = str(item).partition(":")
            if not index.strip().isdigit() or not path:
                raise SoraError(f"keyframes: {item!r} is not FRAME:PATH (e.g. 0:first.png)")
            if not int(index) < settings.num_frames:
                raise SoraError(f"keyframes: frame {int(index)} is outside the video's {settings.num_frames} frames")
            pinned[int(index)] = load_image(path, h, w, "keyframes")
        return VisualPrompt("keyframes", keyframes=pinned)
    if mode == "edit":
        clip = load_video(edit, h, w, frame_stride, settings.num_frames, "edit", max_frames=settings.num_frames)
        return VisualPrompt("edit", clip=clip, strength=strength)
    return VisualPrompt()


def connect_frames(settings: SampleSettings) -> int:
    """Frames given from each clip when connecting: overlap_frames, or a quarter of a window."""
    return settings.overlap_frames if settings.overlap_frames is not None else max(1, settings.window // 4)


def _per_video(x: torch.Tensor, b: int, ndim: int) -> torch.Tensor:
    """x with a leading batch dimension of b (x may have one already)."""
    return x if x.ndim == ndim + 1 else x[None].expand(b, *x.shape).clone()


def _given(frames: torch.Tensor, at: list[int], b: int, window: int) -> Given:
    """b 3 len(at) h w frames given at pixel frames `at` of a window."""
    out = torch.zeros(b, frames.shape[1], window, *frames.shape[-2:])
    mask = torch.zeros(b, window, dtype=torch.bool)
    out[:, :, at], mask[:, at] = frames, True
    return Given(out, mask)


def windows_of(settings: SampleSettings, visual: VisualPrompt) -> int:
    """How many windows a mode makes a video in (what a prompt per window must match)."""
    if visual.mode in ("text", "image"):
        return num_windows(settings)
    if visual.mode == "extend":  # the given end of the clip and num_frames new frames
        g = min(settings.overlap, visual.clip.shape[-3])
        return num_windows(replace(settings, num_frames=settings.num_frames + g))
    return 1


def make(bundle, prompts: list, seed: int, settings: SampleSettings, visual: VisualPrompt,
         callback=None) -> torch.Tensor:
    """b 3 T h w videos of a mode, b = len(prompts) (a prompt may be a list: one a window)."""
    return torch.cat(list(make_pieces(bundle, prompts, seed, settings, visual, callback)), dim=2)


def make_pieces(bundle, prompts: list, seed: int, settings: SampleSettings, visual: VisualPrompt, callback=None):
    """The videos of a mode as b 3 n h w pieces in order: window by window for text and image (what
    settings.long.stream writes as they come, sora.inference.pipeline.long_video), one piece for the others."""
    s, b, mode = settings, len(prompts), visual.mode
    window = s.window
    if visual.gives_frames:
        check_given_frames(bundle, mode)
    check_draft_frames(s, mode)
    if mode == "text":
        return long_video(bundle, prompts, seed, s, callback=callback)
    if mode == "image":
        first = min(window, s.num_frames)  # the frames of the first window
        at = 0 if visual.image_at == "first" else first - 1
        image = _per_video(visual.image, b, 3)[:, :, None]  # b 3 1 h w
        return long_video(bundle, prompts, seed, s, _given(image, [at], b, first), callback=callback)
    if mode == "extend":
        return [_one_piece(bundle, prompts, seed, s, visual, callback)]
    return [_one_piece(bundle, per_window(prompts, 1)[0], seed, s, visual, callback)]  # one window: one prompt


def _one_piece(bundle, prompts: list, seed: int, settings: SampleSettings, visual: VisualPrompt,
               callback=None) -> torch.Tensor:
    """b 3 T h w: the modes made at once (extend joins its windows to the clip)."""
    s, b, mode = settings, len(prompts), visual.mode
    window = s.window
    one = replace(s, num_frames=window)
    if mode == "keyframes":
        at = sorted(visual.keyframes)
        frames = torch.stack([_per_video(visual.keyframes[f], b, 3) for f in at], dim=2)  # b 3 k h w
        return generate(bundle, prompts, seed, s, _given(frames, at, b, s.num_frames), callback=callback)
    if mode == "loop":  # head and tail given the same frame: the image, or a text-to-video video's first
        start = _per_video(visual.image, b, 3) if visual.image is not None else \
            generate(bundle, prompts, seed, one, callback=callback)[:, :, 0].cpu()  # b 3 h w
        frames = torch.stack([start, start], dim=2)  # b 3 2 h w
        return generate(bundle, prompts, seed + 1, one, _given(frames, [0, window - 1], b, window), callback=callback)
    if mode == "extend":
        backward = visual.extend == "backward"
        clip = _per_video(visual.clip, b, 4)  # b 3 n h w
        g = min(s.overlap, clip.shape[2])
        at = list(range(window - g, window)) if backward else list(range(g))
        given = _given(clip[:, :, :g] if backward else clip[:, :, -g:], at, b, window)
        made = generate_long(bundle, prompts, seed, replace(s, num_frames=s.num_frames + g), given,
                             backward=backward, callback=callback)  # the g given frames and num_frames new ones
        clip = clip.to(made.device)
        return torch.cat([made, clip[:, :, g:]] if backward else [clip[:, :, :-g], made], dim=2)
    if mode == "connect":
        g = connect_frames(s)
        if 2 * g >= window:
            raise SoraError(f"connect gives {g} frames of each clip, which leaves nothing to make in a window of "
                            f"{window}: lower overlap_frames")
        a, c = (_per_video(x, b, 4) for x in visual.clips)  # b 3 n h w each
        frames = torch.cat([a[:, :, -g:], c[:, :, :g]], dim=2)  # b 3 2g h w
        at = [*range(g), *range(window - g, window)]
        middle = generate(bundle, prompts, seed, one, _given(frames, at, b, window), callback=callback)
        a, c = a.to(middle.device), c.to(middle.device)
        return torch.cat([a[:, :, :-g], middle, c[:, :, g:]], dim=2)
    # edit: the clip re-made from the prompt, starting part-way to noise
    return generate(bundle, prompts, seed, s, start=_per_video(visual.clip, b, 4), strength=visual.strength,
                    callback=callback)
