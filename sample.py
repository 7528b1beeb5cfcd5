"""Sample videos from a checkpoint (EMA weights by default); every video carries a signed C2PA manifest and an
invisible watermark (provenance.c2pa=false / provenance.watermark=false turn them off; see README).

    python sample.py ckpt=PATH prompt="a red circle moving left" out=x.mp4 seed=0
    python sample.py ckpt=PATH prompts=FILE out_dir=DIR seed=0      # DIR/000.mp4, 001.mp4, ... in order
    python sample.py ckpt=PATH prompt=... out=x.mp4 image=still.png                     # animate a still
    python sample.py ckpt=PATH prompt=... out=x.mp4 video=clip.mp4 extend=forward       # continue a clip
    python sample.py ckpt=PATH prompt=... out=x.mp4 loop=true | connect=[a.mp4,b.mp4] | keyframes=[0:a.png,7:b.png]
    python sample.py ckpt=PATH prompt=... out=x.mp4 edit=clip.mp4 strength=0.6           # SDEdit

Frames, size, steps, guidance, sampler and schedule default to the checkpoint's; num_frames=, height=, width=,
steps=, cfg=, cfg_visual=, sampler=, schedule=, shift=, fps= override them. num_frames beyond what the model
trained on is made window by window (overlap_frames= each window is given from the one before).
"""

import logging
import sys
import time
from pathlib import Path

import hydra

from sora.config import check_sample_config, register_schemas
from sora.devices import resolve_device
from sora.errors import SoraError, exit_on_user_error

log = logging.getLogger("sora.sample")
register_schemas()


def resolve_jobs(cfg) -> tuple[list[str], list[Path]]:
    """The prompts and the file each goes to, from prompt/out or prompts/out_dir."""
    if cfg.prompt is not None:
        return [cfg.prompt], [Path(cfg.out)]
    path = Path(cfg.prompts)
    if not path.is_file():
        raise SoraError(f"prompts={cfg.prompts!r} is not a file (one prompt a line)")
    prompts = [line for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise SoraError(f"prompts={cfg.prompts!r} holds no prompt")
    return prompts, [Path(cfg.out_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]


def sample(cfg) -> list[Path]:
    from sora.diffusion.frame_modes import gives_frames
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings, check_prompts, generate_to_files
    from sora.inference.prompting import load, make

    check_sample_config(cfg)
    prompts, outs = resolve_jobs(cfg)
    prompts = check_prompts(prompts)  # before the checkpoint loads: a bad prompt fails at once
    device = resolve_device(cfg.device)
    bundle = ModelBundle.from_checkpoint(cfg.ckpt, ema=cfg.ema).to(device)
    settings = SampleSettings.of(bundle.cfg).override(
        num_frames=cfg.num_frames, height=cfg.height, width=cfg.width, steps=cfg.steps, cfg=cfg.cfg,
        sampler=cfg.sampler, schedule=cfg.schedule, shift=cfg.shift, fps=cfg.fps, cfg_visual=cfg.cfg_visual,
        overlap_frames=cfg.overlap_frames)
    # The VAE and the patchifier must cut what the model makes at once exactly, as every training bucket had to.
    if settings.num_frames <= settings.window:
        bundle.geometry.check(settings.num_frames, settings.height, settings.width, "num_frames, height, width")
    bundle.geometry.check(settings.window, settings.height, settings.width, "height, width (and the trained window)")
    if settings.overlap_frames is not None and settings.overlap_frames >= settings.window:
        raise SoraError(f"overlap_frames={settings.overlap_frames} must be below the {settings.window}-frame window")
    visual = load(settings, bundle.cfg.data.frame_stride, cfg.image, cfg.image_at, cfg.video, cfg.extend, cfg.loop,
                  cfg.connect, list(cfg.keyframes), cfg.edit, cfg.strength)
    # Each window after the first of a long video is given the end of the one before, as extension is.
    long = settings.num_frames > settings.window
    if (visual.gives_frames or long) and not gives_frames(bundle.cfg.conditioning.modes):
        what = visual.mode if visual.gives_frames else f"num_frames={settings.num_frames} > its {settings.window}"
        raise SoraError(f"{cfg.ckpt!r} was trained on text alone (conditioning.modes gives no frames): it cannot be "
                        f"given frames ({what}); train with conditioning.modes.first=... and the others")
    log.info("sampling %d video(s) (%s) with the %s weights: %s", len(prompts), visual.mode, bundle.weights,
             settings.as_dict())
    t0 = time.time()
    generate_to_files(bundle, prompts, outs, cfg.seed, settings, batch_size=cfg.batch_size,
                      progress=sys.stderr.isatty(), provenance=cfg.provenance,
                      make=lambda batch, seed, callback: make(bundle, batch, seed, settings, visual, callback))
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
