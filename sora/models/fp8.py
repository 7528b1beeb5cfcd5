"""FP8 training of the DiT's linears with torchao's float8 recipes (`train.fp8`): the blocks' matmuls run on FP8
tensor cores with fp32 master weights; what is kept in high precision is everything outside the blocks,
adaLN's modulation (one row a clip: no gain from FP8) and cross-attention's key/value projection of the text
(batch x text length rows: too few to gain, and rarely a multiple of 16).

FP8 matmuls need every inner dimension to be a multiple of 16, and the weight gradient's inner dimension is the
number of tokens, which native sizes, buckets and packs make arbitrary (a 5x9x15 grid is 675): the linears pad
it with zeros (torchao's pad_inner_dim), which changes no sum. An H200 run without this stopped at the first
backward with "trailing dimension of mat1 to be divisible by 16" (docs/BENCHMARKS.md, FP8).

  tensorwise  one scale per tensor (torchao's fastest recipe)
  rowwise     one scale per row (more accurate, slower)

torchao (`pip install -e '.[fp8]'`) and a CUDA GPU with FP8 tensor cores (compute capability 8.9+: Ada, Hopper,
Blackwell) are required; `fp8_unavailable` says in one line why not, and the config check calls it first.
"""

import dataclasses
from typing import Optional

import torch
import torch.nn as nn

from sora.errors import SoraError

RECIPES = ("tensorwise", "rowwise")


def fp8_unavailable(recipe: str) -> Optional[str]:
    """Why `train.fp8=RECIPE` cannot run on this machine (one line), or None when it can."""
    if recipe not in RECIPES:
        return f"train.fp8={recipe!r}: choose one of {', '.join(RECIPES)} (or null: no FP8)"
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return f"train.fp8={recipe} needs torchao: pip install -e '.[fp8]'"
    if not torch.cuda.is_available():
        return f"train.fp8={recipe} runs on a CUDA GPU with FP8 tensor cores and there is none here; use train.fp8=null"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        return (f"train.fp8={recipe} needs FP8 tensor cores (compute capability 8.9+); this "
                f"{torch.cuda.get_device_name()} is {major}.{minor}: use train.fp8=null")
    return None


def fp8_linear(module: nn.Module, fqn: str) -> bool:
    """Which linears go to FP8: inside the blocks, on video tokens (not adaLN's, not the text's key/value), both
    sides a multiple of 16 (the FP8 matmul's rule)."""
    return (isinstance(module, nn.Linear) and fqn.startswith("blocks.") and "adaLN_modulation" not in fqn
            and not fqn.endswith("cross.kv") and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def convert_to_fp8(dit: nn.Module, recipe: str) -> int:
    """Swap the DiT's block linears for torchao's Float8Linear in place (weights kept); returns how many."""
    if problem := fp8_unavailable(recipe):
        raise SoraError(problem)
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    before = sum(fp8_linear(m, name) for name, m in dit.named_modules())
    config = dataclasses.replace(Float8LinearConfig.from_recipe_name(recipe), pad_inner_dim=True)  # any token count
    convert_to_float8_training(dit, module_filter_fn=fp8_linear, config=config)
    return before
