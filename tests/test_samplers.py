"""Samplers on velocity fields whose exact flow is known."""

import pytest
import torch

from sora.objective import RectifiedFlow
from sora.samplers import SAMPLERS, euler, heun


def gaussian_velocity(mu: torch.Tensor, sigma: float):
    """Exact rectified-flow velocity when data ~ N(mu, sigma^2 I): x_t = (1-t) x0 + t eps, so
    E[x0 | x_t] = mu + (1-t) sigma^2 (x_t - (1-t) mu) / s2 with s2 = (1-t)^2 sigma^2 + t^2,
    E[eps | x_t] = t (x_t - (1-t) mu) / s2, and v = E[eps - x0 | x_t]. Its flow maps eps to mu + sigma eps."""

    def v(x, t):
        s2 = (1 - t) ** 2 * sigma**2 + t**2
        r = x - (1 - t) * mu
        return t * r / s2 - (mu + (1 - t) * sigma**2 * r / s2)

    return v


def test_euler_is_exact_on_a_straight_path():
    c = torch.tensor([1.5, -2.0])
    noise = torch.randn(3, 2)
    # one data point c: every path is straight, v = noise - c is constant along it
    out = euler(lambda x, t: (x - c) / t, noise, num_steps=1)
    torch.testing.assert_close(out, c.expand(3, 2))


@pytest.mark.parametrize("name, order", [("euler", 1), ("heun", 2)])
def test_gaussian_flow_converges_at_its_order(name, order):
    torch.manual_seed(0)
    mu, sigma = torch.tensor([2.0, -1.0, 0.5]), 0.3
    noise = torch.randn(64, 3)
    target = mu + sigma * noise
    errors = [(SAMPLERS[name](gaussian_velocity(mu, sigma), noise, n) - target).abs().max().item() for n in (16, 64)]
    # 4x the steps divides the error by about 4^order
    assert errors[0] / errors[1] > 0.75 * 4**order
    assert errors[1] < (0.05 if order == 1 else 0.002)


def test_heun_beats_euler_at_equal_steps():
    mu, sigma = torch.tensor([1.0]), 0.5
    noise = torch.randn(256, 1)
    target = mu + sigma * noise
    err = {f.__name__: (f(gaussian_velocity(mu, sigma), noise, 10) - target).abs().mean() for f in (euler, heun)}
    assert err["heun"] < err["euler"] / 3


def test_rectified_flow_loss_vanishes_for_the_exact_velocity():
    c = torch.randn(1, 3, 2, 4, 4)
    x0 = c.expand(4, -1, -1, -1, -1)

    def oracle(xt, t, ctx, mask):  # single data point c: v = (x_t - c) / t
        return (xt - c) / t.view(-1, 1, 1, 1, 1)

    flow = RectifiedFlow()
    assert flow.loss(oracle, x0, None, None) < 1e-8
    assert flow.loss(lambda xt, t, c_, m: torch.zeros_like(xt), x0, None, None) > 0.1
    # x0 prediction: the network that outputs the data point is exact, and v = (x_t - x0) / t
    flow = RectifiedFlow(prediction="x0", t_min=1e-6)
    assert flow.loss(lambda xt, t, c_, m: c.expand_as(xt), x0, None, None) < 1e-8
    xt, t = torch.randn(4, 3, 2, 4, 4), torch.full((4,), 0.25)
    torch.testing.assert_close(flow.velocity(lambda *a: c.expand_as(xt), xt, t, None, None), (xt - c) / 0.25)


def test_logit_normal_timesteps():
    t = RectifiedFlow(0.0, 1.0).sample_t(20000, "cpu")
    assert 0 < t.min() and t.max() < 1 and abs(t.median().item() - 0.5) < 0.02
    assert RectifiedFlow(1.0, 1.0).sample_t(20000, "cpu").median() > 0.7  # mean shifts towards noise


@pytest.mark.parametrize("prediction", ["velocity", "x0"])
def test_packed_loss_is_the_loss_of_the_clips_run_alone(prediction):
    """loss_packed through DiT.forward_packed equals the element-weighted loss of each clip run by itself."""
    from sora.dit import DiT

    torch.manual_seed(0)
    model = DiT(3, 8, hidden_size=32, depth=1, num_heads=2, patch_size=(1, 2, 2))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    flow = RectifiedFlow(prediction=prediction)
    x0s = [torch.randn(3, 2, 4, 4), torch.randn(3, 1, 6, 8)]
    ctx, mask = torch.randn(2, 4, 8), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    torch.manual_seed(1)
    packed = flow.loss_packed(model, x0s, ctx, mask)

    torch.manual_seed(1)  # the same draws, then every clip alone
    t = flow.sample_t(2, "cpu")
    sq, n = 0.0, 0
    for i, x0 in enumerate(x0s):
        eps = torch.randn_like(x0)
        xt = (1 - t[i]) * x0 + t[i] * eps
        v = flow.velocity(model, xt[None], t[i : i + 1], ctx[i : i + 1], mask[i : i + 1])[0]
        sq, n = sq + (v - (eps - x0)).square().sum(), n + x0.numel()
    torch.testing.assert_close(packed, sq / n, atol=1e-5, rtol=1e-5)
