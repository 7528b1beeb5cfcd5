"""Sample videos from a checkpoint (EMA weights by default); every video is tagged as AI-generated.

    python sample.py ckpt=PATH prompt="a red circle moving left" out=x.mp4 seed=0
    python sample.py ckpt=PATH prompts=FILE out_dir=DIR seed=0      # DIR/000.mp4, 001.mp4, ... in order

Frames, size, steps and guidance default to the checkpoint's; num_frames=, height=, width=, steps=, cfg=,
sampler= override them.
"""

import logging
import time
from pathlib import Path

import hydra
import torch

from sora.config import check_sample_values, register_schemas
from sora.errors import SoraError, exit_on_user_error

log = logging.getLogger("sora.sample")
register_schemas()


def resolve_jobs(cfg) -> tuple[list[str], list[Path]]:
    """The prompts and the file each goes to, from prompt/out or prompts/out_dir."""
    if (cfg.prompt is None) == (cfg.prompts is None):
        raise SoraError("give exactly one of prompt='...' (with out=FILE.mp4) or prompts=FILE (with out_dir=DIR)")
    if cfg.prompt is not None:
        if not cfg.out:
            raise SoraError("prompt= needs out=FILE.mp4")
        return [cfg.prompt], [Path(cfg.out)]
    if not cfg.out_dir:
        raise SoraError("prompts= needs out_dir=DIR")
    path = Path(cfg.prompts)
    if not path.is_file():
        raise SoraError(f"prompts={cfg.prompts!r} is not a file (one prompt a line)")
    prompts = [line for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise SoraError(f"prompts={cfg.prompts!r} holds no prompt")
    return prompts, [Path(cfg.out_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]


def sample(cfg) -> list[Path]:
    from sora.buckets import Bucket, check_bucket
    from sora.callbacks import sample_settings
    from sora.checkpoint import load_dit_module
    from sora.pipeline import check_prompts, generate_to_files

    check_sample_values(cfg)
    prompts, outs = resolve_jobs(cfg)
    prompts = check_prompts(prompts)  # before the checkpoint loads: a bad prompt fails at once
    try:
        device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                              "cpu" if cfg.device == "auto" else cfg.device)
    except RuntimeError as e:  # not a device string torch knows
        raise SoraError(f"device={cfg.device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SoraError(f"device={cfg.device!r}, but this torch sees no CUDA device (use device=auto or cpu)")
    module, train_cfg = load_dit_module(cfg.ckpt)
    module.to(device).setup("predict")
    pipeline = module.pipeline(ema=cfg.ema)
    s = sample_settings(train_cfg)
    for key in ("num_frames", "height", "width", "steps", "cfg", "fps"):
        if cfg[key] is not None:
            s[key] = cfg[key]
    if cfg.sampler is not None:
        s["sampler"] = cfg.sampler.value
    # The VAE and the patchifier must cut the requested size exactly, as every training bucket had to.
    check_bucket(Bucket(s["num_frames"], s["height"], s["width"]), train_cfg.vae, train_cfg.dit.patch_size,
                 "num_frames, height, width")
    log.info("sampling %d video(s): %s", len(prompts), s)
    t0 = time.time()
    generate_to_files(pipeline, prompts, outs, cfg.seed, batch_size=cfg.batch_size, **s)
    for out in outs:
        print(out, flush=True)
    log.info("wrote %d video(s) in %.1f s", len(outs), time.time() - t0)
    return outs


@hydra.main(version_base=None, config_path="configs", config_name="sample")
@exit_on_user_error
def main(cfg) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
