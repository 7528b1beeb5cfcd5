"""Model FLOPs of a DiT step, MFU against the device's peak, and parameter counts.

Counted as 2 FLOPs per multiply-add of every matmul the model does: the linear layers (the "6 * params *
tokens" of Kaplan et al. 2020, done per layer so text tokens, adaLN and embeddings are counted where they run)
plus the attention products QK^T and AV (PaLM, Chowdhery et al. 2022, app. B). A training step is forward +
backward = 3x forward; recomputation from activation checkpointing is not model FLOPs and is not counted.
tests/test_flops.py checks the forward count against torch's FlopCounterMode.
"""

import math

import torch

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' datasheets (SXM parts).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def device_peak_flops(device: torch.device | str | None = None) -> float | None:
    """The bf16 peak of a known CUDA device, or None (CPUs and unlisted GPUs: no MFU is reported)."""
    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def dit_forward_flops(model, grid: tuple[int, int, int], text_len: int, batch_size: int = 1) -> float:
    """FLOPs of one forward pass of `model` (a sora.models.dit.DiT) on `batch_size` clips of token grid (t, h, w)."""
    t, h, w = grid
    n, m = t * h * w, model.args.text_len or text_len  # dit.text_len: the captions padded to it (Wan)
    d = model.x_embed.out_features
    patch_dim, text_dim = model.x_embed.in_features, model.text_embed[0].in_features
    mlp_hidden = model.blocks[0].mlp[0].out_features
    per_block = 8 * n * d * d + 4 * n * d * mlp_hidden  # self-attn qkv + proj, MLP
    if model.layout == "factorized":
        per_block += 8 * n * d * d + 4 * n * d * (h * w) + 4 * n * d * t  # temporal qkv + proj; both products
    elif model.text_conditioning == "joint":
        per_block += 4 * (n + m) ** 2 * d
    else:
        per_block += 4 * n * n * d
    if model.text_conditioning == "cross":
        per_block += 4 * n * d * d + 4 * m * d * d + 4 * n * m * d  # q, proj; kv; QK^T and AV
    else:
        per_block += 8 * m * d * d + 4 * m * d * mlp_hidden + 2 * d * 6 * d  # text qkv, proj, MLP; text adaLN
    adaln = 2 * d * model.blocks[0].n_mod * d  # adaLN: once per clip (per block, or once with modulation=single)
    single = getattr(model, "adaLN_single", None) is not None
    per_block += 0 if single else adaln
    embed = 2 * n * patch_dim * d + 2 * m * (text_dim * d + d * d) + 2 * 256 * d + 2 * d * d  # x, text, timestep MLP
    if model.pool_embed is not None:
        embed += 2 * d * d
    final_map = 0 if model.final.table else 2 * d * 2 * d  # final_modulation=table: an add, no matmul
    head_in = model.final.linear.in_features  # d, or dit.head_mlp_width after its hidden layer
    head_hidden = 2 * n * d * head_in if model.final.hidden is not None else 0
    final = head_hidden + 2 * n * head_in * patch_dim + final_map + (adaln if single else 0)
    return float(batch_size * (len(model.blocks) * per_block + embed + final))


def dit_train_flops(model, grid, text_len: int, batch_size: int) -> float:
    """Forward + backward model FLOPs of one training step (3x forward)."""
    return 3.0 * dit_forward_flops(model, grid, text_len, batch_size)


def mfu(flops_per_step: float, seconds_per_step: float, peak_flops: float | None) -> float | None:
    return flops_per_step / seconds_per_step / peak_flops if peak_flops and seconds_per_step > 0 else None


def num_tokens(grid) -> int:
    return math.prod(grid)


def num_params(module) -> str:
    """A module's parameter count, readable: 1.63M, 12.0K."""
    n = sum(p.numel() for p in module.parameters())
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K" if n >= 1e2 else str(n) if n else "0"
