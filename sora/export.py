"""Export a trained DiT checkpoint's EMA weights (plus the frozen VAE) to safetensors, with the resolved config.

    python -m sora.export RUN/checkpoints/last.ckpt model.safetensors          # EMA weights (default)
    python -m sora.export RUN/checkpoints/last.ckpt model.safetensors --raw    # the raw training weights
    python sample.py ckpt=model.safetensors prompt="a red circle moving left" out=x.mp4

safetensors holds tensors and string metadata only, so loading it can never run code. The file stores
`dit.*`, `vae.*` and (for the built-in trainable text encoder) `text.*` tensors; the metadata holds the
resolved config (`sora_config`, JSON), the training step and which weights were exported.
"""

import argparse
import json
import sys
from pathlib import Path


from sora.errors import SoraError

FORMAT = "sora-dit-v1"


def export(ckpt_path: str, out_path: str, ema: bool = True) -> dict:
    from safetensors.torch import save_file

    from sora.checkpoint import load_checkpoint, load_dit_module

    module, cfg = load_dit_module(ckpt_path)
    step = load_checkpoint(ckpt_path).get("global_step", 0)
    parts = module.ema.model if ema else module.trained
    tensors = {f"dit.{k}": v for k, v in parts["dit"].state_dict().items()}
    if "text" in parts:
        tensors.update({f"text.{k}": v for k, v in parts["text"].state_dict().items()})
    tensors.update({f"vae.{k}": v for k, v in module.vae.state_dict().items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    from sora.module import to_plain

    metadata = {"format": FORMAT, "sora_config": json.dumps(to_plain(cfg)), "step": str(step),
                "weights": "ema" if ema else "raw", "source": str(ckpt_path)}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(out)
    return {"out": str(out), "tensors": len(tensors), "step": step, "weights": metadata["weights"]}


def load_exported(path: str):
    """(DiTModule, config) from an exported file; the weights go to both the raw and the EMA copies."""
    from safetensors import safe_open

    from sora.module import DiTModule, typed

    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise SoraError(f"{path!r} is not a readable safetensors file: {str(e).splitlines()[0][:200]}") from None
    if metadata.get("format") != FORMAT:
        raise SoraError(f"{path!r} is a safetensors file but not a sora export (no {FORMAT!r} metadata)")
    cfg = typed(json.loads(metadata["sora_config"]))
    module = DiTModule(cfg, load_vae_ckpt=False)
    for prefix, targets in (("dit.", [module.trained["dit"], module.ema.model["dit"]]),
                            ("text.", [module.trained["text"], module.ema.model["text"]] if "text" in module.trained else []),
                            ("vae.", [module.vae])):
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        for target in targets:
            target.load_state_dict(state)
    return module, cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt")
    p.add_argument("out")
    p.add_argument("--raw", action="store_true", help="export the raw training weights instead of the EMA")
    a = p.parse_args(argv)
    try:
        print(json.dumps(export(a.ckpt, a.out, ema=not a.raw)))
    except SoraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
