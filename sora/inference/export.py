"""Export a trained DiT checkpoint's EMA weights (plus the frozen VAE) to safetensors, with the resolved config.

    python -m sora.inference.export RUN/checkpoints/last.ckpt model.safetensors          # EMA weights (default)
    python -m sora.inference.export RUN/checkpoints/last.ckpt model.safetensors --raw    # the raw training weights
    python sample.py ckpt=model.safetensors prompt="a red circle moving left" out=x.mp4
    python -m sora.inference.export base.safetensors merged.safetensors --merge-lora RUN/lora_ema.safetensors

A LoRA run's checkpoint (train.lora.rank > 0) exports its base with the adapter merged in. `--merge-lora FILE`
merges our LoRA file (sora/models/lora.py) into the weights of a checkpoint or of an export: W + (alpha/rank) B A.
    python -m sora.inference.export RUN/checkpoints/last.ckpt OUT_DIR --format diffusers  # a Wan DiT for others

safetensors holds tensors and string metadata only, so loading it can never run code. The file stores
`dit.*`, `vae.*` and (for the built-in trainable text encoder) `text.*` tensors; the metadata holds the
resolved config (`sora_config`, JSON), the training step and which weights were exported (ModelBundle.save).
With `--format diffusers|wan|comfyui` a DiT of Wan2.1's architecture (started with `dit.init_from`, docs/WAN.md)
is written as diffusers' WanTransformer3DModel folder, the original Wan2.1 folder or ComfyUI's single file
(sora/models/wan.py: save_wan); the input may then also be an export (.safetensors).
"""

import json
import sys
from pathlib import Path

from sora.data.video_io import check_writable
from sora.errors import ArgumentParser, SoraError, exit_on_user_error
from sora.inference.bundle import ModelBundle
from sora.inference.checkpoint import load_checkpoint


def export(ckpt_path: str, out_path: str, ema: bool = True, merge_lora: str | None = None) -> dict:
    if str(ckpt_path).endswith(".safetensors") and not merge_lora:
        raise SoraError(f"{ckpt_path!r} is an export already; export reads a training checkpoint (.ckpt), or an "
                        "export with --merge-lora FILE")
    # sample.py and eval read a file by its name: .safetensors is an export, anything else a torch checkpoint
    if not str(out_path).endswith(".safetensors"):
        raise SoraError(f"out={str(out_path)!r}: an export's name ends in .safetensors (sample.py's ckpt= reads it "
                        "by that)")
    check_writable(out_path, "out")
    bundle = ModelBundle.from_checkpoint(ckpt_path, ema=ema)
    if merge_lora:
        bundle.with_lora(merge_lora, at="--merge-lora")
    # memory-mapped: reads the small pickle only
    step = None if str(ckpt_path).endswith(".safetensors") else load_checkpoint(ckpt_path).get("global_step", 0)
    return bundle.save(out_path, step=step, source=str(ckpt_path))


def export_wan(ckpt_path: str, out_path: str, fmt: str, ema: bool = True) -> dict:
    """The DiT of a checkpoint or export as a Wan2.1 checkpoint (diffusers, wan or comfyui layout)."""
    from sora.models.wan import save_wan

    if fmt == "comfyui":
        if not str(out_path).endswith(".safetensors"):
            raise SoraError(f"out={str(out_path)!r}: a ComfyUI checkpoint is one file whose name ends in .safetensors")
        check_writable(out_path, "out")
    elif Path(out_path).is_file():
        raise SoraError(f"out={str(out_path)!r} is a file; --format {fmt} writes a folder (config.json + weights)")
    bundle = ModelBundle.from_checkpoint(ckpt_path, ema=ema)
    return save_wan(bundle.dit, out_path, fmt)


@exit_on_user_error
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m sora.inference.export", description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt")
    p.add_argument("out")
    p.add_argument("--raw", action="store_true", help="export the raw training weights instead of the EMA")
    p.add_argument("--merge-lora", metavar="FILE", help="merge this LoRA file (ours) into the DiT's weights")
    p.add_argument("--format", choices=["sora", "diffusers", "wan", "comfyui"], default="sora",
                   help="sora: our export; diffusers / wan / comfyui: the DiT alone as a Wan2.1 checkpoint")
    a = p.parse_args(argv)
    if a.format != "sora":
        if a.merge_lora:
            raise SoraError("--merge-lora writes our export: merge first (--format sora), then export that file with "
                            f"--format {a.format}")
        print(json.dumps(export_wan(a.ckpt, a.out, a.format, ema=not a.raw)))
        return 0
    print(json.dumps(export(a.ckpt, a.out, ema=not a.raw, merge_lora=a.merge_lora)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
