"""Sequence parallelism (DeepSpeed-Ulysses, Jacobs et al. 2023) splits a clip's tokens across ranks.

Every rank holds n/P of the tokens for all heads. Before attention, one all-to-all turns that into all n
tokens for h/P heads, each rank attends over the whole sequence for its heads, and a second all-to-all
turns it back. Everything outside attention (MLP, adaLN, cross-attention to the text) is per-token and
runs on the local shard. Communication per layer is 4 all-to-alls of b*n*d/P values, whatever P is.
The collectives are torch.distributed.nn's, so gradients flow through them.

`parallelize_sequence(dit, group)` applies it from outside the model, as torchtitan's `parallelize_*` functions
do: it wraps each block's self-attention core in `UlyssesAttention` (the two all-to-alls) and puts `SplitTokens`
where the DiT leaves its sequence whole (`dit.sequence_split`): this rank's slice of the tokens, their RoPE
rotations and their adaLN rows before the blocks, every rank's output gathered after the final layer. No layer
holds the group.
"""

import warnings

import torch
import torch.distributed as dist
import torch.nn as nn
from einops import rearrange
from torch.distributed.nn.functional import all_gather, all_to_all_single

from sora.errors import SoraError


def _all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """p ... -> p ...: chunk i goes to rank i; chunk j of the result came from rank j."""
    x = x.contiguous()
    out = torch.empty_like(x)  # after contiguous(): empty_like copies strides, and a strided buffer scrambles chunks
    with warnings.catch_warnings():  # torch.distributed.nn's autograd collectives: deprecated name, kept working
        warnings.simplefilter("ignore", FutureWarning)
        return all_to_all_single(out, x, group=group)


def seq_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    """b h n/P d (this rank's tokens, all heads) -> b h/P n d (all tokens, this rank's heads)."""
    p = dist.get_world_size(group)
    assert x.shape[1] % p == 0, f"{x.shape[1]} heads do not split over {p} sequence-parallel ranks"
    x = rearrange(x, "b (p h) n d -> p b h n d", p=p)
    return rearrange(_all_to_all(x, group), "p b h n d -> b h (p n) d")


def heads_to_seq(x: torch.Tensor, group) -> torch.Tensor:
    """b h/P n d -> b h n/P d, the inverse of seq_to_heads."""
    p = dist.get_world_size(group)
    x = rearrange(x, "b h (p n) d -> p b h n d", p=p)
    return rearrange(_all_to_all(x, group), "p b h n d -> b (p h) n d")


def shard_tokens(x: torch.Tensor, group, dim: int = 1) -> torch.Tensor:
    """This rank's contiguous n/P slice of a sequence (the same on every rank before the split)."""
    p, r = dist.get_world_size(group), dist.get_rank(group)
    n = x.shape[dim]
    assert n % p == 0, f"{n} tokens do not split evenly over {p} sequence-parallel ranks"
    return x.narrow(dim, r * (n // p), n // p)


def gather_tokens(x: torch.Tensor, group, dim: int = 1) -> torch.Tensor:
    """Concatenate every rank's slice along `dim` (gradients go back to each slice's rank)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous(), group=group), dim=dim)


def sequence_parallel_group(size: int, device_type: str):
    """This rank's group of `size` consecutive ranks (every rank calls this): (world/size) x size mesh."""
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size() if dist.is_initialized() else 1
    if world % size:
        raise SoraError(f"train.sequence_parallel_size={size} must divide the number of processes ({world})")
    mesh = init_device_mesh(device_type, (world // size, size), mesh_dim_names=("replica", "sequence"))
    return mesh["sequence"].get_group()


def share_rng_state(group) -> None:
    """Give every rank of `group` its first rank's torch RNG state (CPU and CUDA), so they draw the same noise.

    Anything one rank alone draws (rank 0's sample videos, say) would otherwise make the group's ranks denoise
    different noise for the same clip, and the gradients would be silently wrong.
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    state = [torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None]
    dist.broadcast_object_list(state, src=dist.get_global_rank(group, 0), group=group)
    torch.set_rng_state(state[0])
    if cuda:
        torch.cuda.set_rng_state(state[1])


# ---------------------------------------------------------------------------------------------------------------
# Applying it to a DiT
# ---------------------------------------------------------------------------------------------------------------


class UlyssesAttention(nn.Module):
    """A self-attention core (q, k, v: b h n/P d, this rank's tokens) run over all tokens for h/P heads."""

    def __init__(self, core: nn.Module, group):
        super().__init__()
        self.core, self.group = core, group

    def forward(self, q, k, v, backend, seg=None) -> torch.Tensor:
        q, k, v = (seq_to_heads(x, self.group) for x in (q, k, v))  # b h/P n d
        return heads_to_seq(self.core(q, k, v, backend, seg), self.group)  # b h n/P d


class SplitTokens(nn.Module):
    """Each clip's tokens split over the ranks of `group` before the DiT's blocks, and gathered after them."""

    def __init__(self, group):
        super().__init__()
        self.group = group

    def forward(self, tokens: torch.Tensor, ctx):
        """tokens: b n d, and the BlockContext of its n tokens -> this rank's b n/P d and their context."""
        return shard_tokens(tokens, self.group), ctx.split(lambda x, dim: shard_tokens(x, self.group, dim),
                                                           tokens.shape[1])

    def gather(self, out: torch.Tensor) -> torch.Tensor:
        return gather_tokens(out, self.group)  # b n/P e -> b n e


def parallelize_sequence(dit: nn.Module, group) -> None:
    """Split every clip's tokens over the ranks of `group` (Ulysses): `dit` (a sora.models.dit.DiT with full
    attention and cross-attention to the text) then gives whole outputs on every rank, from a share of the work."""
    if dit.args.attention_layout != "full" or dit.args.text_conditioning != "cross":
        raise SoraError("train.sequence_parallel_size > 1 needs dit.attention_layout=full and "
                        "dit.text_conditioning=cross")
    assert not isinstance(dit.sequence_split, SplitTokens), "this DiT already splits its tokens"
    for block in dit.blocks:
        block.attn.core = UlyssesAttention(block.attn.core, group)
    dit.sequence_split = SplitTokens(group)
