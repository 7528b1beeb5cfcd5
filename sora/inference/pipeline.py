"""Text -> video generation with a ModelBundle: encode prompts, integrate the flow ODE under classifier-free
guidance along a timestep schedule, decode with the VAE, write mp4s.

    bundle = ModelBundle.from_checkpoint("run/checkpoints/last.ckpt")
    videos = generate(bundle, ["a red circle moving left"], seed=0, settings=SampleSettings.of(bundle.cfg))
"""

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from sora.diffusion.guidance import guided_velocity
from sora.diffusion.samplers import SAMPLERS
from sora.diffusion.schedules import make_schedule
from sora.errors import SoraError
from sora.models.geometry import LatentGeometry


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

    @classmethod
    def of(cls, cfg) -> "SampleSettings":
        s = cfg.sampler
        return cls(cfg.data.num_frames, cfg.data.height, cfg.data.width, s.steps, s.cfg, s.name, s.schedule, s.shift,
                   cfg.data.sample_fps)

    def override(self, **values) -> "SampleSettings":
        """A copy with the given values replacing these; values that are None are left as they are."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def as_dict(self) -> dict:
        return asdict(self)


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


@torch.no_grad()
def generate(bundle, prompts: list[str], seed: int, settings: SampleSettings, callback=None) -> torch.Tensor:
    """prompts -> b 3 t h w videos in [-1, 1]. `callback(step, num_steps)` follows the sampler's progress."""
    prompts = check_prompts(prompts)
    s = settings
    cond = bundle.encode_text(prompts)
    uncond = bundle.encode_text([""] * len(prompts))
    velocity_fn = guided_velocity(bundle.objective, bundle.dit, [uncond, cond], [s.cfg])
    x = noise(bundle.geometry, len(prompts), seed, s.num_frames, s.height, s.width, bundle.device)
    latent = SAMPLERS[s.sampler](velocity_fn, x, make_schedule(s.schedule, s.steps, s.shift), callback)
    return bundle.vae.decode(latent).clamp(-1, 1)


def generate_to_files(bundle, prompts: list[str], paths: list, seed: int, settings: SampleSettings,
                      batch_size: int = 8, progress: bool = False) -> list:
    """Write video i (seeded `seed + i`) of prompt i to paths[i], in batches; bf16 autocast on GPU."""
    from tqdm import tqdm

    from sora.data.video_io import write_mp4

    prompts = check_prompts(prompts)
    assert len(paths) == len(prompts), f"{len(paths)} output paths for {len(prompts)} prompts"
    device = bundle.device
    batches = range(0, len(prompts), batch_size)
    with tqdm(total=len(batches) * settings.steps, desc="sampling", unit="step", disable=not progress) as bar:
        for start in batches:
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                videos = generate(bundle, prompts[start : start + batch_size], seed + start, settings,
                                  callback=lambda step, total: bar.update(1))
            for video, path in zip(videos, paths[start : start + batch_size]):
                write_mp4(path, video, settings.fps)
    return list(paths)


def generate_to_dir(bundle, prompts: list[str], out_dir, seed: int, settings: SampleSettings, **kw) -> list:
    """Write OUT_DIR/000.mp4, 001.mp4, ... one per prompt, in order."""
    paths = [Path(out_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]
    return generate_to_files(bundle, prompts, paths, seed, settings, **kw)
