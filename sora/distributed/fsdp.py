"""Fully sharded data parallel (FSDP2, Zhao et al. 2023): how train.strategy=fsdp shards what trains."""

import torch
import torch.nn as nn


def fully_shard_trained(parts: nn.ModuleDict, mesh, param_dtype: torch.dtype | None = None) -> None:
    """Shard `parts` ({"dit": DiT, "text"?: encoder}) over `mesh`: each DiT block is one unit, then the rest.

    Each block's weights are all-gathered just before it runs and freed after, so a rank holds 1/N of the
    weights, gradients and optimizer state plus one block at a time. `param_dtype` (bf16 on GPU) is the dtype
    of the gathered weights; gradients are reduced in fp32.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for block in parts["dit"].blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    for name in parts:  # the DiT's embeddings and final layer; a trainable text encoder as one unit
        fully_shard(parts[name], mesh=mesh, mp_policy=policy)
    register_fsdp_forward_method(parts["dit"], "forward_packed")  # data.packing calls it instead of forward


def gather_full_state(module: nn.Module) -> dict:
    """Every rank calls this; rank 0 gets the whole (unsharded) state dict on the CPU, the others {}."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
