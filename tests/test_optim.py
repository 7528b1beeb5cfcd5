"""AdamW as train.py builds it: one fused kernel on the CPU too, the same updates as torch's loop, and the schedule."""

import pytest
import torch
from omegaconf import OmegaConf

from sora.config.schema import LRSchedule, OptimConfig
from sora.training.optim import adamw, lr_factor


def params_and_grads(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((7, 5), (5,), (3, 4, 2))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    return params


def test_cpu_parameters_get_the_fused_kernel():
    opt = adamw(params_and_grads(), OmegaConf.structured(OptimConfig), lambda: 0.0)["optimizer"]
    assert opt.defaults["fused"] is True


def test_fused_updates_equal_torchs_loop():
    cfg = OmegaConf.structured(OptimConfig(weight_decay=0.1))
    fused, loop = params_and_grads(), params_and_grads()
    opt = adamw(fused, cfg, lambda: 0.0)["optimizer"]
    lr = opt.param_groups[0]["lr"]  # the schedule's first (warm-up) rate
    ref = torch.optim.AdamW(loop, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, foreach=False)
    for step in range(5):
        opt.step()
        ref.step()
        for a, b in zip(fused, loop):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=f"step {step}")


@pytest.mark.parametrize("progress, factor", [(0.0, 1.0), (0.5, 1.0), (0.85, 0.5), (1.0, 0.0)])
def test_wsd_holds_then_anneals_over_the_last_fraction(progress, factor):
    assert lr_factor(1000, progress, 100, LRSchedule.wsd, 0.3) == pytest.approx(factor)
