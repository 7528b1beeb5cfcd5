"""Sample videos from a checkpoint (EMA weights by default); every video carries a signed C2PA manifest and an
invisible watermark (provenance.c2pa=false / provenance.watermark=false turn them off; see README).

    python sample.py ckpt=PATH prompt="a red circle moving left" out=x.mp4 seed=0   # or out=x.gif, out=x.webm
    python sample.py ckpt=PATH prompts=FILE out_dir=DIR seed=0      # DIR/000.mp4, 001.mp4, ... in order
    python sample.py ckpt=PATH prompt=... out=x.mp4 image=still.png                     # animate a still
    python sample.py ckpt=PATH prompt=... out=x.mp4 video=clip.mp4 extend=forward       # continue a clip
    python sample.py ckpt=PATH prompt=... out=x.mp4 loop=true | connect=[a.mp4,b.mp4] | keyframes=[0:a.png,7:b.png]
    python sample.py ckpt=PATH prompt=... out=x.mp4 edit=clip.mp4 strength=0.6           # SDEdit
    python sample.py ckpt=BASE prompt=... out=x.mp4 lora=RUN/lora_ema.safetensors         # with a LoRA merged in

Frames, size, steps, guidance, sampler and schedule default to the checkpoint's; num_frames=, height=, width=,
steps=, cfg=, cfg_visual=, sampler=, schedule=, shift=, fps= override them. num_frames beyond what the model
trained on is made window by window (overlap_frames= each window is given from the one before). The pipeline
checks the sizes against the checkpoint (sora/inference/pipeline.py), before the first step. `out`'s extension is
the format: .mp4 (H.264), .gif, .webm (VP9; C2PA cannot sign WebM, so it carries the watermark alone). Frames too
small to hold the watermark (sora/provenance/watermark.py MIN_FRAME_PX) carry none, and their manifest says so.
"""

import logging
import sys
import time
from pathlib import Path

import hydra

from sora.config import check_sample_config, register_schemas
from sora.config.overrides import one_line_override_errors
from sora.data.video_io import check_writable, video_format
from sora.devices import resolve_device
from sora.errors import SoraError, exit_on_user_error

log = logging.getLogger("sora.sample")
register_schemas()


def resolve_jobs(cfg) -> tuple[list[str], list[Path]]:
    """The prompts and the file each goes to, from prompt/out or prompts/out_dir; the files' names and places are
    checked here, before the checkpoint loads."""
    if cfg.prompt is not None:
        video_format(cfg.out, "out")
        check_writable(cfg.out, "out")
        return [cfg.prompt], [Path(cfg.out)]
    path = Path(cfg.prompts)
    if not path.is_file():
        raise SoraError(f"prompts={cfg.prompts!r} is not a file (one prompt a line)")
    try:
        prompts = [line for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise SoraError(f"prompts={cfg.prompts!r} is not a text file (one prompt a line)") from None
    if not prompts:
        raise SoraError(f"prompts={cfg.prompts!r} holds no prompt")
    outs = [Path(cfg.out_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]
    if Path(cfg.out_dir).exists() and not Path(cfg.out_dir).is_dir():
        raise SoraError(f"out_dir={cfg.out_dir!r} is a file, not a folder")
    check_writable(outs[0], "out_dir")
    return prompts, outs


def sample(cfg) -> list[Path]:
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings, check_prompts, generate_to_files
    from sora.inference.prompting import load, make

    check_sample_config(cfg)
    if not str(cfg.ckpt).strip():
        raise SoraError("ckpt='' is empty: give a training checkpoint (.ckpt) or an export (.safetensors)")
    prompts, outs = resolve_jobs(cfg)
    prompts = check_prompts(prompts)  # before the checkpoint loads: a bad prompt fails at once
    device = resolve_device(cfg.device)
    if cfg.lora is not None and not Path(cfg.lora).is_file():
        raise SoraError(f"lora={cfg.lora!r} is not a file")
    bundle = ModelBundle.from_checkpoint(cfg.ckpt, ema=cfg.ema)
    if cfg.lora is not None:  # merged into the weights once: sampling then runs at the base model's speed
        bundle.with_lora(cfg.lora, at="lora")
    bundle = bundle.to(device)
    settings = SampleSettings.of(bundle.cfg).override(
        num_frames=cfg.num_frames, height=cfg.height, width=cfg.width, steps=cfg.steps, cfg=cfg.cfg,
        sampler=cfg.sampler, schedule=cfg.schedule, shift=cfg.shift, fps=cfg.fps, cfg_visual=cfg.cfg_visual,
        overlap_frames=cfg.overlap_frames)
    visual = load(settings, bundle.cfg.data.frame_stride, cfg.image, cfg.image_at, cfg.video, cfg.extend, cfg.loop,
                  cfg.connect, list(cfg.keyframes), cfg.edit, cfg.strength)
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


@one_line_override_errors(Path(__file__).parent / "configs", "sample")
@hydra.main(version_base=None, config_path="configs", config_name="sample")
@exit_on_user_error
def main(cfg) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
