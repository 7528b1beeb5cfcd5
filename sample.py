"""Sample videos from a checkpoint (EMA weights by default); every video carries a signed C2PA manifest and an
invisible watermark (provenance.c2pa=false / provenance.watermark=false turn them off; see README).

    python sample.py ckpt=PATH prompt="a red circle moving left" out=x.mp4 seed=0   # or out=x.gif, out=x.webm
    python sample.py ckpt=PATH prompts=FILE out_dir=DIR seed=0      # DIR/000.mp4, 001.mp4, ... in order
    python sample.py ckpt=PATH prompt=... out=x.mp4 image=still.png                     # animate a still
    python sample.py ckpt=PATH prompt=... out=x.mp4 video=clip.mp4 extend=forward       # continue a clip
    python sample.py ckpt=PATH prompt=... out=x.mp4 loop=true | connect=[a.mp4,b.mp4] | keyframes=[0:a.png,7:b.png]
    python sample.py ckpt=PATH prompt=... out=x.mp4 edit=clip.mp4 strength=0.6           # SDEdit
    python sample.py ckpt=PATH prompt="a cat" out=x.mp4 expand=LLM_DIR [expand_examples=SHARDS]  # prompt expansion
    python sample.py ckpt=PATH prompt=... out=x.mp4 num_frames=240 long.latent_context=true long.stream=true
    python sample.py ckpt=PATH window_prompts="[a red circle moving left,a red circle moving right]" out=x.mp4 ...
    python sample.py ckpt=BASE prompt=... out=x.mp4 lora=RUN/lora_ema.safetensors         # with a LoRA merged in

Frames, size, steps, guidance, sampler and schedule default to the checkpoint's; num_frames=, height=, width=,
steps=, cfg=, cfg_visual=, sampler=, schedule=, shift=, fps= override them. num_frames beyond what the model
trained on is made window by window (overlap_frames= each window is given from the one before; long.* switches:
the previous window's latents as history, context noise, history guidance, a rolling schedule, writing window by
window; window_prompts= / window_prompts_file= a prompt per window; docs/SAMPLING.md). The pipeline
checks the sizes against the checkpoint (sora/inference/pipeline.py), before the first step. `out`'s extension is
the format: .mp4 (H.264), .gif, .webm (VP9; C2PA cannot sign WebM, so it carries the watermark alone). Frames too
small to hold the watermark (sora/provenance/watermark.py MIN_FRAME_PX) carry none, and their manifest says so.
expand= rewrites each prompt as a caption like the training captions with a local instruct model
(sora/inference/expand.py; docs/SAMPLING.md, "Prompt expansion") before sampling; the manifest records both.
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


def read_lines(path: str, key: str) -> list[str]:
    """The non-empty lines of a text file named by the setting `key` (one-line SoraError otherwise)."""
    if not Path(path).is_file():
        raise SoraError(f"{key}={path!r} is not a file (one prompt a line)")
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise SoraError(f"{key}={path!r} is not a text file (one prompt a line)") from None
    if not lines:
        raise SoraError(f"{key}={path!r} holds no prompt")
    return lines


def resolve_jobs(cfg) -> tuple[list, list[Path]]:
    """The prompts and the file each goes to, from prompt/out, prompts/out_dir or window_prompts/out (one video, a
    prompt a window: its prompt is the list); the files' names and places are checked here, before the checkpoint
    loads."""
    if cfg.prompt is not None or cfg.window_prompts is not None or cfg.window_prompts_file is not None:
        video_format(cfg.out, "out")
        check_writable(cfg.out, "out")
        if cfg.prompt is not None:
            return [cfg.prompt], [Path(cfg.out)]
        story = list(cfg.window_prompts) if cfg.window_prompts is not None else \
            read_lines(cfg.window_prompts_file, "window_prompts_file")
        if not story:
            raise SoraError("window_prompts=[] holds no prompt")
        return [story], [Path(cfg.out)]
    prompts = read_lines(cfg.prompts, "prompts")
    outs = [Path(cfg.out_dir) / f"{i:03d}.mp4" for i in range(len(prompts))]
    if Path(cfg.out_dir).exists() and not Path(cfg.out_dir).is_dir():
        raise SoraError(f"out_dir={cfg.out_dir!r} is a file, not a folder")
    check_writable(outs[0], "out_dir")
    return prompts, outs


def expand_prompts(cfg, train_shards: str, prompts: list[str], device) -> tuple[list[str], dict]:
    """(the prompts expanded by cfg.expand's model, what the manifest says about it), few-shot from the captions of
    cfg.expand_examples or else the checkpoint's training shards; the model is released before sampling."""
    import torch

    from sora.inference.expand import PromptExpander, shard_captions

    examples = []
    if cfg.expand_k:
        pattern, key = ((cfg.expand_examples, "expand_examples") if cfg.expand_examples else
                        (train_shards, "the checkpoint's data.shards (expand_examples=SHARDS reads others)"))
        examples = shard_captions(pattern, key)
    expander = PromptExpander(cfg.expand, examples, cfg.expand_k, cfg.expand_max_new_tokens,
                              batch_size=cfg.batch_size, device=str(device))
    expanded, record = expander.expand(prompts), expander.record
    del expander
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the language model's memory goes back before the DiT samples
    return expanded, record


def sample(cfg) -> list[Path]:
    from omegaconf import OmegaConf

    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings, check_prompts, check_settings, generate_to_files, per_window
    from sora.inference.prompting import load, make_pieces, windows_of

    check_sample_config(cfg)
    if not str(cfg.ckpt).strip():
        raise SoraError("ckpt='' is empty: give a training checkpoint (.ckpt) or an export (.safetensors)")
    prompts, outs = resolve_jobs(cfg)
    prompts = check_prompts(prompts)  # before the checkpoint loads: a bad prompt fails at once
    if cfg.expand:
        from sora.inference.expand import check_expander_dir

        check_expander_dir(cfg.expand)  # a folder of the wrong kind fails before the checkpoint loads too
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
        overlap_frames=cfg.overlap_frames, long=OmegaConf.to_object(cfg.long))
    check_settings(bundle, settings)  # the sizes and the long.* switches against the checkpoint, before any file
    visual = load(settings, bundle.cfg.data.frame_stride, cfg.image, cfg.image_at, cfg.video, cfg.extend, cfg.loop,
                  cfg.connect, list(cfg.keyframes), cfg.edit, cfg.strength)
    per_window(prompts, windows_of(settings, visual))  # a prompt per window: as many as there are windows
    user_prompts, expander = None, None
    if cfg.expand:
        user_prompts, (prompts, expander) = prompts, expand_prompts(cfg, bundle.cfg.data.shards, prompts, device)
    log.info("sampling %d video(s) (%s) with the %s weights: %s", len(prompts), visual.mode, bundle.weights,
             settings.as_dict())
    t0 = time.time()
    generate_to_files(bundle, prompts, outs, cfg.seed, settings, batch_size=cfg.batch_size,
                      progress=sys.stderr.isatty(), provenance=cfg.provenance, user_prompts=user_prompts,
                      expander=expander,
                      make=lambda batch, seed, callback: make_pieces(bundle, batch, seed, settings, visual, callback))
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
