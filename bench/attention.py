"""Attention kernels at DiT shapes: forward + backward time of each backend behind `dit.attention_backend`.

At 16k+ tokens attention is most of a DiT step's FLOPs (sora/models/flops.py), so the kernel decides the speed.
Rows: torch SDPA with its own choice, SDPA pinned to each of its kernels (flash, cuDNN, memory-efficient),
xformers (which picks FlashAttention-3 on Hopper where it can), and FlexAttention. GPU only.

    python bench/attention.py                          # XL heads: 16 x 72, 16k and 32k tokens, bf16
    python bench/attention.py --tokens 4096 --heads 6 --head-dim 64

Prints one JSON object per row: milliseconds for forward + backward (median of CUDA-event timings) and
TFLOP/s counted as 3 x the forward's 4 n^2 d h (the convention of sora/models/flops.py).
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F


def sdpa_pinned(kernel):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, kernel)

    def run(q, k, v):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v)

    return run


def make(name: str):
    if name == "sdpa":
        return F.scaled_dot_product_attention
    if name.startswith("sdpa_"):
        return sdpa_pinned({"sdpa_flash": "FLASH_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION",
                            "sdpa_efficient": "EFFICIENT_ATTENTION"}[name])
    if name == "xformers":
        import xformers.ops as xops

        return lambda q, k, v: xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                               v.transpose(1, 2)).transpose(1, 2)
    if name == "flex":
        from torch.nn.attention.flex_attention import flex_attention

        return torch.compile(flex_attention, dynamic=False)
    raise SystemExit(f"unknown backend {name!r}")


def time_ms(fn, q, k, v, grad, warmup: int, reps: int) -> float:
    times = []
    for i in range(warmup + reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(q, k, v)
        out.backward(grad)
        end.record()
        torch.cuda.synchronize()
        q.grad = k.grad = v.grad = None
        if i >= warmup:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[16384, 32768])
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=72)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--backends", default="sdpa,sdpa_flash,sdpa_cudnn,sdpa_efficient,xformers,flex")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()
    assert torch.cuda.is_available(), "bench/attention.py times CUDA kernels: run it on a GPU"
    for n in a.tokens:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, grad = (torch.randn(a.batch_size, a.heads, n, a.head_dim, device="cuda", dtype=torch.bfloat16,
                                     generator=g) for _ in range(4))
        for x in (q, k, v):
            x.requires_grad_(True)
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float()) if n <= 16384 else None
        flops = 3 * 4 * a.batch_size * a.heads * n * n * a.head_dim
        for name in a.backends.split(","):
            row = {"bench": "attention", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "backend": name, "tokens": n, "heads": a.heads, "head_dim": a.head_dim, "batch_size": a.batch_size}
            try:
                fn = make(name)
                out = fn(q, k, v)
                if ref is not None:  # a wrong kernel must not win on speed: error against the fp32 reference
                    row["rel_err"] = float((out.float() - ref).norm() / ref.norm())
                ms = time_ms(fn, q, k, v, grad, a.warmup, a.reps)
                row.update(ms=round(ms, 3), tflops=round(flops / ms / 1e9, 1))
            except Exception as e:  # a kernel that does not take this shape: say so, go on with the others
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
