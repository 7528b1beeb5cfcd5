"""Generation with a ModelBundle: prompts (and frames given as a condition) -> videos.

    bundle = ModelBundle.from_checkpoint("run/checkpoints/last.ckpt")
    videos = generate(bundle, ["a red circle moving left"], seed=0, settings=SampleSettings.of(bundle.cfg))

One window is one run of the sampler over the model's latent (`generate`): text, frames given anywhere in it
(`Given`: an image to animate, the end of a clip to extend, two ends to connect, keyframes), and an optional
start from a clip's latent part-way to noise (SDEdit). Videos longer than a window are made window by window,
each conditioned on the end of the one before (`generate_long`). sora/inference/prompting.py turns files and
modes into `Given` frames.
"""

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from sora.diffusion.guidance import guided_velocity
from sora.diffusion.samplers import SAMPLERS
from sora.diffusion.schedules import make_schedule
from sora.errors import SoraError
from sora.models.geometry import LatentGeometry
from sora.models.vae import encode_frames_alone


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


def check_prompts(prompts: list[str]) -> list[str]:
    """Strip prompts; an empty one is a user error (the empty caption is the unconditional branch of CFG)."""
    prompts = [p.strip() for p in prompts]
    for i, p in enumerate(prompts):
        if not p:
            raise SoraError(f"prompt {i} is empty; give a caption such as 'a red circle moving left'")
    return prompts


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
    prompts = check_prompts(prompts)
    s, b = settings, len(prompts)
    cond = bundle.encode_text(prompts)
    uncond = bundle.encode_text([""] * b)
    x = noise(bundle.geometry, b, seed, s.num_frames, s.height, s.width, bundle.device)
    if given is None:
        chain, scales = [uncond, cond], [s.cfg]
    else:  # nothing / the frames / frames and text, with a scale for each step (guidance.py)
        frames, mask = given.latents(bundle)
        frame_t = torch.zeros(b, device=x.device)  # given clean: within [0, frame_noise] of training
        visual = uncond.with_frames(frames, mask, frame_t)
        chain, scales = [visual.without_frames(), visual, cond.with_frames(frames, mask, frame_t)], [s.cfg_visual, s.cfg]
    times = make_schedule(s.schedule, s.steps, s.shift)
    if start is not None:  # SDEdit: the clip's latent part-way to noise, and the schedule from there down
        assert 0.0 <= strength <= 1.0, f"strength must be in [0, 1], got {strength}"
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
                      batch_size: int = 8, progress: bool = False, make=None, provenance=None) -> list:
    """Write video i (seeded `seed + i`) of prompt i to paths[i], in batches; bf16 autocast on GPU.

    make(prompts, seed, callback) -> b 3 T h w makes a batch (default: text to video, window by window);
    sora.inference.prompting.make gives frames as a condition. provenance (a `Provenance`; default: the
    bundle config's `provenance` node, both marks on) says what each file carries: a C2PA manifest, a watermark.
    """
    from tqdm import tqdm

    from sora.provenance.stamp import Generation, Provenance, model_fingerprint, write_generated

    prompts = check_prompts(prompts)
    prov = provenance if isinstance(provenance, Provenance) else Provenance.of(provenance or bundle.cfg.provenance)
    fingerprint = model_fingerprint(bundle.tensors())
    assert len(paths) == len(prompts), f"{len(paths)} output paths for {len(prompts)} prompts"
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
                gen = Generation(fingerprint, bundle.weights, settings.as_dict(), seed + i, prompts[i])
                write_generated(path, video, settings.fps, prov, gen)
    return list(paths)


def generate_to_dir(bundle, prompts: list[str], out_dir, seed: int, settings: SampleSettings, **kw) -> list:
    """Write OUT_DIR/000.mp4, 001.mp4, ... one per prompt, in order."""
    paths = [Path(out_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]
    return generate_to_files(bundle, prompts, paths, seed, settings, **kw)
