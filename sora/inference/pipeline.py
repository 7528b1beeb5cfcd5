"""Generation with a ModelBundle: prompts (and frames given as a condition) -> videos.

    bundle = ModelBundle.from_checkpoint("run/checkpoints/last.ckpt")
    videos = generate(bundle, ["a red circle moving left"], seed=0, settings=SampleSettings.of(bundle.cfg))

One window is one run of the sampler over the model's latent (`generate`): text, frames given anywhere in it
(`Given`: an image to animate, the end of a clip to extend, two ends to connect, keyframes), and an optional
start from a clip's latent part-way to noise (SDEdit). Videos longer than a window are made window by window,
each conditioned on the end of the one before (`long_video` yields the pieces, `generate_long` joins them);
`settings.long` (sora/config/schema.py LongVideoConfig) holds its switches: the previous window's latents as the
history, context noise, history guidance, a rolling schedule (sora/diffusion/rolling.py), the text guidance of
the windows after the first, and writing window by window (`generate_to_files`); a prompt may be a list, one
prompt a window. sora/inference/prompting.py turns files and modes into `Given` frames.

Every size is checked where it is used, so that every caller (sample.py, evaluation, a script) fails in one line
before the first step: `generate` checks the frames it makes at once, `generate_long` the window and the overlap,
`generate_to_files` all of it and the output paths before any video is made.
"""

import logging
import weakref
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch

from sora.config.schema import LongVideoConfig
from sora.data.video_io import check_writable, video_format
from sora.diffusion.frame_modes import gives_frames
from sora.diffusion.guidance import guided_velocity
from sora.diffusion.rolling import lags, num_rolling_steps, pyramid, rolling
from sora.diffusion.samplers import SAMPLERS
from sora.diffusion.schedules import make_schedule
from sora.diffusion.verifier import denoising_error
from sora.errors import SoraError
from sora.models.geometry import LatentGeometry
from sora.models.text import VocabTextEncoder
from sora.models.vae import encode_frames_alone

log = logging.getLogger(__name__)


@dataclass
class SampleSettings:
    """What one sampling run uses; `of(cfg)` gives the defaults a training config (a checkpoint's) implies."""

    num_frames: int
    height: int
    width: int
    steps: int
    cfg: float
    sampler: str = "euler"
    schedule: str = "uniform"
    shift: float = 3.0
    fps: int = 8
    cfg_visual: float = 1.0  # guidance toward the given frames (1: none beyond the text's)
    window_frames: int | None = None  # frames the model makes at once (None: num_frames); longer videos go by windows
    overlap_frames: int | None = None  # frames each later window is given from the one before (None: half a window)
    long: LongVideoConfig = field(default_factory=LongVideoConfig)  # the long-video switches (all off: as before)

    @classmethod
    def of(cls, cfg) -> "SampleSettings":
        s = cfg.sampler
        return cls(cfg.data.num_frames, cfg.data.height, cfg.data.width, s.steps, s.cfg, s.name, s.schedule, s.shift,
                   cfg.data.sample_fps, window_frames=cfg.data.num_frames)

    def override(self, **values) -> "SampleSettings":
        """A copy with the given values replacing these; values that are None are left as they are."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def as_dict(self) -> dict:
        """The settings a video's manifest records (long.stream says how the file was written, not what is in it:
        a streamed video is the same video, with the same watermark)."""
        out = asdict(self)
        del out["long"]["stream"]
        return out

    @property
    def window(self) -> int:
        """Frames the model makes in one run of the sampler (what it trained on)."""
        return self.window_frames or self.num_frames

    @property
    def overlap(self) -> int:
        """Frames a window is given from the video so far: overlap_frames, or half a window."""
        return self.overlap_frames if self.overlap_frames is not None else self.window // 2


# ---------------------------------------------------------------------------------------------------------------
# Checks: prompts, sizes, what the checkpoint can be given
# ---------------------------------------------------------------------------------------------------------------

_warned_prompts: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # text encoder -> prompts warned about


def check_prompts(prompts: list, text_encoder=None) -> list:
    """Strip prompts; an empty one is a user error (the empty caption is the unconditional branch of CFG). With a
    word encoder, words it never saw (they read as <unk>) and words past its text.max_tokens are named in one
    warning a prompt, once a prompt for that encoder however many windows and batches use it. A prompt may be a
    list (one prompt a window of a long video): each of its prompts is checked."""
    if any(not isinstance(p, str) for p in prompts):  # stories: one prompt a window
        return [check_prompts([p], text_encoder)[0] if isinstance(p, str) else check_prompts(list(p), text_encoder)
                for p in prompts]
    prompts = [p.strip() for p in prompts]
    for i, p in enumerate(prompts):
        if not p:
            raise SoraError(f"prompt {i} is empty; give a caption such as 'a red circle moving left'")
    if isinstance(text_encoder, VocabTextEncoder):
        warned = _warned_prompts.setdefault(text_encoder, set())
        tokenizer = text_encoder.tokenizer
        for p in dict.fromkeys(prompts):
            unknown, cut = tokenizer.unknown(p), tokenizer.cut(p)
            if p in warned or not (unknown or cut):
                continue
            warned.add(p)
            said = []
            if unknown:
                vocab = tokenizer.vocab
                shown = ", ".join(vocab[:40]) + (f", ... ({len(vocab)} in all)" if len(vocab) > 40 else "")
                said.append(f"this checkpoint's word encoder never saw {', '.join(map(repr, unknown))} (read as <unk>, "
                            f"the same unknown token for each; its text.vocab: {shown})")
            if cut:
                said.append(f"{', '.join(map(repr, cut))} come after its text.max_tokens={tokenizer.max_tokens} "
                            "and are cut")
            log.warning("prompt %r: %s", p, "; ".join(said))
    return prompts


def check_size(geometry: LatentGeometry, num_frames: int, height: int, width: int,
               keys: tuple[str, str, str] = ("num_frames", "height", "width")) -> None:
    """SoraError naming `keys` (the settings the sizes came from) unless the VAE and the patchifier cut this many
    frames of this size exactly, with the nearest sizes that they do (a VAE given other sizes makes other ones:
    a causal VAE given 16 frames decodes 13)."""
    frames_key, height_key, width_key = keys
    cs, (_, ph, pw) = geometry.spatial_compression, geometry.patch_size
    unit_h, unit_w = cs * ph, cs * pw

    def frames_ok(n: int) -> bool:
        return n >= 1 and not geometry.problems(n, unit_h, unit_w)

    if not frames_ok(num_frames):
        problem = geometry.problems(num_frames, unit_h, unit_w)[0]
        below = next((n for n in range(num_frames - 1, 0, -1) if frames_ok(n)), None)
        above = next(n for n in range(max(num_frames, 0) + 1, max(num_frames, 0) + 1024) if frames_ok(n))
        use = " or ".join(str(n) for n in (below, above) if n is not None)
        raise SoraError(f"{frames_key}={num_frames}: this checkpoint cannot make {num_frames} frames at once "
                        f"({problem}); use {use}")
    if height < 1 or width < 1 or height % unit_h or width % unit_w:
        near_h, near_w = max(unit_h, round(height / unit_h) * unit_h), max(unit_w, round(width / unit_w) * unit_w)
        raise SoraError(f"{height_key}={height}, {width_key}={width}: this checkpoint makes frames whose height "
                        f"divides by {unit_h} and width by {unit_w} (its VAE's {cs}x downsampling times the DiT's "
                        f"{ph}x{pw} patches); use {height_key}={near_h}, {width_key}={near_w}")


def check_given_frames(bundle, what: str) -> None:
    """SoraError unless the checkpoint trained with frames given (image, extension, the windows of a long video)."""
    if not gives_frames(bundle.cfg.conditioning.modes):
        raise SoraError(f"this checkpoint was trained on text alone (conditioning.modes gives no frames): it cannot be "
                        f"given frames ({what}); train with conditioning.modes.first=... and the others")


def check_settings(bundle, settings: SampleSettings) -> None:
    """Everything generate_long checks, at once: the sizes it makes, the overlap of its windows, whether the
    checkpoint can make a video longer than a window, and the long-video switches against what it trained with."""
    s, window = settings, settings.window
    check_long(bundle, s)
    if s.num_frames <= window:
        check_size(bundle.geometry, s.num_frames, s.height, s.width)
        return
    check_size(bundle.geometry, window, s.height, s.width, ("window_frames", "height", "width"))
    if not 1 <= s.overlap < window:
        raise SoraError(f"overlap_frames={s.overlap}: each later window of a {s.num_frames}-frame video is given "
                        f"1 to {window - 1} frames of the {window}-frame window before it")
    if s.long.latent_context and bundle.geometry.problems(s.overlap, s.height, s.width):
        cuts = [n for n in range(1, window) if not bundle.geometry.problems(n, s.height, s.width)]
        raise SoraError(f"long.latent_context: overlap_frames={s.overlap} is not a whole number of the model's latent "
                        f"token frames, so the previous window's latents cannot be handed over as they are; use "
                        f"overlap_frames={' or '.join(map(str, sorted(cuts, key=lambda n: abs(n - s.overlap))[:2]))}")
    check_given_frames(bundle, f"num_frames={s.num_frames} is more than its {window}-frame window, and each "
                               "later window is given the end of the one before")


def check_long(bundle, settings: SampleSettings) -> None:
    """SoraError naming the `long.*` switch a checkpoint was not trained for (its config says what it was)."""
    long, trained = settings.long, bundle.cfg
    if long.draft_frames > 0 and not gives_frames(trained.conditioning.modes):
        raise SoraError(f"long.draft_frames={long.draft_frames}: the first window is made again given frames of its "
                        "draft, and this checkpoint was trained on text alone (conditioning.modes gives no frames); "
                        "use long.draft_frames=0, or train with conditioning.modes.first=...")
    if long.draft_frames >= min(settings.window, settings.num_frames):
        raise SoraError(f"long.draft_frames={long.draft_frames}: the first window is made again given that many "
                        f"frames of its draft, and it has {min(settings.window, settings.num_frames)}; use fewer")
    shares, history_noise = trained.objective.frame_timesteps, trained.objective.history_noise
    if long.ar_step > 0:
        if shares.independent + shares.non_decreasing <= 0:
            raise SoraError(f"long.ar_step={long.ar_step}: a rolling schedule gives each frame its own timestep, and "
                            "this checkpoint trained with one timestep a clip (objective.frame_timesteps: synchronous "
                            "alone); use long.ar_step=0, or train with objective.frame_timesteps.non_decreasing > 0")
        if settings.sampler != "euler":
            raise SoraError(f"long.ar_step={long.ar_step}: the rolling schedule steps each frame by Euler; use "
                            f"sampler=euler, not {settings.sampler}")
    if long.history_guidance != 1.0 and history_noise <= 0:
        raise SoraError(f"long.history_guidance={long.history_guidance}: its unconditional branch gives the history "
                        "fully noised, which this checkpoint was never given (objective.history_noise=0); use "
                        "long.history_guidance=1, or train with objective.history_noise > 0")
    if long.context_noise > trained.conditioning.frame_noise and history_noise <= 0:
        raise SoraError(f"long.context_noise={long.context_noise}: this checkpoint was given frames at noise levels up "
                        f"to conditioning.frame_noise={trained.conditioning.frame_noise} only "
                        "(objective.history_noise=0); use at most that")


def noise(geometry: LatentGeometry, num_videos: int, seed: int, num_frames: int, height: int, width: int,
          device) -> torch.Tensor:
    """b c t h w latent noise; video i is drawn from its own generator seeded `seed + i`, so a prompt's video
    does not depend on the batch it was made in."""
    shape = geometry.latent_shape(num_frames, height, width)
    out = [torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(num_videos)]
    return torch.stack(out).to(device)


# ---------------------------------------------------------------------------------------------------------------
# Frames given as a condition
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Given:
    """Pixel frames given as a condition, in the timeline of the window to make."""

    frames: torch.Tensor  # b 3 T h w in [-1, 1] (frames not given: anything)
    mask: torch.Tensor  # b T bool: which frames are given
    history: bool = False  # the end of the video so far (a later window): settings.long applies to them

    def latents(self, bundle) -> tuple[torch.Tensor, torch.Tensor]:
        """(b z t h w latents, b t latent-frame mask) for the DiT.

        A latent frame is given when any of its pixel frames is, and whole temporal patches (the DiT's token
        frames) are given together. Pixel frames inside a given unit that the caller did not give are filled
        from the nearest given one (an image pins a still), then every given unit is encoded from its own
        frames only, as in training (sora.models.vae.encode_frames_alone).
        """
        geometry, pt = bundle.geometry, bundle.dit.patch_size[0]
        frames, mask = self.frames, self.mask.clone()
        owner = geometry.latent_index(frames.shape[2])  # T: the latent frame of each pixel frame
        t_lat = int(owner[-1]) + 1
        lat_mask = torch.stack([mask[:, owner == j].any(1) for j in range(t_lat)], dim=1)  # b t
        units = lat_mask.reshape(lat_mask.shape[0], -1, pt).any(-1)  # b u: a unit is given whole
        lat_mask = units.repeat_interleave(pt, dim=1)  # b t
        filled = fill_from_nearest(frames, mask, lat_mask[:, owner])  # b 3 T h w
        latents = encode_frames_alone(bundle.vae, filled.to(bundle.device))
        return latents, lat_mask.to(bundle.device)


def fill_from_nearest(frames: torch.Tensor, given: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Frames where `wanted` but not `given` take the nearest given frame (b 3 T h w; masks b T)."""
    out = frames.clone()
    for b in range(frames.shape[0]):
        have = given[b].nonzero().flatten()
        if len(have) == 0:
            continue
        for f in (wanted[b] & ~given[b]).nonzero().flatten().tolist():
            out[b, :, f] = frames[b, :, have[(have - f).abs().argmin()]]
    return out


# ---------------------------------------------------------------------------------------------------------------
# One window
# ---------------------------------------------------------------------------------------------------------------


GivenLatents = tuple[torch.Tensor, torch.Tensor]  # (b z t h w latent frames, b t latent-frame mask)


# Candidate c of a window (long.candidates) starts from the noise of seed + c * this, a prime: with up to 8 more
# candidates and batches of under 790 videos no two windows or videos of a batch share a noise (later windows
# are 7919 seeds apart, and 104729 c mod 7919 is 791 to 7128 for c < 9).
CANDIDATE_SEED_STRIDE = 104729
_SCORE_SEED_OFFSET = 7  # the verifier's noises: one set a window, shared by its candidates


@torch.no_grad()
def sample_latent(bundle, prompts: list[str], seed: int, settings: SampleSettings,
                  given: GivenLatents | None = None, history: bool = False, backward: bool = False,
                  start: torch.Tensor | None = None, strength: float = 1.0, callback=None) -> torch.Tensor:
    """One window's latent (b z t h w): the sampler run from noise (or SDEdit's start) under guidance; with
    long.candidates = n, run from n noises and each video's candidate the model's own denoising error ranks best
    (sora/diffusion/verifier.py) kept.

    given: latent frames given as a condition. history: they are the end of the video so far (a later window of a
    long video), so `settings.long` applies to them: context noise and history guidance; backward: the video grows
    towards its start (the rolling schedule then leads from the end).
    """
    n = settings.long.candidates
    if n == 1:
        return _sample_once(bundle, prompts, seed, settings, given, history, backward, start, strength, callback)
    cond = bundle.encode_text(prompts)
    if given is not None:  # scored against the history as given, clean: the same condition for every candidate
        cond = cond.with_frames(given[0], given[1], torch.zeros(len(prompts), device=given[0].device))
    velocity_fn = guided_velocity(bundle.objective, bundle.dit, [cond], [])  # the model under cond, unguided
    best, best_error = None, None
    for c in range(n):
        x = _sample_once(bundle, prompts, seed + CANDIDATE_SEED_STRIDE * c, settings, given, history, backward,
                         start, strength, callback)
        error = denoising_error(bundle.objective, velocity_fn, x, cond, seed + _SCORE_SEED_OFFSET)  # b
        if best is None:
            best, best_error = x, error
            continue
        better = error < best_error  # b
        best = torch.where(better[:, None, None, None, None], x, best)  # b z t h w
        best_error = torch.where(better, error, best_error)
    return best


def _sample_once(bundle, prompts: list[str], seed: int, settings: SampleSettings, given: GivenLatents | None,
                 history: bool, backward: bool, start: torch.Tensor | None, strength: float,
                 callback) -> torch.Tensor:
    """One window's latent from the noise of `seed` (sample_latent without the search)."""
    s, b, long = settings, len(prompts), settings.long
    cond = bundle.encode_text(prompts)
    uncond = bundle.encode_text([""] * b)
    x = noise(bundle.geometry, b, seed, s.num_frames, s.height, s.width, bundle.device)
    if given is None:
        chain, scales = [uncond, cond], [s.cfg]
    else:
        frames, mask = given
        frame_t = torch.zeros(b, device=x.device)  # given clean: within [0, frame_noise] of training
        if history and long.context_noise > 0:  # the history at a small noise level, with this window's noise
            frame_t = torch.full((b,), long.context_noise, device=x.device)
            frames = bundle.objective.noised(frames.to(x.dtype), x, frame_t)
        full = cond.with_frames(frames, mask, frame_t)
        if history and long.history_guidance != 1.0:  # DFoT: guide away from the history fully noised (t = 1)
            ones = torch.ones(b, device=x.device)
            chain = [uncond.with_frames(x, mask, ones), cond.with_frames(x, mask, ones), full]
            scales = [s.cfg, long.history_guidance]
        else:  # nothing / the frames / frames and text, with a scale for each step (guidance.py)
            visual = uncond.with_frames(frames, mask, frame_t)
            chain, scales = [visual.without_frames(), visual, full], [s.cfg_visual, s.cfg]
    times = make_schedule(s.schedule, s.steps, s.shift)
    if start is not None:  # SDEdit: the clip's latent part-way to noise, and the schedule from there down
        z = bundle.vae.encode(start.to(bundle.device), sample=False)
        x = bundle.objective.noised(z, x, torch.full((b,), strength, device=x.device))
        times = [strength] + [t for t in times if t < strength] if strength > 0 else [0.0]
    velocity_fn = guided_velocity(bundle.objective, bundle.dit, chain, scales)
    if given is not None:
        x = bundle.objective.with_given_frames(x, chain[-1])
    if len(times) <= 1:
        return x
    if long.ar_step > 0 and start is None:  # each token frame its own timestep: the pyramid
        pt = bundle.dit.patch_size[0]
        made = ~given[1][0, ::pt].cpu() if given is not None else torch.ones(x.shape[2] // pt, dtype=torch.bool)
        return rolling(velocity_fn, x, pyramid(times, lags(made, long.ar_step, backward), pt), callback)
    return SAMPLERS[s.sampler](velocity_fn, x, times, callback)


@torch.no_grad()
def generate(bundle, prompts: list[str], seed: int, settings: SampleSettings, given: Given | None = None,
             start: torch.Tensor | None = None, strength: float = 1.0, callback=None) -> torch.Tensor:
    """prompts -> b 3 t h w videos in [-1, 1], t = settings.num_frames.

    given: frames given as a condition (kept as given in the output). start, strength: SDEdit (Meng et al. 2022):
    begin from the clip `start` (b 3 t h w) noised to t = strength, and integrate from there; strength 1 is
    text-to-video from the same noise, 0 returns the clip. callback(step, num_steps) follows the sampler.
    """
    return _window(bundle, prompts, seed, settings, given, start=start, strength=strength, callback=callback)[1]


def _window(bundle, prompts: list[str], seed: int, settings: SampleSettings, given: Given | None = None,
            latents: GivenLatents | None = None, backward: bool = False, start: torch.Tensor | None = None,
            strength: float = 1.0, callback=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One window: (its latent, its video in [-1, 1]). given: pixel frames (encoded here); latents: latent frames
    handed over from the window before (the history: settings.long applies)."""
    prompts = check_prompts(prompts, bundle.text)
    s = settings
    check_size(bundle.geometry, s.num_frames, s.height, s.width)
    if given is not None or latents is not None:
        check_given_frames(bundle, "frames given as a condition")
    if start is not None and not 0.0 <= strength <= 1.0:
        raise SoraError(f"strength must be in [0, 1], got {strength}")
    history = latents is not None or (given is not None and given.history)
    if given is not None:
        latents = given.latents(bundle)
    latent = sample_latent(bundle, prompts, seed, s, latents, history, backward, start, strength, callback)
    video = bundle.vae.decode(latent).clamp(-1, 1)
    if given is not None:  # the given frames as they were given (decoding a latent is not exact)
        video = torch.where(given.mask.to(video.device)[:, None, :, None, None], given.frames.to(video.device), video)
    return latent, video


# ---------------------------------------------------------------------------------------------------------------
# Longer than a window
# ---------------------------------------------------------------------------------------------------------------


# A noise for the draft of long.draft_frames that no window of any video of a batch uses (window w of video i: seed
# + i + 7919 w, i < batch size).
_DRAFT_SEED_OFFSET = -7919


def _first_window(bundle, prompts: list[str], seed: int, settings: SampleSettings, given: Given | None,
                  callback=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first window: (its latent, its video). With long.draft_frames = k and nothing given, it is made from
    text (the draft), then made again given the draft's first k frames, as image= gives a frame when k = 1 (text ->
    image -> video: Emu Video, Girdhar et al. 2023), with long.redraw_cfg as its text guidance."""
    s, k = settings, settings.long.draft_frames
    if given is None and k > 0:
        draft = _window(bundle, prompts, seed + _DRAFT_SEED_OFFSET, s, callback=callback)[1]  # b 3 t h w
        frames = torch.zeros_like(draft)
        frames[:, :, :k] = draft[:, :, :k]  # the start to go on from
        mask = torch.zeros(draft.shape[0], draft.shape[2], dtype=torch.bool)  # b t
        mask[:, :k] = True
        given = Given(frames.cpu(), mask)
        s = s.override(cfg=s.long.redraw_cfg)
    return _window(bundle, prompts, seed, s, given, callback=callback)


def per_window(prompts: list, windows: int, what: str = "window_prompts") -> list[list[str]]:
    """Each window's prompts: a prompt that is a string serves every window, a list gives one prompt a window
    (a SoraError naming `what` unless it has one for each of the `windows`)."""
    for p in prompts:
        if not isinstance(p, str) and len(p) != windows:
            raise SoraError(f"{what}: {len(p)} prompts for a video of {windows} windows (one prompt a window)")
    return [[p if isinstance(p, str) else p[w] for p in prompts] for w in range(windows)]


@torch.no_grad()
def long_video(bundle, prompts: list, seed: int, settings: SampleSettings, given: Given | None = None,
               backward: bool = False, callback=None) -> Iterator[torch.Tensor]:
    """A video of settings.num_frames window by window (a window is what the model trained on), as b 3 n h w
    pieces in the order they are made: the first window, then each later window's new frames (forwards: in the
    video's order; `backward`: each piece goes before the ones made already). Each later window is given the last
    overlap_frames of the video so far and makes the rest, so memory stays that of one window whatever the
    length. `given` applies to the first window; a prompt that is a list gives one prompt a window."""
    s = settings
    window, total = s.window, s.num_frames
    check_settings(bundle, s)
    prompts = per_window(check_prompts(prompts, bundle.text), num_windows(s))
    if total <= window:
        yield _first_window(bundle, prompts[0], seed, s, given, callback)[1]
        return
    overlap, b = s.overlap, len(prompts[0])
    one = replace(s, num_frames=window)
    later = one if s.long.later_windows_cfg is None else replace(one, cfg=s.long.later_windows_cfg)  # given history
    latent, video = _first_window(bundle, prompts[0], seed, one, given, callback)  # b 3 window h w
    yield video
    made, w = window, 1
    while made < total:
        mask = torch.zeros(b, window, dtype=torch.bool)  # pixel frames given: the overlap, at the window's start
        if backward:
            mask[:, window - overlap:] = True
        else:
            mask[:, :overlap] = True
        if s.long.latent_context:  # the previous window's own latents, with no decode -> encode round trip
            g = bundle.geometry.latent_frames(overlap)
            frames = torch.zeros_like(latent)
            lat_mask = torch.zeros(b, latent.shape[2], dtype=torch.bool, device=latent.device)
            if backward:
                frames[:, :, -g:], lat_mask[:, -g:] = latent[:, :, :g], True
            else:
                frames[:, :, :g], lat_mask[:, :g] = latent[:, :, -g:], True
            latent, video = _window(bundle, prompts[w], seed + 7919 * w, later, latents=(frames, lat_mask),
                                    backward=backward, callback=callback)
        else:  # the frames so far in pixels, re-encoded as the first window's given frames are
            keep = video[:, :, :overlap] if backward else video[:, :, -overlap:]  # b 3 overlap h w
            blank = torch.zeros_like(video[:, :, : window - overlap])
            frames = torch.cat([blank, keep] if backward else [keep, blank], dim=2)  # b 3 window h w
            latent, video = _window(bundle, prompts[w], seed + 7919 * w, later, Given(frames, mask, history=True),
                                    backward=backward, callback=callback)
        new = video[:, :, : window - overlap] if backward else video[:, :, overlap:]
        need = total - made
        yield new[:, :, -need:] if backward else new[:, :, :need]
        made, w = made + window - overlap, w + 1


@torch.no_grad()
def generate_long(bundle, prompts: list, seed: int, settings: SampleSettings, given: Given | None = None,
                  backward: bool = False, callback=None) -> torch.Tensor:
    """Videos of settings.num_frames made window by window (`long_video`), joined: b 3 num_frames h w. backward:
    the video grows towards its start instead (each later window is given the first frames so far, at its end)."""
    pieces = list(long_video(bundle, prompts, seed, settings, given, backward, callback))
    return torch.cat(pieces[::-1] if backward else pieces, dim=2)


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------


def num_windows(settings: SampleSettings) -> int:
    """How many sampler runs generate_long makes for one batch."""
    window, total = settings.window, settings.num_frames
    if total <= window:
        return 1
    overlap = settings.overlap
    return 1 + -(-(total - window) // (window - overlap))


def num_steps(bundle, settings: SampleSettings) -> int:
    """Model evaluations (sampler steps) of one batch of a text-to-video long video: every window's steps, more
    under a rolling schedule (sora/diffusion/rolling.py), each window's candidates' (long.candidates) all."""
    return settings.long.candidates * _steps_of_one_candidate(bundle, settings)


def _steps_of_one_candidate(bundle, settings: SampleSettings) -> int:
    s, windows = settings, num_windows(settings)
    if s.long.ar_step == 0:
        return (windows + (s.long.draft_frames > 0)) * s.steps  # the draft of the first window too
    geometry, pt = bundle.geometry, bundle.dit.patch_size[0]
    units = geometry.latent_frames(min(s.window, s.num_frames)) // pt

    def units_given(frames: int) -> int:  # token frames given when a window's first `frames` pixel frames are
        return -(-(int(geometry.latent_index(s.window)[frames - 1]) + 1) // pt)

    given = units_given(s.overlap) if windows > 1 else 0
    first = num_rolling_steps(s.steps, units, s.long.ar_step)
    if s.long.draft_frames:  # the draft from text, then the window again with its first token frames given
        first += num_rolling_steps(s.steps, units - units_given(s.long.draft_frames), s.long.ar_step)
    return first + (windows - 1) * num_rolling_steps(s.steps, units - given, s.long.ar_step)


def generate_to_files(bundle, prompts: list, paths: list, seed: int, settings: SampleSettings,
                      batch_size: int = 8, progress: bool = False, make=None, provenance=None,
                      user_prompts: list[str] | None = None, expander: dict | None = None) -> list:
    """Write video i (seeded `seed + i`) of prompt i to paths[i], in batches; bf16 autocast on GPU. A prompt may be
    a list: one prompt a window of a long video.

    make(prompts, seed, callback) makes a batch: b 3 T h w, or its pieces in order (b 3 n h w each; default: text to
    video, window by window, `long_video`); sora.inference.prompting.make_pieces gives frames as a condition. With
    settings.long.stream each piece is written as it comes (`StreamedVideo`), else the video is written at once.
    provenance (a `Provenance`; default: the bundle config's `provenance` node, both marks on) says what each file
    carries: a C2PA manifest, a watermark. With prompt expansion (sora/inference/expand.py), `prompts` are the
    expanded captions the model is conditioned on and `user_prompts` what the user wrote; each manifest records both,
    and `expander` (PromptExpander.record).
    """
    from tqdm import tqdm

    from sora.provenance.stamp import Generation, Provenance, StreamedVideo, model_fingerprint, write_generated

    prompts = check_prompts(prompts, bundle.text)
    assert len(paths) == len(prompts), f"{len(paths)} output paths for {len(prompts)} prompts"
    assert user_prompts is None or len(user_prompts) == len(prompts), "one user prompt per expanded prompt"
    if batch_size < 1:
        raise SoraError(f"batch_size must be >= 1, got {batch_size}")
    for path in paths:  # before any video is made: a name in a format we do not write, or a place we cannot write
        video_format(path, "out")
        check_writable(path, "out")
    check_settings(bundle, settings)
    if make is None:  # a story of the wrong length, before anything runs (prompting's modes check their own)
        per_window(prompts, num_windows(settings))
    prov = provenance if isinstance(provenance, Provenance) else Provenance.of(provenance or bundle.cfg.provenance)
    fingerprint = model_fingerprint(bundle.tensors())
    make = make or (lambda batch, batch_seed, callback: long_video(bundle, batch, batch_seed, settings,
                                                                   callback=callback))
    device = bundle.device
    batches = range(0, len(prompts), batch_size)

    def generation(i: int) -> Generation:
        prompt = prompts[i] if isinstance(prompts[i], str) else "\n".join(prompts[i])  # a story: a line a window
        if user_prompts is None:
            return Generation(fingerprint, bundle.weights, settings.as_dict(), seed + i, prompt)
        return Generation(fingerprint, bundle.weights, settings.as_dict(), seed + i, user_prompts[i], prompt, expander)

    with tqdm(total=len(batches) * num_steps(bundle, settings), desc="sampling", unit="step",
              disable=not progress) as bar:
        for start in batches:
            batch_paths = paths[start : start + batch_size]
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                made = make(prompts[start : start + batch_size], seed + start, lambda step, total: bar.update(1))
                pieces = [made] if torch.is_tensor(made) else made
                if settings.long.stream:  # each piece into each video's file as it comes: memory flat in length
                    writers = [StreamedVideo(p, settings.fps, prov, generation(i))
                               for i, p in enumerate(batch_paths, start)]
                    try:
                        for piece in pieces:
                            for writer, video in zip(writers, piece):
                                writer.add(video)
                    except BaseException:
                        for writer in writers:
                            writer.abort()
                        raise
                    for writer in writers:
                        writer.close()
                    continue
                videos = torch.cat(list(pieces), dim=2)  # b 3 T h w
            for i, (video, path) in enumerate(zip(videos, batch_paths), start):
                write_generated(path, video, settings.fps, prov, generation(i))
    return list(paths)


def generate_to_dir(bundle, prompts: list[str], out_dir, seed: int, settings: SampleSettings, **kw) -> list:
    """Write OUT_DIR/000.mp4, 001.mp4, ... one per prompt, in order."""
    paths = [Path(out_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]
    return generate_to_files(bundle, prompts, paths, seed, settings, **kw)
