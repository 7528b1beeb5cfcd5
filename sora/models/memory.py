"""An estimate of a DiT training step's peak memory per device, before anything is allocated.

What a step holds at its peak (the end of the forward pass, or the optimizer step if that is larger):
- **state**: fp32 weights, AdamW's two moments, the EMA copy of what trains (each 4 bytes a parameter), and the
  frozen parts (VAE, a frozen text encoder); FSDP divides what trains by the number of ranks and adds one
  gathered block (two, with prefetch);
- **activations**: what autograd saves for backward. They are not guessed from a formula: the DiT's forward runs
  once on the meta device (no memory, no compute) under `saved_tensors_hooks`, and every saved tensor's storage is
  counted once, block by block. Attention is counted as the fused kernels save it (q, k, v, output and the
  log-sum-exp; flash on CPU and GPU, memory-efficient on GPU with a mask), not as the n x n matrix the meta
  device's reference path would save; `dit.attention_backend=math` keeps the matrix. A checkpointed block keeps
  only its input, and its recomputation in backward holds one block's activations again;
- **transient**: one block's activations (the backward's working set, or a checkpointed block's recomputation),
  the batch and a few latent-sized tensors of the loss; at the optimizer step, the gradients, DDP's gradient
  buckets, and the temporaries of the fused (foreach) AdamW update.

bf16-mixed saves activations in bf16 (the trace runs in bf16) and caches a bf16 copy of every weight for the
step. Sequence parallelism divides the tokens by its group size. The VAE's own encoding runs without gradients
before the DiT, and is not counted. docs/TRAINING.md "Dry run" and docs/BENCHMARKS.md give the estimate against measured
peaks.
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from sora.models.conditioning import Conditioning

GiB = 1024**3

# ---------------------------------------------------------------------------------------------------------------
# Saved activations, counted on the meta device
# ---------------------------------------------------------------------------------------------------------------


class _FusedAttention(torch.autograd.Function):
    """What SDPA's fused kernels save: q, k, v, the output and the log-sum-exp (b h n)."""

    @staticmethod
    def forward(ctx, q, k, v):
        out, lse = q.new_empty(*q.shape[:-1], v.shape[-1]), q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _fused_sdpa(q, k, v, attn_mask=None, **kwargs):
    return _FusedAttention.apply(q, k, v)


def saved_activation_bytes(dit, grid, text_len: int, batch_size: int, dtype=torch.float32,
                           fused_attention: bool = True) -> tuple[int, list[int], int]:
    """(bytes saved outside the blocks, [bytes saved in each block], bytes of a block's input) for one forward of
    `dit` (built on the meta device) on `batch_size` clips of token grid (t, h, w) and `text_len` text tokens."""
    pt, ph, pw = dit.patch_size
    t, h, w = grid
    c_in = dit.x_embed.in_features // (pt * ph * pw)
    text_dim = dit.text_embed[0].in_features
    dit = dit.to(dtype)
    x = torch.empty(batch_size, c_in, t * pt, h * ph, w * pw, device="meta", dtype=dtype)  # b c t h w
    cond = Conditioning(torch.empty(batch_size, text_len, text_dim, device="meta", dtype=dtype),
                        torch.ones(batch_size, text_len, dtype=torch.bool, device="meta"))
    params = {p.untyped_storage()._cdata for p in dit.parameters()}
    seen, where, per_block = set(), [None], [0] * len(dit.blocks)
    outside = [0]

    def pack(tensor):
        key = tensor.untyped_storage()._cdata
        if key not in params and key not in seen:
            seen.add(key)
            nbytes = tensor.untyped_storage().nbytes()
            if where[0] is None:
                outside[0] += nbytes
            else:
                per_block[where[0]] += nbytes
        return tensor

    hooks = []
    for i, block in enumerate(dit.blocks):
        hooks.append(block.register_forward_pre_hook(lambda m, a, i=i: where.__setitem__(0, i)))
        hooks.append(block.register_forward_hook(lambda m, a, o: where.__setitem__(0, None)))
    # Count every block whole; checkpointing is applied below.
    saved_ckpt, dit.num_checkpointed = dit.num_checkpointed, 0
    real_sdpa = F.scaled_dot_product_attention
    try:
        if fused_attention:
            F.scaled_dot_product_attention = _fused_sdpa
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            dit(x.requires_grad_(False), torch.full((batch_size,), 0.5, device="meta"), cond)
    finally:
        F.scaled_dot_product_attention = real_sdpa
        dit.num_checkpointed = saved_ckpt
        for hk in hooks:
            hk.remove()
    block_input = batch_size * t * h * w * dit.x_embed.out_features * torch.finfo(dtype).bits // 8
    return outside[0], per_block, block_input


# ---------------------------------------------------------------------------------------------------------------
# The estimate
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class MemoryEstimate:
    state: float  # bytes: weights, AdamW moments, EMA, frozen parts (this rank's share)
    activations: float  # saved for backward, at the end of the forward pass
    transient: float  # the larger of: backward working set + batch; the optimizer step's gradients and temporaries
    total: float

    def as_gib(self) -> dict:
        return {k: round(v / GiB, 3) for k, v in asdict(self).items()}


def training_memory(dit, trained_params: int, frozen_params: int, grid, text_len: int, batch_size: int,
                    batch_bytes: int, precision: str = "32-true", strategy: str = "auto", world_size: int = 1,
                    sequence_parallel: int = 1) -> MemoryEstimate:
    """Peak bytes per device of one training step (see the module docstring for what is counted).

    dit: the DiT built on the meta device with the run's settings (its checkpoint_fraction, backend, layout).
    """
    bf16 = str(precision).startswith("bf16")
    dtype = torch.bfloat16 if bf16 else torch.float32
    shards = world_size if strategy == "fsdp" else 1
    t, h, w = grid
    local_grid = (t, h, w) if sequence_parallel == 1 else (t * h * w // sequence_parallel, 1, 1)
    fused = dit.blocks[0].attn.backend != "math"
    outside, per_block, block_input = saved_activation_bytes(dit, local_grid, text_len, batch_size, dtype, fused)
    n_ckpt = dit.num_checkpointed
    activations = outside + sum(per_block[n_ckpt:]) + n_ckpt * block_input
    block_params = sum(p.numel() for p in dit.blocks[0].parameters())
    trained = 4.0 * trained_params / shards
    state = 3 * trained + 4.0 * frozen_params  # weights + AdamW (2) ... + EMA below
    state += trained  # EMA
    if strategy == "fsdp":  # the gathered block being run, and the next one prefetched
        state += 2 * block_params * (2 if bf16 else 4)
    if bf16:  # autocast's bf16 copy of every weight it casts, kept for the step
        state += 2.0 * trained_params / shards
    latent_bytes = batch_size * t * h * w * dit.x_embed.in_features * 4 / sequence_parallel
    backward = max(per_block) + batch_bytes + 6 * latent_bytes  # one block's working set; the loss's tensors
    grads = trained * (2 if strategy == "ddp" or (strategy == "auto" and world_size > 1) else 1)  # + DDP buckets
    optimizer_step = grads + 2 * trained  # foreach AdamW: about two parameter-sized temporaries
    transient = max(backward, optimizer_step - activations)
    return MemoryEstimate(state, activations, transient, state + activations + transient)


# ---------------------------------------------------------------------------------------------------------------
# Fine-tuning a released model: full, or LoRA (the table in docs/TRAINING.md, `python -m sora.training.dry_run
# --finetune-table`)
# ---------------------------------------------------------------------------------------------------------------


def finetune_state(dit, lora_params: int, world_size: int) -> dict[str, float]:
    """Bytes per device of what a fine-tune holds besides activations: {weights, grads, optimizer, ema}.

    dit: the DiT on the meta device (plain: its parameters are the base). lora_params: 0 for a full fine-tune, else
    the adapter's parameters (only they have gradients, AdamW moments and an EMA). One device runs with
    train.param_dtype=bf16: the blocks' linears (base and adapter) in bf16, fp32 masters of what trains in the
    optimizer, everything else fp32, the EMA fp32. More devices run FSDP (train.strategy=fsdp, which keeps fp32
    shards and gathers bf16 blocks): every state divided by the device count, plus two gathered blocks (the one
    running and the one prefetched).
    """
    total = sum(p.numel() for p in dit.parameters())
    block_linear = sum(p.numel() for name, p in dit.named_parameters()
                       if name.startswith("blocks.") and (name.endswith(".weight") or name.endswith(".bias"))
                       and p.dim() >= 1 and _is_linear_param(dit, name))
    trained = lora_params or total
    if world_size == 1:
        base = 2.0 * block_linear + 4.0 * (total - block_linear)  # bf16 block linears, fp32 rest
        if lora_params:
            weights = base + 2.0 * lora_params  # adapters sit in the blocks: bf16 too
            grads = 2.0 * lora_params
            low = lora_params  # every adapter is a block linear: all have an fp32 master
        else:
            weights, grads, low = base, base, block_linear  # gradients in each weight's own dtype
        optimizer = 8.0 * trained + 4.0 * low  # AdamW's two fp32 moments, fp32 masters of the bf16 weights
        return {"weights": weights, "grads": grads, "optimizer": optimizer, "ema": 4.0 * trained}
    gathered = 2 * 2.0 * sum(p.numel() for p in dit.blocks[0].parameters())  # two bf16 blocks at a time
    weights = 4.0 * (total + lora_params) / world_size + gathered
    return {"weights": weights, "grads": 4.0 * trained / world_size, "optimizer": 8.0 * trained / world_size,
            "ema": 4.0 * trained / world_size}


def _is_linear_param(dit, name: str) -> bool:
    module = dit.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(module, torch.nn.Linear)


def finetune_activations(dit, grid, text_len: int, batch_size: int = 1) -> dict[str, float]:
    """Bytes of activations a bf16 step saves, {"none": no checkpointing, "all": every block checkpointed}, and
    "working": one block's (its backward's working set, or its recomputation under checkpointing)."""
    outside, per_block, block_input = saved_activation_bytes(dit, grid, text_len, batch_size, torch.bfloat16, True)
    return {"none": outside + sum(per_block), "all": outside + len(per_block) * block_input,
            "working": max(per_block)}
