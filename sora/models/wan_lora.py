"""LoRA files others load: our LoRA file (keyed by our DiT's module names) <-> Wan's and diffusers' names.

    python -m sora.models.wan_lora export lora.safetensors out.safetensors --format comfyui|wan|diffusers
    python -m sora.models.wan_lora import their_lora.safetensors lora.safetensors [--rank 16 --target attn.qkv,...]

Our LoRA file (written by sora/training/lora.py) holds `<module>.lora_A.weight` (rank in) and `.lora_B.weight`
(out rank) for each adapted linear of our DiT, and metadata {format: sora-lora, rank, alpha, target}; the update
is W + (alpha / rank) B A (peft's scaling). Written for others:
  comfyui / wan  original Wan names under `diffusion_model.` (as ComfyUI, musubi-tuner and DiffSynth-Studio write
                 them, and diffusers' WanLoraLoaderMixin converts), with a `.alpha` scalar beside each module;
  diffusers      diffusers' names under `transformer.`, and peft's config (r, lora_alpha) in the
                 `lora_adapter_metadata` that `load_lora_adapter` reads.
Our fused q/k/v (and cross-attention k/v) linear splits exactly: its A is shared by the parts, its B split by rows,
since [B_q; B_k; B_v] A = [B_q A; B_k A; B_v A]. Import joins them back only when that is exact (the parts share one
A); a LoRA trained on separate q, k and v cannot be one of ours and is refused.
"""

import json
import re
import sys

import torch

from sora.errors import ArgumentParser, SoraError, exit_on_user_error
from sora.models.wan import D2O, FUSED, O2D, SAME, TOP, rename_module

FORMAT = "sora-lora"
PREFIX = {"comfyui": "diffusion_model.", "wan": "diffusion_model.", "diffusers": "transformer."}
_TO_ORIGINAL = {**{k: [v] for k, v in SAME.items()}, **{k: list(v) for k, v in FUSED.items()}}


def _read(path: str) -> tuple[dict, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise SoraError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None


def _original_modules(module: str, where: str) -> list[str]:
    """Our module -> the original Wan modules it holds (several for a fused linear)."""
    if module in TOP:
        return [TOP[module]]
    m = re.fullmatch(r"(blocks\.\d+\.)(.+)", module)
    if m and m.group(2) in _TO_ORIGINAL:
        return [m.group(1) + p for p in _TO_ORIGINAL[m.group(2)]]
    raise SoraError(f"{where}: {module} has no counterpart in Wan2.1 (a LoRA on it cannot be exported)")


def _modules(state: dict, where: str) -> dict:
    """{module: (A, B)} of a LoRA state dict keyed `<module>.lora_A.weight` / `.lora_B.weight`."""
    out = {}
    for key in state:
        m = re.fullmatch(r"(.+)\.lora_A\.weight", key)
        if m:
            b = f"{m.group(1)}.lora_B.weight"
            if b not in state:
                raise SoraError(f"{where}: {key} has no {b}")
            out[m.group(1)] = (state[key], state[b])
    if not out:
        raise SoraError(f"{where}: no <module>.lora_A.weight tensors: not a LoRA file")
    return out


def to_wan(state: dict, rank: int, alpha: float, fmt: str, where: str = "LoRA") -> tuple[dict, dict]:
    """Our LoRA tensors -> (tensors, metadata) under ComfyUI / Wan or diffusers names."""
    out = {}
    for module, (a, b) in _modules(state, where).items():
        parts = _original_modules(module, where)
        for part, b_part in zip(parts, b.chunk(len(parts))):  # B by rows; A shared
            name = part if fmt != "diffusers" else rename_module(part, O2D)
            out[f"{PREFIX[fmt]}{name}.lora_A.weight"] = a.clone()  # each part its own copy (safetensors shares none)
            out[f"{PREFIX[fmt]}{name}.lora_B.weight"] = b_part.contiguous()
            if fmt != "diffusers":
                out[f"{PREFIX[fmt]}{name}.alpha"] = torch.tensor(float(alpha))
    if fmt == "diffusers":
        targets = sorted({k[len(PREFIX[fmt]):].rsplit(".lora_", 1)[0].split(".", 2)[-1] for k in out})
        peft = {"transformer.r": rank, "transformer.lora_alpha": alpha, "transformer.target_modules": targets}
        return out, {"format": "pt", "lora_adapter_metadata": json.dumps(peft, sort_keys=True)}
    return out, {"format": "pt"}


def from_wan(state: dict, meta: dict, where: str) -> tuple[dict, int, float]:
    """A Wan LoRA (ComfyUI / Wan or diffusers names) -> (our LoRA tensors, rank, alpha)."""
    prefix = next((p for p in ("diffusion_model.", "transformer.") if any(k.startswith(p) for k in state)), "")
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    alphas = {k.rsplit(".", 1)[0]: float(v) for k, v in state.items() if k.endswith(".alpha")}
    lora, diffusers = {}, False
    for name, (a, b) in _modules({k: v for k, v in state.items() if not k.endswith(".alpha")}, where).items():
        if rename_module(name, O2D) is not None:  # an original Wan name (ComfyUI, musubi-tuner, DiffSynth)
            original = name
        elif (original := rename_module(name, D2O)) is not None:  # a diffusers name
            diffusers = True
        else:
            raise SoraError(f"{where}: {prefix}{name} is no linear of a Wan2.1 transformer")
        lora[original] = (a, b, alphas.get(name))
    ranks = {a.shape[0] for a, _, _ in lora.values()}
    if len(ranks) > 1:
        raise SoraError(f"{where}: modules of ranks {sorted(ranks)}; our LoRA has one rank")
    rank = ranks.pop()
    found = {x for _, _, x in lora.values()}
    if diffusers:
        peft = json.loads(meta.get("lora_adapter_metadata", "{}"))
        found = {peft.get("transformer.lora_alpha", peft.get("lora_alpha", rank))}
    found = {rank if x is None else x for x in found}
    if len(found) > 1:
        raise SoraError(f"{where}: modules with different alphas {sorted(found)}; our LoRA has one alpha")
    alpha = float(found.pop())
    out = {}
    ours_of = {p: (ours, parts) for ours, parts in _TO_ORIGINAL.items() for p in parts}
    ours_of.update({v: (k, [v]) for k, v in TOP.items()})
    done = set()
    for original in lora:
        m = re.fullmatch(r"(blocks\.\d+\.)?(.+)", original)
        block, local = m.group(1) or "", m.group(2)
        if local not in ours_of or (not block and local not in TOP.values()):
            raise SoraError(f"{where}: {prefix}{original} has no counterpart in our DiT")
        ours, parts = ours_of[local]
        if block + ours in done:
            continue
        names = [block + p for p in parts]
        missing = [n for n in names if n not in lora]
        if missing:
            raise SoraError(f"{where}: {prefix}{original} is adapted but {prefix}{missing[0]} is not; our fused "
                            f"{ours} takes a LoRA on all of {', '.join(parts)} or none")
        a0 = lora[names[0]][0]
        for n in names[1:]:
            if not torch.equal(lora[n][0], a0):
                raise SoraError(f"{where}: {prefix}{names[0]} and {prefix}{n} have different lora_A: LoRAs trained "
                                f"on separate linears cannot join into our fused {ours} exactly")
        out[f"{block}{ours}.lora_A.weight"] = a0.contiguous()
        out[f"{block}{ours}.lora_B.weight"] = torch.cat([lora[n][1] for n in names]).contiguous()
        done.add(block + ours)
    return out, rank, alpha


def _matches(module: str, pattern: str) -> bool:
    """peft's rule for a target name: the module's name is it, or ends with '.' + it."""
    return module == pattern or module.endswith("." + pattern)


def check_run(state: dict, rank: int, where: str, want_rank: int | None, want_target: str | None) -> None:
    """Refuse a LoRA of another rank or other target modules than the run's, naming the file and the key."""
    mods = _modules(state, where)
    if want_rank is not None and rank != want_rank:
        key = min(mods)
        raise SoraError(f"{where}: {key}.lora_A.weight has rank {rank}; the run's train.lora.rank is {want_rank}")
    if want_target:
        patterns = [p.strip() for p in want_target.split(",") if p.strip()]
        for module in mods:
            if not any(_matches(module, p) for p in patterns):
                raise SoraError(f"{where}: adapts {module}, which the run's train.lora.target ({want_target}) does "
                                "not name")


def export_lora(path: str, out: str, fmt: str) -> dict:
    """Our LoRA file -> a file under ComfyUI / Wan or diffusers names."""
    from safetensors.torch import save_file

    state, meta = _read(path)
    if meta.get("format") != FORMAT:
        raise SoraError(f"{path}: not our LoRA file (no format={FORMAT!r} metadata); lora-import reads others'")
    tensors, metadata = to_wan(state, int(meta["rank"]), float(meta["alpha"]), fmt, str(path))
    save_file(tensors, str(out), metadata=metadata)
    return {"out": str(out), "format": fmt, "tensors": len(tensors)}


def import_lora(path: str, out: str, want_rank: int | None = None, want_target: str | None = None) -> dict:
    """A Wan LoRA file (ComfyUI / Wan or diffusers names) -> our LoRA file, checked against the run's rank and
    target when given."""
    from safetensors.torch import save_file

    state, meta = _read(path)
    ours, rank, alpha = from_wan(state, meta, str(path))
    check_run(ours, rank, str(path), want_rank, want_target)
    targets = sorted({re.sub(r"^blocks\.\d+\.", "", k.rsplit(".lora_", 1)[0]) for k in ours})
    save_file(ours, str(out), metadata={"format": FORMAT, "rank": str(rank), "alpha": repr(alpha),
                                        "target": ",".join(targets)})
    return {"out": str(out), "rank": rank, "alpha": alpha, "target": ",".join(targets)}


@exit_on_user_error
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m sora.models.wan_lora", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="our LoRA file -> ComfyUI / Wan or diffusers names")
    e.add_argument("file")
    e.add_argument("out")
    e.add_argument("--format", choices=["comfyui", "wan", "diffusers"], default="comfyui")
    i = sub.add_parser("import", help="a Wan LoRA (ComfyUI / Wan or diffusers names) -> our LoRA file")
    i.add_argument("file")
    i.add_argument("out")
    i.add_argument("--rank", type=int, default=None, help="the run's train.lora.rank: a LoRA of another is refused")
    i.add_argument("--target", default=None, help="the run's train.lora.target (comma list), checked the same way")
    a = p.parse_args(argv)
    if a.command == "export":
        print(json.dumps(export_lora(a.file, a.out, a.format)))
    else:
        print(json.dumps(import_lora(a.file, a.out, a.rank, a.target)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
