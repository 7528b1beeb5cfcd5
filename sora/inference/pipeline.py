"""Generation with a ModelBundle: prompts (and frames given as a condition) -> videos.

    bundle = ModelBundle.from_checkpoint("run/checkpoints/last.ckpt")
    videos = generate(bundle, ["a red circle moving left"], seed=0, settings=SampleSettings.of(bundle.cfg))

One window is one run of the sampler over the model's latent (`generate`): text, frames given anywhere in it
(`Given`: an image to animate, the end of a clip to extend, two ends to connect, keyframes), and an optional
start from a clip's latent part-way to noise (SDEdit). Videos longer than a window are made window by window,
each conditioned on the end of the one before (`generate_long`). sora/inference/prompting.py turns files and
modes into `Given` frames.

Every size is checked where it is used, so that every caller (sample.py, evaluation, a script) fails in one line
before the first step: `generate` checks the frames it makes at once, `generate_long` the window and the overlap,
`generate_to_files` all of it and the output paths before any video is made.
"""

import logging
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from sora.data.video_io import check_writable, video_format
from sora.diffusion.frame_modes import gives_frames
from sora.diffusion.guidance import guided_velocity
from sora.diffusion.samplers import SAMPLERS
from sora.diffusion.schedules import make_schedule
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

    @classmethod
    def of(cls, cfg) -> "SampleSettings":
        s = cfg.sampler
        return cls(cfg.data.num_frames, cfg.data.height, cfg.data.width, s.steps, s.cfg, s.name, s.schedule, s.shift,
                   cfg.data.sample_fps, window_frames=cfg.data.num_frames)

    def override(self, **values) -> "SampleSettings":
        """A copy with the given values replacing these; values that are None are left as they are."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def as_dict(self) -> dict:
        return asdict(self)

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


def check_prompts(prompts: list[str], text_encoder=None) -> list[str]:
    """Strip prompts; an empty one is a user error (the empty caption is the unconditional branch of CFG). With a
    word encoder, words it never saw (they read as <unk>) and words past its text.max_tokens are named in one
    warning a prompt, once a prompt for that encoder however many windows and batches use it."""
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
    """Everything generate_long checks, at once: the sizes it makes, the overlap of its windows, and whether the
    checkpoint can make a video longer than a window."""
    s, window = settings, settings.window
    if s.num_frames <= window:
        check_size(bundle.geometry, s.num_frames, s.height, s.width)
        return
    check_size(bundle.geometry, window, s.height, s.width, ("window_frames", "height", "width"))
    if not 1 <= s.overlap < window:
        raise SoraError(f"overlap_frames={s.overlap}: each later window of a {s.num_frames}-frame video is given "
                        f"1 to {window - 1} frames of the {window}-frame window before it")
    check_given_frames(bundle, f"num_frames={s.num_frames} is more than its {window}-frame window, and each "
                               "later window is given the end of the one before")


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


@torch.no_grad()
def generate(bundle, prompts: list[str], seed: int, settings: SampleSettings, given: Given | None = None,
             start: torch.Tensor | None = None, strength: float = 1.0, callback=None) -> torch.Tensor:
    """prompts -> b 3 t h w videos in [-1, 1], t = settings.num_frames.

    given: frames given as a condition (kept as given in the output). start, strength: SDEdit (Meng et al. 2022):
    begin from the clip `start` (b 3 t h w) noised to t = strength, and integrate from there; strength 1 is
    text-to-video from the same noise, 0 returns the clip. callback(step, num_steps) follows the sampler.
    """
    prompts = check_prompts(prompts, bundle.text)
    s, b = settings, len(prompts)
    check_size(bundle.geometry, s.num_frames, s.height, s.width)
    if given is not None:
        check_given_frames(bundle, "frames given as a condition")
    if start is not None and not 0.0 <= strength <= 1.0:
        raise SoraError(f"strength must be in [0, 1], got {strength}")
    cond = bundle.encode_text(prompts)
    uncond = bundle.encode_text([""] * b)
    x = noise(bundle.geometry, b, seed, s.num_frames, s.height, s.width, bundle.device)
    if given is None:
        chain, scales = [uncond, cond], [s.cfg]
    else:  # nothing / the frames / frames and text, with a scale for each step (guidance.py)
        frames, mask = given.latents(bundle)
        frame_t = torch.zeros(b, device=x.device)  # given clean: within [0, frame_noise] of training
        visual = uncond.with_frames(frames, mask, frame_t)
        chain = [visual.without_frames(), visual, cond.with_frames(frames, mask, frame_t)]
        scales = [s.cfg_visual, s.cfg]
    times = make_schedule(s.schedule, s.steps, s.shift)
    if start is not None:  # SDEdit: the clip's latent part-way to noise, and the schedule from there down
        z = bundle.vae.encode(start.to(bundle.device), sample=False)
        x = bundle.objective.noised(z, x, torch.full((b,), strength, device=x.device))
        times = [strength] + [t for t in times if t < strength] if strength > 0 else [0.0]
    velocity_fn = guided_velocity(bundle.objective, bundle.dit, chain, scales)
    if given is not None:
        x = bundle.objective.with_given_frames(x, chain[-1])
    latent = SAMPLERS[s.sampler](velocity_fn, x, times, callback) if len(times) > 1 else x
    video = bundle.vae.decode(latent).clamp(-1, 1)
    if given is not None:  # the given frames as they were given (decoding a latent is not exact)
        video = torch.where(given.mask.to(video.device)[:, None, :, None, None], given.frames.to(video.device), video)
    return video


# ---------------------------------------------------------------------------------------------------------------
# Longer than a window
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_long(bundle, prompts: list[str], seed: int, settings: SampleSettings, given: Given | None = None,
                  backward: bool = False, callback=None) -> torch.Tensor:
    """Videos of settings.num_frames made window by window (a window is what the model trained on): each later
    window is given the last overlap_frames of the video so far and makes the rest, so memory stays that of one
    window whatever the length. `given` applies to the first window. backward: the video grows towards its
    start instead (each later window is given the first frames so far, at its end)."""
    s = settings
    window, total = s.window, s.num_frames
    check_settings(bundle, s)
    if total <= window:
        return generate(bundle, prompts, seed, s, given, callback=callback)
    overlap = s.overlap
    one = replace(s, num_frames=window)
    video = generate(bundle, prompts, seed, one, given, callback=callback)  # b 3 window h w
    parts, made, w = [video], window, 1
    while made < total:
        keep = video[:, :, :overlap] if backward else video[:, :, -overlap:]  # b 3 overlap h w: the frames so far
        blank = torch.zeros_like(video[:, :, : window - overlap])
        frames = torch.cat([blank, keep] if backward else [keep, blank], dim=2)  # b 3 window h w
        mask = torch.zeros(len(prompts), window, dtype=torch.bool)
        if backward:
            mask[:, window - overlap:] = True
        else:
            mask[:, :overlap] = True
        video = generate(bundle, prompts, seed + 7919 * w, one, Given(frames, mask), callback=callback)
        parts.append(video[:, :, : window - overlap] if backward else video[:, :, overlap:])
        made, w = made + window - overlap, w + 1
    out = torch.cat(parts[::-1] if backward else parts, dim=2)  # b 3 made h w
    return out[:, :, -total:] if backward else out[:, :, :total]


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


def generate_to_files(bundle, prompts: list[str], paths: list, seed: int, settings: SampleSettings,
                      batch_size: int = 8, progress: bool = False, make=None, provenance=None,
                      user_prompts: list[str] | None = None, expander: dict | None = None) -> list:
    """Write video i (seeded `seed + i`) of prompt i to paths[i], in batches; bf16 autocast on GPU.

    make(prompts, seed, callback) -> b 3 T h w makes a batch (default: text to video, window by window);
    sora.inference.prompting.make gives frames as a condition. provenance (a `Provenance`; default: the
    bundle config's `provenance` node, both marks on) says what each file carries: a C2PA manifest, a watermark.
    With prompt expansion (sora/inference/expand.py), `prompts` are the expanded captions the model is conditioned
    on and `user_prompts` what the user wrote; each manifest records both, and `expander` (PromptExpander.record).
    """
    from tqdm import tqdm

    from sora.provenance.stamp import Generation, Provenance, model_fingerprint, write_generated

    prompts = check_prompts(prompts, bundle.text)
    assert len(paths) == len(prompts), f"{len(paths)} output paths for {len(prompts)} prompts"
    assert user_prompts is None or len(user_prompts) == len(prompts), "one user prompt per expanded prompt"
    if batch_size < 1:
        raise SoraError(f"batch_size must be >= 1, got {batch_size}")
    for path in paths:  # before any video is made: a name in a format we do not write, or a place we cannot write
        video_format(path, "out")
        check_writable(path, "out")
    check_settings(bundle, settings)
    prov = provenance if isinstance(provenance, Provenance) else Provenance.of(provenance or bundle.cfg.provenance)
    fingerprint = model_fingerprint(bundle.tensors())
    make = make or (lambda batch, batch_seed, callback: generate_long(bundle, batch, batch_seed, settings,
                                                                      callback=callback))
    device = bundle.device
    batches = range(0, len(prompts), batch_size)
    total = len(batches) * num_windows(settings) * settings.steps
    with tqdm(total=total, desc="sampling", unit="step", disable=not progress) as bar:
        for start in batches:
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                videos = make(prompts[start : start + batch_size], seed + start, lambda step, total: bar.update(1))
            for i, (video, path) in enumerate(zip(videos, paths[start : start + batch_size]), start):
                if user_prompts is None:
                    gen = Generation(fingerprint, bundle.weights, settings.as_dict(), seed + i, prompts[i])
                else:
                    gen = Generation(fingerprint, bundle.weights, settings.as_dict(), seed + i, user_prompts[i],
                                     prompts[i], expander)
                write_generated(path, video, settings.fps, prov, gen)
    return list(paths)


def generate_to_dir(bundle, prompts: list[str], out_dir, seed: int, settings: SampleSettings, **kw) -> list:
    """Write OUT_DIR/000.mp4, 001.mp4, ... one per prompt, in order."""
    paths = [Path(out_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]
    return generate_to_files(bundle, prompts, paths, seed, settings, **kw)
