"""Which devices a run uses: the process count a `train.devices` value asks for, the default precision, and a
`device=` setting resolved to a torch.device. One place for what train.py, the dry run, the config check,
sample.py and the evaluator each need."""

import torch

from sora.errors import SoraError


def world_size(devices, num_nodes: int, accelerator: str = "auto", count_auto: bool = False) -> int | None:
    """Processes for `train.devices` x `train.num_nodes`: a count or a list of indices; "auto" and -1 give None
    (Lightning decides at run time), or with `count_auto` what it would pick on this machine."""
    devices = str(devices).strip()
    if devices.isdigit():
        count = int(devices)
    elif devices.startswith("["):
        count = len([x for x in devices.strip("[]").split(",") if x.strip()])
    elif not count_auto:
        return None
    else:
        count = max(1, torch.cuda.device_count()) if uses_gpu(accelerator) else 1
    return count * num_nodes


def uses_gpu(accelerator: str) -> bool:
    """True when a run with `train.accelerator` will train on CUDA devices here."""
    return torch.cuda.is_available() and str(accelerator) in ("auto", "gpu", "cuda")


def default_precision(precision: str | None, accelerator: str) -> str:
    """`train.precision`, or when null bf16 autocast on GPU and fp32 on CPU."""
    return precision or ("bf16-mixed" if uses_gpu(accelerator) else "32-true")


def resolve_device(name: str) -> torch.device:
    """`device=auto|cpu|cuda|cuda:N` -> a device this torch can use, or one line saying why not."""
    try:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)
    except RuntimeError as e:  # not a device string torch knows
        raise SoraError(f"device={name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SoraError(f"device={name!r}, but this torch sees no CUDA device (use device=auto or cpu)")
    return device
