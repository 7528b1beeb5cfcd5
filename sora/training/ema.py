"""Exponential moving average of model weights (Polyak averaging), kept as a frozen copy of the model."""

import copy

import torch
import torch.nn as nn


class EMA(nn.Module):
    """Holds `ema.model`; `update(model, step)` moves it toward `model` with decay min(decay, (1+step)/(10+step)).

    The warm-up of the decay (as in TensorFlow's ExponentialMovingAverage with num_updates) keeps early,
    random weights from dominating the average of a short run.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, params: list[torch.Tensor] | None = None) -> None:
        """`params`: the values to average, in `model.parameters()` order (default: the model's own)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in (model.parameters() if params is None else params)]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
