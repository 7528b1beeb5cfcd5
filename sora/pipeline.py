"""Text -> video generation: encode prompts, integrate the flow ODE with classifier-free guidance, decode."""

import torch
import torch.nn as nn

from sora.errors import SoraError
from sora.objective import RectifiedFlow
from sora.samplers import get_sampler


def check_prompts(prompts: list[str]) -> list[str]:
    """Strip prompts; an empty one is a user error (the empty caption is the unconditional branch of CFG)."""
    prompts = [p.strip() for p in prompts]
    for i, p in enumerate(prompts):
        if not p:
            raise SoraError(f"prompt {i} is empty; give a caption such as 'a red circle moving left'")
    return prompts


class VideoPipeline:
    """The parts a sampler needs: VAE (decode), text encoder, DiT and objective (the velocity)."""

    def __init__(self, vae: nn.Module, text: nn.Module, dit: nn.Module, objective: RectifiedFlow):
        self.vae, self.text, self.dit, self.objective = vae, text, dit, objective

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    def noise(self, num_videos: int, seed: int, num_frames: int, height: int, width: int) -> torch.Tensor:
        """b c t h w latent noise; video i is drawn from its own generator seeded `seed + i`, so a prompt's
        video does not depend on the batch it was made in."""
        shape = self.vae.latent_shape(num_frames, height, width)
        noise = [torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(num_videos)]
        return torch.stack(noise).to(self.device)

    @torch.no_grad()
    def generate(self, prompts: list[str], seed: int, num_frames: int, height: int, width: int, steps: int,
                 cfg: float, sampler: str = "euler") -> torch.Tensor:
        """prompts -> b 3 t h w videos in [-1, 1]."""
        prompts = check_prompts(prompts)
        b = len(prompts)
        context, mask = self.text(prompts)  # b m d, b m
        null_context, null_mask = self.text([""] * b)
        both_context, both_mask = torch.cat([context, null_context]), torch.cat([mask, null_mask])

        def velocity_fn(x: torch.Tensor, t: float) -> torch.Tensor:
            if cfg == 1.0:
                return self.objective.velocity(self.dit, x, torch.full((b,), t, device=x.device), context, mask)
            # Classifier-free guidance (Ho & Salimans 2022): v_u + cfg (v_c - v_u), both halves in one batch.
            tt = torch.full((2 * b,), t, device=x.device)
            v_cond, v_uncond = self.objective.velocity(self.dit, torch.cat([x, x]), tt, both_context, both_mask).chunk(2)
            return v_uncond + cfg * (v_cond - v_uncond)

        latent = get_sampler(sampler)(velocity_fn, self.noise(b, seed, num_frames, height, width), steps)
        return self.vae.decode(latent).clamp(-1, 1)



def generate_to_files(pipeline: VideoPipeline, prompts: list[str], paths: list, seed: int, num_frames: int,
                      height: int, width: int, steps: int, cfg: float, sampler: str, fps: int, batch_size: int = 8) -> list:
    """Write video i (seeded `seed + i`) of prompt i to paths[i], in batches; bf16 autocast on GPU."""
    from sora.video_io import write_mp4

    prompts = check_prompts(prompts)
    assert len(paths) == len(prompts), f"{len(paths)} output paths for {len(prompts)} prompts"
    on_gpu = pipeline.device.type == "cuda"
    for start in range(0, len(prompts), batch_size):
        with torch.autocast(pipeline.device.type, torch.bfloat16, enabled=on_gpu):
            videos = pipeline.generate(prompts[start : start + batch_size], seed + start, num_frames, height, width,
                                       steps, cfg, sampler)
        for video, path in zip(videos, paths[start : start + batch_size]):
            write_mp4(path, video, fps)
    return list(paths)


def generate_to_dir(pipeline: VideoPipeline, prompts: list[str], out_dir, seed: int, **settings) -> list:
    """Write OUT_DIR/000.mp4, 001.mp4, ... one per prompt, in order."""
    from pathlib import Path

    paths = [Path(out_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]
    return generate_to_files(pipeline, prompts, paths, seed, **settings)
