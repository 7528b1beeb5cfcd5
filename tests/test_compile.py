"""train.compile: each DiT block compiled (regional compilation) gives the eager model's outputs and gradients."""

import pytest
import torch

from sora.models.conditioning import Conditioning
from sora.models.dit import DiT, DiTArgs


@pytest.mark.slow  # inductor compiles C++ on CPU: about a minute
def test_compiled_blocks_match_eager():
    torch.manual_seed(0)
    args = DiTArgs(hidden_size=32, depth=2, num_heads=2, patch_size=[1, 2, 2])
    eager = DiT(3, 16, args)
    for p in eager.parameters():
        torch.nn.init.normal_(p, std=0.05)
    compiled = DiT(3, 16, args)
    compiled.load_state_dict(eager.state_dict())
    for block in compiled.blocks:
        block.compile()
    x, t = torch.randn(2, 3, 2, 8, 8), torch.rand(2)
    ctx, mask = torch.randn(2, 4, 16), torch.ones(2, 4, dtype=torch.bool)
    for model in (eager, compiled):
        model(x, t, Conditioning(ctx, mask)).square().mean().backward()
    torch.testing.assert_close(compiled(x, t, Conditioning(ctx, mask)), eager(x, t, Conditioning(ctx, mask)),
                               atol=1e-4, rtol=1e-4)
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)
