"""Wan2.1 text-to-video transformers in our DiT, and back: three layouts on disk, one set of our module names.

    dit.init_from=PATH                                     start training or sampling from a local Wan2.1 T2V
    python -m sora.models.wan check PATH                   our forward against diffusers' on one input
    python -m sora.models.wan convert PATH OUT --format diffusers|wan   rewrite a checkpoint in another layout
    python -m sora.models.wan_lora export|import ...        LoRA files others load (sora/models/wan_lora.py)

Layouts read (`find_checkpoint`): diffusers' `save_pretrained` folder of a `WanTransformer3DModel` (a pipeline
folder's `transformer/` too), the original Wan2.1 folder (config.json of a `WanModel`, original key names), and
ComfyUI's single .safetensors file (original names under `model.diffusion_model.`, no config: the architecture
is read from the tensors' shapes, with Wan's 128-wide heads). Either folder may be sharded with an index json.

Our DiT with `modulation=single`, `final_modulation=table`, `qk_norm_scope=all_heads`, `mlp_width=ffn_dim`,
`text_len=512`, `pooled_text=false` and `fp32_residual=true` computes what Wan's transformer computes; the weights
map one to one, except that the Conv3d patch embedding is our linear over patchified tokens (its kernel flattened
in `patchify`'s (pt ph pw c) order) and q/k/v (k/v for cross-attention) are fused into one linear (rows stacked).
The 3D RoPE split (t takes head_dim - 4 (head_dim // 6) channels, h and w 2 (head_dim // 6) each) and the
sinusoidal time embedding (cos first, of 1000 t) are ours already.
"""

import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from einops import rearrange

from sora.errors import ArgumentParser, SoraError, exit_on_user_error
from sora.models.dit_args import DiTArgs, FinalModulation, Modulation, QKNormScope

WEIGHTS = "diffusion_pytorch_model.safetensors"
INDEX = WEIGHTS + ".index.json"
COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
HEAD_DIM = 128  # every released Wan2.1 / 2.2 model's; a ComfyUI file has no config to say otherwise

# ---------------------------------------------------------------------------------------------------------------
# Names: diffusers' <-> the original's <-> ours
# ---------------------------------------------------------------------------------------------------------------

# diffusers' names -> the original's: modules inside block N, top-level modules, and bare parameters
_BLOCK = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
          "attn1.to_out.0": "self_attn.o", "attn1.norm_q": "self_attn.norm_q", "attn1.norm_k": "self_attn.norm_k",
          "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
          "attn2.to_out.0": "cross_attn.o", "attn2.norm_q": "cross_attn.norm_q", "attn2.norm_k": "cross_attn.norm_k",
          "norm2": "norm3", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2", "scale_shift_table": "modulation"}
_TOP = {"condition_embedder.text_embedder.linear_1": "text_embedding.0",
        "condition_embedder.text_embedder.linear_2": "text_embedding.2",
        "condition_embedder.time_embedder.linear_1": "time_embedding.0",
        "condition_embedder.time_embedder.linear_2": "time_embedding.2",
        "condition_embedder.time_proj": "time_projection.1", "proj_out": "head.head",
        "patch_embedding": "patch_embedding", "scale_shift_table": "head.modulation"}
D2O = (_BLOCK, _TOP)
O2D = ({v: k for k, v in _BLOCK.items()}, {v: k for k, v in _TOP.items()})


def rename_module(name: str, tables) -> str | None:
    """A module (or bare parameter) name in the other naming; None when it is no part of a Wan transformer."""
    block, top = tables
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m:
        new = block.get(m.group(2))
        return None if new is None else f"blocks.{m.group(1)}.{new}"
    return top.get(name)


def _rename_state(state: dict, tables, where: str) -> dict:
    out = {}
    for key, value in state.items():
        new = rename_module(key, tables)  # a bare parameter (scale_shift_table, modulation)
        if new is None:
            module, _, leaf = key.rpartition(".")
            new = rename_module(module, tables)
            if new is None:
                raise SoraError(f"{where}: {key} is no part of a Wan2.1 text-to-video transformer")
            new = f"{new}.{leaf}"
        out[new] = value
    return out


def diffusers_to_original(state: dict, where: str = "weights") -> dict:
    return _rename_state(state, D2O, where)


def original_to_diffusers(state: dict, where: str = "weights") -> dict:
    return _rename_state(state, O2D, where)


# our module -> the original modules it holds, stacked by rows (a fused linear) or alone
FUSED = {"attn.qkv": ("self_attn.q", "self_attn.k", "self_attn.v"), "cross.kv": ("cross_attn.k", "cross_attn.v")}
SAME = {"attn.proj": "self_attn.o", "attn.q_norm": "self_attn.norm_q", "attn.k_norm": "self_attn.norm_k",
        "cross.q": "cross_attn.q", "cross.proj": "cross_attn.o", "cross.q_norm": "cross_attn.norm_q",
        "cross.k_norm": "cross_attn.norm_k", "norm_cross": "norm3", "mlp.0": "ffn.0", "mlp.2": "ffn.2"}
TOP = {"text_embed.0": "text_embedding.0", "text_embed.2": "text_embedding.2", "t_embed.mlp.0": "time_embedding.0",
       "t_embed.mlp.2": "time_embedding.2", "adaLN_single.1": "time_projection.1", "final.linear": "head.head"}


def original_to_ours(state: dict, patch_size) -> dict:
    """Original Wan names -> our DiT's state dict (fused linears stacked, the Conv3d kernel flattened)."""
    out = {}
    pt, ph, pw = patch_size
    for leaf in ("weight", "bias"):
        w = state[f"patch_embedding.{leaf}"]
        out[f"x_embed.{leaf}"] = rearrange(w, "d c pt ph pw -> d (pt ph pw c)") if w.ndim == 5 else w
        for ours, theirs in TOP.items():
            out[f"{ours}.{leaf}"] = state[f"{theirs}.{leaf}"]
    for i in range(1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))):
        b = f"blocks.{i}."
        for ours, parts in FUSED.items():
            for leaf in ("weight", "bias"):
                out[f"{b}{ours}.{leaf}"] = torch.cat([state[f"{b}{p}.{leaf}"] for p in parts])
        for ours, theirs in SAME.items():
            for leaf in ("weight", "bias"):
                if f"{b}{theirs}.{leaf}" in state:
                    out[f"{b}{ours}.{leaf}"] = state[f"{b}{theirs}.{leaf}"]
        out[f"{b}modulation_table"] = state[f"{b}modulation"].flatten()  # 1 6 d -> (6 d)
    out["final.modulation_table"] = state["head.modulation"].flatten()  # 1 2 d -> (2 d)
    return out


def ours_to_original(state: dict, patch_size) -> dict:
    """The inverse of `original_to_ours`: our DiT's state dict -> original Wan names and shapes."""
    out = {}
    pt, ph, pw = patch_size
    w = state["x_embed.weight"]
    out["patch_embedding.weight"] = rearrange(w, "d (pt ph pw c) -> d c pt ph pw", pt=pt, ph=ph, pw=pw)
    out["patch_embedding.bias"] = state["x_embed.bias"]
    for leaf in ("weight", "bias"):
        for ours, theirs in TOP.items():
            out[f"{theirs}.{leaf}"] = state[f"{ours}.{leaf}"]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        b = f"blocks.{i}."
        for ours, parts in FUSED.items():
            for leaf in ("weight", "bias"):
                for p, chunk in zip(parts, state[f"{b}{ours}.{leaf}"].chunk(len(parts))):
                    out[f"{b}{p}.{leaf}"] = chunk
        for ours, theirs in SAME.items():
            for leaf in ("weight", "bias"):
                if f"{b}{ours}.{leaf}" in state:
                    out[f"{b}{theirs}.{leaf}"] = state[f"{b}{ours}.{leaf}"]
        out[f"{b}modulation"] = state[f"{b}modulation_table"].view(1, 6, -1)
    out["head.modulation"] = state["final.modulation_table"].view(1, 2, -1)
    return {k: v.contiguous() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------------
# Finding a checkpoint and its architecture
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class WanCheckpoint:
    """A Wan2.1 transformer on disk: its layout, its architecture (the original config's keys), its files."""

    layout: str  # "diffusers", "wan" or "comfyui"
    config: dict  # dim, ffn_dim, freq_dim, in_dim, out_dim, num_heads, num_layers, patch_size, text_dim, text_len
    files: list  # the safetensors files holding the weights
    where: str  # the path, for messages
    prefix: str = ""  # ComfyUI: the prefix of every key

    def state(self) -> dict:
        """Every tensor, under original Wan names (prefix stripped; diffusers' names renamed)."""
        from safetensors import safe_open

        state = {}
        for file in self.files:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    if key.startswith(self.prefix):
                        state[key[len(self.prefix):]] = f.get_tensor(key)
        return diffusers_to_original(state, self.where) if self.layout == "diffusers" else state


# The original WanModel's defaults (Wan2.1 wan/modules/model.py), which its config.json may leave out.
ORIGINAL_DEFAULTS = dict(patch_size=[1, 2, 2], text_len=512, in_dim=16, dim=2048, ffn_dim=8192, freq_dim=256,
                         text_dim=4096, out_dim=16, num_heads=16, num_layers=32, window_size=[-1, -1], qk_norm=True,
                         cross_attn_norm=True, eps=1e-6, model_type="t2v")
# WanTransformer3DModel's defaults (diffusers 0.42), as names of the original's
DIFFUSERS_DEFAULTS = dict(patch_size=[1, 2, 2], num_attention_heads=40, attention_head_dim=128, in_channels=16,
                          out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                          cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None,
                          added_kv_proj_dim=None)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SoraError(f"{path}: not a readable JSON file ({e})") from None


def _weight_files(folder: Path) -> list:
    """The safetensors files of a folder: every shard its index names (each must be there), or the one file."""
    if (folder / INDEX).is_file():
        names = sorted(set(_read_json(folder / INDEX).get("weight_map", {}).values()))
        if not names:
            raise SoraError(f"{folder / INDEX}: its weight_map names no file")
        for name in names:
            if not (folder / name).is_file():
                raise SoraError(f"{folder / INDEX} names {name}, which is not in {folder}: a shard is missing")
        return [folder / n for n in names]
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    raise SoraError(f"{folder}: neither {WEIGHTS} nor {INDEX} is there")


def _from_diffusers(cfg: dict, where: str) -> dict:
    c = {**DIFFUSERS_DEFAULTS, **cfg}
    if c["image_dim"] is not None or c["added_kv_proj_dim"] is not None:
        raise SoraError(f"{where}: image_dim / added_kv_proj_dim are set: an image-to-video Wan model; only "
                        "text-to-video is supported")
    if c["qk_norm"] not in (None, "rms_norm_across_heads"):
        raise SoraError(f"{where}: qk_norm={c['qk_norm']!r}; supported: rms_norm_across_heads or null")
    return dict(dim=c["num_attention_heads"] * c["attention_head_dim"], ffn_dim=c["ffn_dim"], freq_dim=c["freq_dim"],
                in_dim=c["in_channels"], out_dim=c["out_channels"] or c["in_channels"],
                num_heads=c["num_attention_heads"], num_layers=c["num_layers"], patch_size=list(c["patch_size"]),
                text_dim=c["text_dim"], text_len=512, qk_norm=c["qk_norm"] is not None,
                cross_attn_norm=c["cross_attn_norm"], eps=c["eps"], window_size=[-1, -1], model_type="t2v")


def _from_shapes(state: dict, where: str) -> dict:
    """A ComfyUI file's architecture, from its tensors' shapes (heads: Wan's 128 channels each)."""
    try:
        d, in_dim, *patch = state["patch_embedding.weight"].shape
        if d % HEAD_DIM:
            raise SoraError(f"{where}: width {d} is not a multiple of Wan's {HEAD_DIM}-wide heads, and a ComfyUI "
                            "file has no config to give the number of heads")
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        return dict(ORIGINAL_DEFAULTS, dim=d, in_dim=in_dim, patch_size=patch, num_layers=depth,
                    ffn_dim=state["blocks.0.ffn.0.weight"].shape[0], text_dim=state["text_embedding.0.weight"].shape[1],
                    out_dim=state["head.head.weight"].shape[0] // (patch[0] * patch[1] * patch[2]),
                    num_heads=d // HEAD_DIM, qk_norm="blocks.0.self_attn.norm_q.weight" in state,
                    model_type="i2v" if any("img" in k for k in state) else "t2v")
    except (KeyError, ValueError):
        raise SoraError(f"{where}: not a Wan2.1 transformer (no patch_embedding.weight, blocks.N.ffn.0.weight or "
                        "head.head.weight)") from None


def find_checkpoint(path: str) -> WanCheckpoint:
    """The Wan2.1 transformer at `path` (a folder in either layout, a pipeline folder, or a ComfyUI file)."""
    p = Path(path)
    if p.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                keys = list(f.keys())
                prefix = next((pre for pre in COMFY_PREFIXES if any(k.startswith(pre) for k in keys)), "")
                shapes = {k[len(prefix):]: f.get_slice(k).get_shape() for k in keys if k.startswith(prefix)}
        except Exception as e:  # safetensors raises its own error types for damaged headers
            raise SoraError(f"{p}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
        config = _from_shapes({k: torch.empty(v, device="meta") for k, v in shapes.items()}, str(p))
        return _checked(WanCheckpoint("comfyui", config, [p], str(p), prefix))
    if not p.is_dir():
        raise SoraError(f"dit.init_from={path!r} is neither a folder nor a file")
    if (p / "model_index.json").is_file() and (p / "transformer").is_dir():  # a diffusers pipeline folder
        p = p / "transformer"
    if not (p / "config.json").is_file():
        raise SoraError(f"{p}: no config.json; a Wan2.1 folder (diffusers or original) has one, a ComfyUI "
                        "checkpoint is one .safetensors file")
    cfg = _read_json(p / "config.json")
    kind = cfg.get("_class_name")
    if kind == "WanTransformer3DModel":
        return _checked(WanCheckpoint("diffusers", _from_diffusers(cfg, f"{p}/config.json"), _weight_files(p), str(p)))
    if kind == "WanModel" or (kind is None and "model_type" in cfg and "dim" in cfg):
        return _checked(WanCheckpoint("wan", {**ORIGINAL_DEFAULTS, **cfg}, _weight_files(p), str(p)))
    what = kind or cfg.get("model_type") or cfg.get("architectures") or "model"
    raise SoraError(f"{p}/config.json describes a {what}, not a Wan2.1 transformer (WanTransformer3DModel or "
                    "WanModel)")


def _checked(ck: WanCheckpoint) -> WanCheckpoint:
    """Refuse what our DiT does not compute the same way, naming the config key."""
    c, where = ck.config, ck.where
    rules = [(c["model_type"] != "t2v", "model_type", "text-to-video (t2v) only: image conditioning is not built"),
             (list(c["window_size"]) != [-1, -1], "window_size", "global attention ([-1, -1]) only"),
             (not c["cross_attn_norm"], "cross_attn_norm", "true only"),
             (c["freq_dim"] != 256, "freq_dim", "256 only"), (c["eps"] != 1e-6, "eps", "1e-6 only"),
             (c["out_dim"] != c["in_dim"], "out_dim", "equal to in_dim only"),
             (c["dim"] % c["num_heads"] != 0, "num_heads", "a divisor of dim")]
    for bad, key, want in rules:
        if bad:
            raise SoraError(f"{where}: {key}={c[key]!r}; supported: {want}")
    return ck


def wan_dit_args(config: dict, base: DiTArgs | None = None, where: str = "dit.init_from") -> DiTArgs:
    """Our DiT's settings for a Wan2.1 config (original key names); `base` gives the rest (backend, ...). A base that
    is a Wan preset already (final_modulation=table: dit=wan2_1_1_3b, wan2_1_14b) must name the same size."""
    if base is not None and base.final_modulation == FinalModulation.table:
        sizes = dict(hidden_size="dim", depth="num_layers", num_heads="num_heads", mlp_width="ffn_dim")
        for key, theirs in sizes.items():
            if getattr(base, key) != config[theirs]:
                raise SoraError(f"{where} holds a Wan model of {theirs}={config[theirs]}, but dit.{key}="
                                f"{getattr(base, key)} (a Wan preset of another size?): pick the preset of its size, "
                                "or leave dit at its default and the checkpoint decides")
    return replace(base or DiTArgs(), hidden_size=config["dim"], depth=config["num_layers"],
                   num_heads=config["num_heads"], mlp_width=config["ffn_dim"], patch_size=list(config["patch_size"]),
                   qk_norm=bool(config["qk_norm"]), qk_norm_scope=QKNormScope.all_heads, rope_theta=10000.0,
                   pooled_text=False, attention_layout="full", text_conditioning="cross",
                   modulation=Modulation.single, final_modulation=FinalModulation.table,
                   text_len=config["text_len"], fp32_residual=True, head_mlp_width=0)


def check_shapes(ck: WanCheckpoint, state: dict, expected: dict) -> None:
    """Every tensor the architecture needs is in the files, with its shape; nothing else is (original names)."""
    name = (lambda k: original_to_diffusers({k: 0}).popitem()[0]) if ck.layout == "diffusers" else \
        (lambda k: ck.prefix + k)
    source = "config.json" if ck.layout != "comfyui" else "the shapes of its other tensors"
    for key, want in expected.items():
        if key not in state:
            raise SoraError(f"{ck.where}: no tensor {name(key)}, which the architecture in {source} needs")
        if tuple(state[key].shape) != tuple(want.shape):
            raise SoraError(f"{ck.where}: {name(key)} has shape {tuple(state[key].shape)}, but {source} (dim="
                            f"{ck.config['dim']}, ffn_dim={ck.config['ffn_dim']}, num_layers="
                            f"{ck.config['num_layers']}, ...) makes it {tuple(want.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise SoraError(f"{ck.where}: {name(extra[0])} is no part of the architecture in {source}")


def load_wan(path: str, in_channels: int | None = None, text_dim: int | None = None,
             base: DiTArgs | None = None, dtype: torch.dtype = torch.float32):
    """(our DiT holding the Wan2.1 weights at `path`, its DiTArgs); in_channels / text_dim: what the run's VAE and
    text encoder give, checked against the checkpoint's."""
    from sora.models.dit import DiT

    ck = find_checkpoint(path)
    c = ck.config
    for given, key, what in ((in_channels, "in_dim", "the VAE's latent channels"),
                             (text_dim, "text_dim", "the text encoder's width")):
        if given is not None and given != c[key]:
            raise SoraError(f"dit.init_from={path}: the model takes {key}={c[key]}, but {what} are {given}")
    args = wan_dit_args(c, base, f"dit.init_from={path}")
    with torch.device("meta"):
        dit = DiT(c["in_dim"], c["text_dim"], args)
    expected = ours_to_original(dit.state_dict(), args.patch_size)
    state = ck.state()
    check_shapes(ck, state, expected)
    ours = {k: v.to(dtype) for k, v in original_to_ours(state, args.patch_size).items()}
    dit.load_state_dict(ours, assign=True, strict=True)
    return dit, args


# ---------------------------------------------------------------------------------------------------------------
# Writing back
# ---------------------------------------------------------------------------------------------------------------


def wan_config(dit) -> dict:
    """The original config.json of our DiT; a SoraError naming the setting our DiT has and Wan has not."""
    a = dit.args
    want = dict(modulation="single", final_modulation="table", qk_norm_scope="all_heads", pooled_text=False,
                attention_layout="full", text_conditioning="cross", rope_theta=10000.0, head_mlp_width=0)
    for key, value in want.items():
        if getattr(a, key) != value:
            raise SoraError(f"dit.{key}={getattr(a, key)}: Wan2.1 has {key}={value}; this DiT cannot be written as "
                            "a Wan checkpoint")
    if not a.text_len:
        raise SoraError("dit.text_len=0: Wan2.1 attends to captions padded to dit.text_len tokens (512)")
    return dict(_class_name="WanModel", model_type="t2v", patch_size=list(a.patch_size), text_len=a.text_len,
                in_dim=dit.in_channels, dim=a.hidden_size, ffn_dim=dit.blocks[0].mlp[0].out_features, freq_dim=256,
                text_dim=dit.text_embed[0].in_features, out_dim=dit.in_channels, num_heads=a.num_heads,
                num_layers=a.depth, window_size=[-1, -1], qk_norm=a.qk_norm, cross_attn_norm=True, eps=1e-6)


def diffusers_config(c: dict) -> dict:
    return dict(_class_name="WanTransformer3DModel", patch_size=list(c["patch_size"]),
                num_attention_heads=c["num_heads"], attention_head_dim=c["dim"] // c["num_heads"],
                in_channels=c["in_dim"], out_channels=c["out_dim"], text_dim=c["text_dim"], freq_dim=c["freq_dim"],
                ffn_dim=c["ffn_dim"], num_layers=c["num_layers"], cross_attn_norm=True,
                qk_norm="rms_norm_across_heads" if c["qk_norm"] else None, eps=c["eps"], image_dim=None,
                added_kv_proj_dim=None, rope_max_seq_len=1024, pos_embed_seq_len=None)


def save_wan(dit, out: str, fmt: str = "diffusers") -> dict:
    """Write our DiT as a Wan2.1 checkpoint: a diffusers folder, a Wan (original) folder, or a ComfyUI file."""
    from safetensors.torch import save_file

    config = wan_config(dit)
    state = ours_to_original({k: v.detach().cpu() for k, v in dit.state_dict().items()}, dit.args.patch_size)
    if fmt == "comfyui":
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_file({COMFY_PREFIXES[0] + k: v for k, v in state.items()}, str(out))
        return {"out": str(out), "format": fmt, "tensors": len(state)}
    if fmt not in ("diffusers", "wan"):
        raise SoraError(f"--format {fmt}: choose diffusers, wan or comfyui")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "diffusers":
        state, config = original_to_diffusers(state), diffusers_config(config)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    return {"out": str(folder), "format": fmt, "tensors": len(state)}


# ---------------------------------------------------------------------------------------------------------------
# The check against diffusers
# ---------------------------------------------------------------------------------------------------------------


def diffusers_model(path: str):
    """diffusers' WanTransformer3DModel with the weights at `path` (its own loader for a diffusers folder)."""
    from diffusers import WanTransformer3DModel

    ck = find_checkpoint(path)
    if ck.layout == "diffusers":
        return WanTransformer3DModel.from_pretrained(str(Path(ck.files[0]).parent), torch_dtype=torch.float32)
    config = diffusers_config(ck.config)
    model = WanTransformer3DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    model.load_state_dict(original_to_diffusers(ck.state()), strict=True)
    return model.float()


def compare(path: str, seed: int = 0, frames: int = 2, size: int = 4) -> dict:
    """Our forward and diffusers' on one random input: the relative error ||ours - theirs|| / ||theirs||."""
    from sora.models.conditioning import Conditioning

    ours, _ = load_wan(path)
    theirs = diffusers_model(path)
    c = find_checkpoint(path).config
    pt, ph, pw = c["patch_size"]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c["in_dim"], frames * pt, size * ph, size * pw, generator=g)
    text = torch.randn(1, 16, c["text_dim"], generator=g)
    mask = torch.ones(1, 16, dtype=torch.bool)
    t = torch.tensor([0.5])
    with torch.no_grad():
        a = ours.eval()(x, t, Conditioning(text, mask))
        padded = torch.nn.functional.pad(text, (0, 0, 0, c["text_len"] - 16))  # Wan's zero padding
        b = theirs.eval()(x, 1000 * t, padded, return_dict=False)[0]
    err = ((a - b).norm() / b.norm()).item()
    return {"path": str(path), "relative_error": err, "max_abs_error": (a - b).abs().max().item()}


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


@exit_on_user_error
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m sora.models.wan", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="our forward against diffusers' on one input: the relative error")
    c.add_argument("path")
    c.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("convert", help="a Wan2.1 checkpoint in another layout")
    v.add_argument("path")
    v.add_argument("out")
    v.add_argument("--format", choices=["diffusers", "wan", "comfyui"], default="diffusers")
    a = p.parse_args(argv)
    if a.command == "check":
        print(json.dumps(compare(a.path, a.seed)))
    else:
        dit, _ = load_wan(a.path)
        print(json.dumps(save_wan(dit, a.out, a.format)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
