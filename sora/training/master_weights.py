"""bf16 weights with fp32 master weights in the optimizer (`train.param_dtype=bf16`).

The DiT blocks' linears hold bf16 weights, so autocast has no fp32 weight to cast each forward and the gradients
are bf16. AdamW updates fp32 copies ("master weights", as in Micikevicius et al. 2018, Mixed Precision Training,
sec. 3.1) and writes them back rounded. Updates smaller than bf16's spacing are not lost: at 1.0 the spacing is
2^-7, about 0.008, far above a typical lr x step.

The master copies are in the optimizer's state_dict, so a checkpoint resumes to the same fp32 weights. Only
parameters that are not fp32 get one; fp32 ones (embeddings, norms, the output layer) are updated in place as
usual. FSDP keeps fp32 shards and computes in bf16 on its own, so this is for single-device and DDP runs.
"""

import torch
import torch.nn as nn

from sora.errors import SoraError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def lower_block_linears(dit: nn.Module, dtype: torch.dtype) -> int:
    """Store the weights and biases of every linear in the DiT's blocks as `dtype`, in place; returns how many."""
    linears = [m for name, m in dit.named_modules() if name.startswith("blocks.") and isinstance(m, nn.Linear)]
    for m in linears:
        m.to(dtype)
    return len(linears)


class MasterWeightAdamW(torch.optim.AdamW):
    """AdamW over fp32 master copies of the parameters that are not fp32; `model_params` are the module's own."""

    def __init__(self, params, **kwargs):
        self.model_params = list(params)
        # fp32 parameters are their own master; the others get an fp32 copy that AdamW owns
        self.masters = [p if p.dtype == torch.float32 else p.detach().float().clone() for p in self.model_params]
        super().__init__(self.masters, **kwargs)

    def _low(self):
        return [(p, m) for p, m in zip(self.model_params, self.masters) if m is not p]

    def step(self, closure=None):
        loss = None
        if closure is not None:  # Lightning's closure: forward, backward, clipping, the non-finite check
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            low = self._low()
            for p, m in low:  # a gradient dropped by the non-finite guard (None) leaves its master as it was
                m.grad = None if p.grad is None else p.grad.float()
            super().step()
            for p, m in low:
                p.copy_(m)  # rounded to the parameter's dtype
                m.grad = None  # the fp32 gradient copy is not kept between steps
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for p in self.model_params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def full_precision(self) -> list[torch.Tensor]:
        """The fp32 value of every model parameter, in `model_params` order (what the EMA averages)."""
        return self.masters

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["master_weights"] = {i: m.detach().clone()
                                   for i, (p, m) in enumerate(zip(self.model_params, self.masters)) if m is not p}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        saved = state.pop("master_weights", None)
        super().load_state_dict(state)
        # super() re-created self.param_groups' lists but kept our tensors; restore the fp32 values
        with torch.no_grad():
            if saved is None:  # a checkpoint of an fp32 run: the module's (just restored) weights are the truth
                for p, m in self._low():
                    m.copy_(p)
                return
            low = {i for i, (p, m) in enumerate(zip(self.model_params, self.masters)) if m is not p}
            if set(map(int, saved)) != low:
                raise SoraError(f"the checkpoint's optimizer holds master weights for {len(saved)} parameters and this "
                                f"model has {len(low)} in low precision: "
                                "resume with the train.param_dtype it was saved with")
            for i, value in saved.items():
                self.masters[int(i)].copy_(value)
                self.model_params[int(i)].copy_(value)
