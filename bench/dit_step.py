"""DiT training-step speed and memory: our DiT against diffusers' video transformers, same shapes, one run.

Each row builds one model from a small random config: the same width, depth, heads, 16 latent channels,
1x2x2 patches, token count and text length. It runs forward + MSE loss + backward in a fresh process, so
each row's peak memory is its own. Rows:
  ours_cross       sora.models.dit.DiT, full attention + cross-attention to text (as Wan)
  ours_joint       sora.models.dit.DiT, full attention with text in the attention (MM-DiT, as CogVideoX)
  wan              diffusers.WanTransformer3DModel
  cogvideox        diffusers.CogVideoXTransformer3DModel

    python bench/dit_step.py                                    # CPU: width 384, depth 4, 4x8x8 tokens
    python bench/dit_step.py --preset XL --grid 16 32 32        # GPU: the XL preset at 16k tokens, bf16
    python bench/dit_step.py --preset XL --grid 32 32 32 --checkpoint-fraction 1 --models ours_cross
    python bench/dit_step.py --preset XL128 --grid 16 32 32 --models ours_cross --compile --fp8 tensorwise

Prints one JSON object per result row on stdout, then ratio rows (ours / peer step time as a speed-up).
MFU is reported where the GPU's bf16 peak is known (sora/models/flops.py); model FLOPs are ours for every row,
since all rows do the same work up to the variants' small differences.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = {"cpu": (384, 4, 6), "S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16),
           "XL128": (1152, 28, 9), "1.6B": (1536, 30, 12), "3B": (2048, 32, 16)}  # (width, depth, heads): configs/dit/


def build(name: str, width: int, depth: int, heads: int, grid, text_len: int, text_dim: int, ckpt_fraction: float,
          backend: str = "sdpa", modulation: str = "per_block"):
    """(model, step inputs -> prediction) for one row."""
    t, h, w = grid
    if name.startswith("ours"):
        from sora.models.conditioning import Conditioning
        from sora.models.dit import DiT, DiTArgs

        model = DiT(16, text_dim, DiTArgs(hidden_size=width, depth=depth, num_heads=heads, patch_size=[1, 2, 2],
                                          head_mlp_width=0,  # a linear head, as the rows recorded and the peers
                                          text_conditioning="joint" if name == "ours_joint" else "cross",
                                          checkpoint_fraction=ckpt_fraction, attention_backend=backend,
                                          modulation=modulation if name == "ours_cross" else "per_block"))
        return model, lambda x, ts, ctx, mask: model(x, ts, Conditioning(ctx, mask))
    if name == "wan":
        from diffusers import WanTransformer3DModel

        model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=heads,
                                      attention_head_dim=width // heads, in_channels=16, out_channels=16,
                                      text_dim=text_dim, ffn_dim=4 * width, num_layers=depth)
        if ckpt_fraction > 0:
            model.enable_gradient_checkpointing()
        return model, lambda x, ts, ctx, mask: model(x, ts * 1000, ctx, return_dict=False)[0]
    if name == "cogvideox":
        from diffusers import CogVideoXTransformer3DModel

        model = CogVideoXTransformer3DModel(num_attention_heads=heads, attention_head_dim=width // heads,
                                            in_channels=16, out_channels=16, text_embed_dim=text_dim,
                                            num_layers=depth, sample_width=2 * w, sample_height=2 * h,
                                            sample_frames=(t - 1) * 4 + 1, max_text_seq_length=text_len)
        if ckpt_fraction > 0:
            model.enable_gradient_checkpointing()

        def step(x, ts, ctx, mask):
            out = model(x.transpose(1, 2), ctx, ts * 1000, return_dict=False)[0]  # b t c h w
            return out.transpose(1, 2)

        return model, step
    raise SystemExit(f"unknown model {name!r}")


def run_row(a) -> dict:
    """Time one model in this process (called in a fresh subprocess per row)."""
    from sora.models.flops import device_peak_flops, dit_train_flops, mfu

    device = torch.device(a.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
    width, depth, heads = PRESETS[a.preset]
    heads = a.heads or heads
    t, h, w = a.grid
    torch.manual_seed(0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with device:  # built where it runs: an XL model's init on the CPU would cost seconds per row
        model, step = build(a.row, width, depth, heads, a.grid, a.text_len, a.text_dim, a.checkpoint_fraction,
                            a.attention_backend, a.modulation)
    model.to(device).train()
    # train.param_dtype=bf16 (the optimizer's fp32 masters are not timed)
    if a.bf16_weights and a.row.startswith("ours"):
        from sora.training.master_weights import lower_block_linears

        lower_block_linears(model, torch.bfloat16)
    if a.fp8 and a.row.startswith("ours"):  # before compiling, as torchao asks (train.fp8 does the same)
        from sora.models.fp8 import convert_to_fp8

        convert_to_fp8(model, a.fp8)
    if a.compile:  # regional compilation of every row's repeated blocks, as train.compile does for ours
        blocks = getattr(model, "blocks", None) or model.transformer_blocks
        for block in blocks:
            block.compile()
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(a.batch_size, 16, t, 2 * h, 2 * w, device=device)
    ts = torch.rand(a.batch_size, device=device)
    ctx = torch.randn(a.batch_size, a.text_len, a.text_dim, device=device)
    mask = torch.ones(a.batch_size, a.text_len, dtype=torch.bool, device=device)
    target = torch.randn_like(x)

    def one_step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = step(x, ts, ctx, mask)
        loss = (out.float() - target).square().mean()
        loss.backward()
        for p in model.parameters():
            p.grad = None

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(a.warmup):
        one_step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        one_step()
    sync()
    seconds = (time.perf_counter() - t0) / a.steps
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # peak resident memory of this process over the baseline before the model was built (KiB on Linux)
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    tokens = t * h * w * a.batch_size
    if a.profile_out:  # one more step under the profiler: where the time goes, per kernel (per op on a CPU)
        from torch.profiler import ProfilerActivity, profile

        on_gpu = device.type == "cuda"
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])) as prof:
            one_step()
            sync()
        table = prof.key_averages().table(sort_by="cuda_time_total" if on_gpu else "self_cpu_time_total", row_limit=30,
                                          max_name_column_width=70)
        Path(a.profile_out).mkdir(parents=True, exist_ok=True)
        mode = "compiled" if a.compile else "eager"
        variant = ("_fp8" if a.fp8 else "") + ("_bf16w" if a.bf16_weights else "")
        (Path(a.profile_out) / f"profile_{a.row}_{a.attention_backend}_{mode}{variant}_{tokens}.txt").write_text(table)
    from sora.models.dit import DiT, DiTArgs

    with torch.device("meta"):
        text = "joint" if a.row in ("ours_joint", "cogvideox") else "cross"
        ref = DiT(16, a.text_dim, DiTArgs(hidden_size=width, depth=depth, num_heads=heads, patch_size=[1, 2, 2],
                                          text_conditioning=text, head_mlp_width=0))
    flops = dit_train_flops(ref, tuple(a.grid), a.text_len, a.batch_size)
    value = mfu(flops, seconds, device_peak_flops(device))
    built_heads = model.config.num_attention_heads if hasattr(model, "config") else model.blocks[0].attn.num_heads
    return {"model": a.row, "heads": built_heads, "params_m": round(params / 1e6, 1), "step_s": round(seconds, 4),
            "tokens_per_s": round(tokens / seconds, 1), "peak_mem_mb": round(peak_mb, 1),
            "tflops": round(flops / seconds / 1e12, 3), "mfu": None if value is None else round(value, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--grid", type=int, nargs=3, default=[4, 8, 8], metavar=("T", "H", "W"), help="latent token grid")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--heads", type=int,
                   help="attention heads instead of the preset's (same width): XL with 9 heads of 128")
    p.add_argument("--text-len", type=int, default=32)
    p.add_argument("--text-dim", type=int, default=512)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--models", default="ours_cross,ours_joint,wan,cogvideox")
    p.add_argument("--checkpoint-fraction", type=float, default=0.0,
                   help="share of blocks with activation checkpointing")
    p.add_argument("--attention-backend", default="sdpa",
                   help="ours: dit.attention_backend (sdpa, cudnn, flash, fa4, xformers, flex, math)")
    p.add_argument("--compile", action="store_true", help="torch.compile each transformer block of every row")
    p.add_argument("--fp8", choices=["tensorwise", "rowwise"],
                   help="ours: the blocks' linears in FP8 (train.fp8; torchao)")
    p.add_argument("--modulation", default="per_block", choices=["per_block", "single"],
                   help="ours_cross: dit.modulation (single: adaLN-single, one map shared by the blocks, as Wan)")
    p.add_argument("--bf16-weights", action="store_true",
                   help="ours: the blocks' linears store bf16 weights (train.param_dtype=bf16)")
    p.add_argument("--profile-out", help="write each row's per-kernel profile of one step to this folder")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--row", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.dtype = a.dtype or ("bf16" if a.device.startswith("cuda") else "fp32")
    if a.bf16_weights and a.dtype != "bf16":
        p.error("--bf16-weights trains under bf16 autocast: add --dtype bf16 (the GPU default)")
    if a.heads is not None and (a.heads < 1 or PRESETS[a.preset][0] % a.heads):
        p.error(f"--heads {a.heads} does not divide the {a.preset} preset's width {PRESETS[a.preset][0]}")
    if a.row:  # child: one row
        print(json.dumps(run_row(a)), flush=True)
        return
    device_name = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.machine()
    common = {"bench": "dit_step", "device": device_name,
              "cpus": os.cpu_count(), "torch": torch.__version__, "preset": a.preset, "grid": a.grid,
              "tokens": a.grid[0] * a.grid[1] * a.grid[2] * a.batch_size, "batch_size": a.batch_size,
              "text_len": a.text_len,
              "dtype": a.dtype, "checkpoint_fraction": a.checkpoint_fraction,
              "attention_backend": a.attention_backend, "compile": a.compile, "fp8": a.fp8,
              "bf16_weights": a.bf16_weights, "modulation": a.modulation}
    try:
        import diffusers

        common["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    rows = {}
    for name in a.models.split(","):
        args = [sys.executable, __file__, "--row", name] + [s for s in sys.argv[1:]]
        done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            err = (done.stderr.strip().splitlines() or ["?"])[-1]
            row = {**common, "model": name, "error": err[:300]}
        else:
            row = {**common, **json.loads(done.stdout.strip().splitlines()[-1])}
            rows[name] = row
        print(json.dumps(row), flush=True)
    for ours, peer in (("ours_cross", "wan"), ("ours_joint", "cogvideox"), ("ours_cross", "cogvideox")):
        if ours in rows and peer in rows:
            memory_ratio = rows[peer]["peak_mem_mb"] / max(rows[ours]["peak_mem_mb"], 1e-9)
            print(json.dumps({**common, "ratio": f"{peer} step_s / {ours} step_s",
                              "speedup": round(rows[peer]["step_s"] / rows[ours]["step_s"], 2),
                              "memory_ratio": round(memory_ratio, 2)}), flush=True)


if __name__ == "__main__":
    main()
