"""Samplers on velocity fields whose exact flow is known; schedules; guidance; the objective's loss."""

import pytest
import torch

from sora.diffusion.guidance import guided_velocity
from sora.diffusion.objectives import ObjectiveArgs, RectifiedFlow
from sora.diffusion.samplers import SAMPLERS, euler, heun
from sora.diffusion.schedules import SCHEDULES, shifted, uniform
from sora.models.conditioning import Conditioning

VELOCITY = ObjectiveArgs(prediction="velocity")  # the tests below were written for velocity prediction


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
    out = euler(lambda x, t: (x - c) / t, noise, uniform(1))
    torch.testing.assert_close(out, c.expand(3, 2))


@pytest.mark.parametrize("name, order", [("euler", 1), ("heun", 2)])
def test_gaussian_flow_converges_at_its_order(name, order):
    torch.manual_seed(0)
    mu, sigma = torch.tensor([2.0, -1.0, 0.5]), 0.3
    noise = torch.randn(64, 3)
    target = mu + sigma * noise
    errors = [(SAMPLERS[name](gaussian_velocity(mu, sigma), noise, uniform(n)) - target).abs().max().item()
              for n in (16, 64)]
    # 4x the steps divides the error by about 4^order
    assert errors[0] / errors[1] > 0.75 * 4**order
    assert errors[1] < (0.05 if order == 1 else 0.002)


def test_heun_beats_euler_at_equal_steps():
    mu, sigma = torch.tensor([1.0]), 0.5
    noise = torch.randn(256, 1)
    target = mu + sigma * noise
    err = {f.__name__: (f(gaussian_velocity(mu, sigma), noise, uniform(10)) - target).abs().mean()
           for f in (euler, heun)}
    assert err["heun"] < err["euler"] / 3


def test_rectified_flow_loss_vanishes_for_the_exact_velocity():
    c = torch.randn(1, 3, 2, 4, 4)
    x0 = c.expand(4, -1, -1, -1, -1)

    def oracle(xt, t, cond):  # single data point c: v = (x_t - c) / t
        return (xt - c) / t.view(-1, 1, 1, 1, 1)

    flow, text_only = RectifiedFlow(VELOCITY), Conditioning(torch.zeros(4, 1, 1), torch.ones(4, 1, dtype=torch.bool))
    assert flow.loss(oracle, x0, text_only) < 1e-8
    assert flow.loss(lambda xt, t, cond: torch.zeros_like(xt), x0, text_only) > 0.1
    # x0 prediction: the network that outputs the data point is exact, and v = (x_t - x0) / t
    flow = RectifiedFlow(ObjectiveArgs(prediction="x0", t_min=1e-6))
    assert flow.loss(lambda xt, t, cond: c.expand_as(xt), x0, text_only) < 1e-8
    xt, t = torch.randn(4, 3, 2, 4, 4), torch.full((4,), 0.25)
    torch.testing.assert_close(flow.velocity(lambda *a: c.expand_as(xt), xt, t, text_only), (xt - c) / 0.25)


@pytest.mark.parametrize("packed", [False, True])
def test_loss_t_floor_divides_the_x0_error_by_the_floored_t(packed):
    """objective.loss_t_floor: the x0 model's loss is |x0 - x0_hat|^2 / max(t, floor)^2 (no floor: / t^2)."""
    x0 = torch.randn(3, 3, 2, 4, 4)
    guess = torch.randn(3, 2, 4, 4)  # the model's x0, the same whatever it is given
    text = Conditioning(torch.zeros(3, 1, 1), torch.ones(3, 1, dtype=torch.bool))
    losses = {}
    for floor in (0.05, 0.3):
        flow = RectifiedFlow(ObjectiveArgs(prediction="x0", t_min=0.05, loss_t_floor=floor))
        flow.sample_t = lambda n, device, generator=None: torch.tensor([0.1, 0.3, 0.8])

        def model(xt, t, cond):
            return guess.expand_as(xt)

        model.forward_packed = lambda xs, t, cond: [guess.expand_as(x) for x in xs]
        losses[floor] = flow.loss(model, list(x0) if packed else x0, text)
    err = (x0 - guess).square().flatten(1).mean(1)  # per clip
    torch.testing.assert_close(losses[0.05], (err / torch.tensor([0.1, 0.3, 0.8]) ** 2).mean())
    torch.testing.assert_close(losses[0.3], (err / torch.tensor([0.3, 0.3, 0.8]) ** 2).mean())


def test_logit_normal_timesteps():
    t = RectifiedFlow(ObjectiveArgs(0.0, 1.0)).sample_t(20000, "cpu")
    assert 0 < t.min() and t.max() < 1 and abs(t.median().item() - 0.5) < 0.02
    assert RectifiedFlow(ObjectiveArgs(1.0, 1.0)).sample_t(20000, "cpu").median() > 0.7  # mean shifts towards noise


@pytest.mark.parametrize("prediction", ["velocity", "x0"])
def test_packed_loss_is_the_loss_of_the_clips_run_alone(prediction):
    """A pack's loss through DiT.forward_packed equals the element-weighted loss of each clip run by itself."""
    from sora.models.dit import DiT, DiTArgs

    torch.manual_seed(0)
    model = DiT(3, 8, DiTArgs(hidden_size=32, depth=1, num_heads=2, patch_size=[1, 2, 2]))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    flow = RectifiedFlow(ObjectiveArgs(prediction=prediction))
    x0s = [torch.randn(3, 2, 4, 4), torch.randn(3, 1, 6, 8)]
    cond = Conditioning(torch.randn(2, 4, 8), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))
    torch.manual_seed(1)
    packed = flow.loss(model, x0s, cond)

    torch.manual_seed(1)  # the same draws, then every clip alone
    t = flow.sample_t(2, "cpu")
    sq, n = 0.0, 0
    for i, x0 in enumerate(x0s):
        eps = torch.randn_like(x0)
        xt = (1 - t[i]) * x0 + t[i] * eps
        v = flow.velocity(model, xt[None], t[i : i + 1], cond.rows(slice(i, i + 1)))[0]
        sq, n = sq + (v - (eps - x0)).square().sum(), n + x0.numel()
    torch.testing.assert_close(packed, sq / n, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_run_from_noise_to_data(name):
    times = SCHEDULES[name](10, 3.0)
    assert len(times) == 11 and times[0] == 1.0 and times[-1] == 0.0
    assert all(a > b for a, b in zip(times, times[1:]))


def test_shifted_schedule_is_sd3_eq_23():
    s = 3.0
    for t, t_shifted in zip(uniform(8), shifted(8, s)):
        assert t_shifted == pytest.approx(s * t / (1 + (s - 1) * t))
    assert shifted(8, 1.0) == pytest.approx(uniform(8))  # shift 1 is no shift
    assert shifted(8, 3.0)[4] > uniform(8)[4]  # more of the steps spent at high noise


def test_samplers_follow_the_schedule_and_report_progress():
    seen, steps = [], []
    schedule = shifted(5, 3.0)

    def v(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    euler(v, torch.zeros(1), schedule, callback=lambda step, total: steps.append((step, total)))
    assert seen == schedule[:-1] and steps == [(i, 5) for i in range(1, 6)]


# ---------------------------------------------------------------------------------------------------------------
# Guidance
# ---------------------------------------------------------------------------------------------------------------


class ReadsCondition(torch.nn.Module):
    """A 'model' whose output is the mean of its text tokens, broadcast: it shows which conditioning it saw."""

    def forward(self, x, t, cond):
        return cond.text.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1).expand_as(x)


def test_guidance_is_uncond_plus_scale_times_the_difference():
    flow, model, x = RectifiedFlow(VELOCITY), ReadsCondition(), torch.zeros(2, 1, 1, 2, 2)
    mask = torch.ones(2, 1, dtype=torch.bool)
    uncond, cond = Conditioning(torch.zeros(2, 1, 1), mask), Conditioning(torch.ones(2, 1, 1), mask)
    assert guided_velocity(flow, model, [uncond, cond], [4.0])(x, 0.5).unique().tolist() == [4.0]  # 0 + 4 (1 - 0)
    assert guided_velocity(flow, model, [uncond, cond], [1.0])(x, 0.5).unique().tolist() == [1.0]  # just cond


def test_two_scales_weigh_each_step_of_the_chain():
    flow, model, x = RectifiedFlow(VELOCITY), ReadsCondition(), torch.zeros(1, 1, 1, 2, 2)
    mask = torch.ones(1, 1, dtype=torch.bool)
    chain = [Conditioning(torch.full((1, 1, 1), v), mask) for v in (0.0, 1.0, 3.0)]  # none, visual, visual + text
    v = guided_velocity(flow, model, chain, [2.0, 5.0])(x, 0.5)
    assert v.unique().tolist() == [0.0 + 2.0 * (1.0 - 0.0) + 5.0 * (3.0 - 1.0)]


def test_a_new_sampler_and_schedule_are_one_entry_each(monkeypatch):
    """What docs/ARCHITECTURE.md promises: a function and an entry in SAMPLERS / SCHEDULES, nothing else."""
    from sora.config import check_train_config
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings, generate
    from tests.conftest import compose_config

    visited = []

    @torch.no_grad()
    def midpoint(velocity_fn, noise, times, callback=None):
        x = noise
        for t, t_next in zip(times[:-1], times[1:]):
            visited.append(t)
            x = x + (t_next - t) * velocity_fn(x + 0.5 * (t_next - t) * velocity_fn(x, t), 0.5 * (t + t_next))
        return x

    monkeypatch.setitem(SAMPLERS, "midpoint", midpoint)
    monkeypatch.setitem(SCHEDULES, "halves", lambda num_steps, shift: [1.0 / 2**i for i in range(num_steps)] + [0.0])
    cfg = compose_config("train", ["sampler.name=midpoint", "sampler.schedule=halves", "sampler.steps=3",
                                   "dit.hidden_size=32", "dit.depth=1", "dit.num_heads=2", "data.num_frames=2",
                                   "data.height=16", "data.width=16", "dit.patch_size=[1,8,8]"])
    check_train_config(cfg)
    video = generate(ModelBundle.build(cfg).eval(), ["a red circle moving left"], 0, SampleSettings.of(cfg))
    assert video.shape == (1, 3, 2, 16, 16) and visited == [1.0, 0.5, 0.25]
