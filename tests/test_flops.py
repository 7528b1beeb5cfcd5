"""The analytic FLOP count matches torch's FlopCounterMode on every DiT variant."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sora.models.conditioning import Conditioning
from sora.models.dit import DiT, DiTArgs
from sora.models.flops import dit_forward_flops, dit_train_flops, mfu


@pytest.mark.parametrize("layout,text,head", [("full", "cross", 0), ("factorized", "cross", 0), ("full", "joint", 0),
                                              ("full", "cross", 96)])
def test_forward_flops_match_torch_counter(layout, text, head):
    # attention_backend=math: the counter does not see SDPA's fused CPU kernel
    model = DiT(4, 24, DiTArgs(hidden_size=64, depth=2, num_heads=4, patch_size=[1, 2, 2], attention_layout=layout,
                               text_conditioning=text, attention_backend="math", head_mlp_width=head))
    b, grid, m = 2, (3, 4, 6), 7
    x = torch.randn(b, 4, grid[0], grid[1] * 2, grid[2] * 2)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, torch.rand(b), Conditioning(torch.randn(b, m, 24), torch.ones(b, m, dtype=torch.bool)))
    counted = counter.get_total_flops()
    ours = dit_forward_flops(model, grid, m, b)
    assert abs(ours - counted) / counted < 0.01, (ours, counted)


def test_train_flops_and_mfu():
    model = DiT(4, 24, DiTArgs(hidden_size=64, depth=2, num_heads=4, patch_size=[1, 2, 2]))
    f = dit_forward_flops(model, (2, 4, 4), 5, 3)
    assert dit_train_flops(model, (2, 4, 4), 5, 3) == 3 * f
    assert mfu(1e12, 0.5, 4e12) == 0.5 and mfu(1e12, 0.5, None) is None
