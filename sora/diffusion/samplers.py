"""ODE samplers for flow models. All share one signature:

    sampler(velocity_fn, noise, times, callback=None) -> x at times[-1]

where velocity_fn(x, t) returns dx/dt for a batch x at scalar time t (a float in [0, 1]), `times` is the schedule
the sampler visits (sora/diffusion/schedules.py: from 1.0, noise, down to 0.0, data), and callback(step, num_steps)
is called after every step (a progress bar). Guidance, conditioning and the model live in velocity_fn, the time
grid in the schedule; a new sampler is one function here and one entry in SAMPLERS.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from sora.diffusion.schedules import SCHEDULES
from sora.settings import Settings, setting

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]
Callback = Optional[Callable[[int, int], None]]


@torch.no_grad()
def euler(velocity_fn: VelocityFn, noise: torch.Tensor, times: list[float], callback: Callback = None) -> torch.Tensor:
    """Explicit Euler: x <- x + (t_next - t) v(x, t). First order; exact on straight paths."""
    x = noise
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        x = x + (t_next - t) * velocity_fn(x, t)
        if callback is not None:
            callback(i + 1, len(times) - 1)
    return x


@torch.no_grad()
def heun(velocity_fn: VelocityFn, noise: torch.Tensor, times: list[float], callback: Callback = None) -> torch.Tensor:
    """Heun's second-order method (EDM, Karras et al. 2022, alg. 1), with an Euler last step into t = 0."""
    x, num_steps = noise, len(times) - 1
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        v = velocity_fn(x, t)
        x_euler = x + (t_next - t) * v
        if t_next == 0.0:
            x = x_euler
        else:
            x = x + (t_next - t) * 0.5 * (v + velocity_fn(x_euler, t_next))
        if callback is not None:
            callback(i + 1, num_steps)
    return x


# ---------------------------------------------------------------------------------------------------------------
# UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models")
# ---------------------------------------------------------------------------------------------------------------
#
# In data-prediction form on the flow path x_t = (1 - t) x0 + t eps: alpha_t = 1 - t, sigma_t = t, the half
# log-SNR lambda_t = log((1 - t) / t), and the model's data prediction x0 = x - t v. Order 2 with the B(h) = e^h - 1
# variant ("bh2", the paper's choice for guided sampling), as diffusers' UniPCMultistepScheduler computes it with
# prediction_type=flow_prediction and use_flow_sigmas=True, and as Wan2.1 samples (FlowUniPCMultistepScheduler):
# first order at the first step (one prediction) and at the last (lower_order_final); the corrector (UniC) reuses
# each new evaluation to correct the step before, so N steps cost N model evaluations.

UNIPC_T_MAX = 1 - 1e-6  # t = 1 has alpha = 0 and lambda = -inf: diffusers and Wan start there instead


def _half_log_snr(t: float) -> float:
    return math.inf if t == 0 else math.log(1 - t) - math.log(t)


def _unipc_update(x: torch.Tensor, x0s: list[torch.Tensor], ts: list[float], order: int,
                  x0_new: torch.Tensor | None = None) -> torch.Tensor:
    """One UniP step from ts[-2] to ts[-1] (x0_new None), or the UniC correction of that step given the data
    prediction x0_new at ts[-1]. x0s: the data predictions at the times before ts[-1], newest last; `order` of them
    are used (UniP-p: p - 1 differences; UniC-p: p differences, the new one included)."""
    s0, t = ts[-2], ts[-1]
    alpha_t, sigma_t, sigma_s0 = 1 - t, t, s0
    lam_s0 = _half_log_snr(s0)
    hh = -(_half_log_snr(t) - lam_s0)  # -h: data prediction
    h_phi_1 = math.expm1(hh)  # e^-h - 1
    b_h = h_phi_1  # bh2: B(h) = e^h - 1 (of -h here)
    m0 = x0s[-1]
    rks, diffs = [], []
    for k in range(1, order):  # the earlier predictions' scaled differences (UniP-p and UniC-p: p - 1 of them)
        rk = (_half_log_snr(ts[-2 - k]) - lam_s0) / -hh
        rks.append(rk)
        diffs.append((x0s[-1 - k] - m0) / rk)
    x_next = (sigma_t / sigma_s0) * x - (alpha_t * h_phi_1) * m0
    if x0_new is None:  # UniP: order 2 takes rho = 1/2 (the paper's B(h) choice); order 1 is DPM-Solver++(1)
        return x_next - (alpha_t * b_h * 0.5) * diffs[0] if diffs else x_next
    # UniC: solve R rho = b for the correction's weights (R's rows: powers of the r_k, the new point at r = 1)
    rks.append(1.0)
    rows, bs, h_phi_k, factorial = [], [], h_phi_1 / hh - 1, 1
    for i in range(1, len(rks) + 1):
        rows.append([r ** (i - 1) for r in rks])
        bs.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    rhos = [0.5] if len(rks) == 1 else torch.linalg.solve(torch.tensor(rows, dtype=torch.float64),
                                                          torch.tensor(bs, dtype=torch.float64)).tolist()
    correction = sum(rho * d for rho, d in zip(rhos[:-1], diffs)) + rhos[-1] * (x0_new - m0)
    return x_next - (alpha_t * b_h) * correction


@torch.no_grad()
def unipc(velocity_fn: VelocityFn, noise: torch.Tensor, times: list[float], callback: Callback = None) -> torch.Tensor:
    """UniPC-2 (bh2) in the flow-matching data-prediction form: Wan2.1's sampler, diffusers' UniPC with flow sigmas."""
    ts = [min(float(t), UNIPC_T_MAX) for t in times]
    num_steps, x = len(ts) - 1, noise
    x0s: list[torch.Tensor] = []  # data predictions at ts[:i], the last two kept
    last_x, last_order = None, 1
    for i in range(num_steps):
        x0 = x - ts[i] * velocity_fn(x, ts[i])  # the data prediction at this time
        if i > 0:  # UniC: the step just taken, corrected with this evaluation
            x = _unipc_update(last_x, x0s, ts[:i + 1], last_order, x0_new=x0)
        x0s = (x0s + [x0])[-2:]
        order = min(2, num_steps - i, i + 1)  # first order at the start (one prediction) and at the last step
        last_x, last_order = x, order
        x = _unipc_update(x, x0s, ts[:i + 2], order)
        if callback is not None:
            callback(i + 1, num_steps)
    return x


SAMPLERS = {"euler": euler, "heun": heun, "unipc": unipc}

# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SamplerArgs(Settings):
    """`sampler.*`: how a run's samples are drawn (training samples, the end-of-run scores, sample.py's defaults)."""

    name: str = setting("euler", choices=lambda: SAMPLERS)
    steps: int = setting(25, ge=1)
    # Classifier-free guidance scale (1: none). Strong guidance for a small, briefly trained model, but not too strong:
    # at 10 the shapes came out with speckled fringes that blur square and circle. The quick start's 4: with the MLP
    # head, at 4 / 6 held-out shape read 0.66 / 0.66 and 0.72 / 0.66 in two seeds, and seed 0's forward seams were
    # 1.7x / 2.1x the clip's step (docs/results/QUICK_START.md, "An MLP head").
    cfg: float = setting(4.0, ge=0)
    schedule: str = setting("uniform", choices=lambda: SCHEDULES)  # or shifted (SD3 eq. 23)
    shift: float = setting(3.0, gt=0)  # schedule=shifted: t' = shift t / (1 + (shift - 1) t); SD3 uses 3 at 1024^2
