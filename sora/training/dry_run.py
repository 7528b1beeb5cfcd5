"""`train.dry_run=true`: what a run would do, before it does anything, and a refusal when the data cannot feed it.

Prints (and returns, for RUN/dry_run.json):
- the bucket histogram of the training data: clips per bucket, batches per epoch (per device), and the clips
  skipped, by reason: every clip of every shard counted as the check before a real run's first step counts them
  (sora/data/preflight.py, by the stream's own rules). Shards written by data/make_shards.py carry .json metadata,
  so nothing is decoded; others are probed once per clip;
- tokens per batch and the model FLOPs of one training step, per bucket (sora/models/flops.py);
- parameter counts: trained and frozen;
- the peak memory per device of a training step for the model, precision, checkpointing and parallelism chosen
  (sora/models/memory.py), per bucket.

It fails, naming the bucket, when a bucket that data.buckets names receives no clip (the same line as a real
run's check, sora/data/preflight.py): Open-Sora users found such buckets only by their absence from the logs.
"""

import logging
from collections import Counter
from dataclasses import replace

import torch
from omegaconf import OmegaConf

from sora.data.buckets import BucketSet
from sora.data.preflight import Survey, empty_bucket, survey
from sora.data.stream import DROPPED, ClipStream, expand_shards
from sora.devices import default_precision, world_size
from sora.errors import SoraError
from sora.models.dit import DiT
from sora.models.flops import dit_train_flops
from sora.models.memory import training_memory

log = logging.getLogger(__name__)


def bucket_histogram(data_cfg, buckets: BucketSet) -> Survey:
    """Clips per bucket index and skipped clips per reason over every clip of every training shard (clips without
    .json metadata are probed)."""
    # A report: every bad sample counted (data.strict is the loader's); packing and caches do not move a clip.
    data = replace(OmegaConf.to_object(data_cfg), latent_cache=None, packing=False, strict=False)
    s = survey(ClipStream(expand_shards(data.shards), data, buckets), None, None, read_media=True)
    return s


def dry_run(cfg, bundle, buckets: BucketSet) -> dict:
    """The report (see the module docstring); raises SoraError when a configured bucket gets no clip."""
    if cfg.data.latent_cache:
        raise SoraError("train.dry_run reads video shards (data.shards); with data.latent_cache set it has no "
                        "histogram to make: run it without data.latent_cache")
    t = cfg.train
    world, sp = world_size(t.devices, t.num_nodes, t.accelerator, count_auto=True), t.sequence_parallel_size
    readers = world // sp  # sequence-parallel ranks share batches
    histogram = bucket_histogram(cfg.data, buckets)
    # data.min_scores' drops under the loader's own names for them (min_scores.NAME), beside the bad samples
    counts = histogram.clips
    skipped = histogram.skipped + Counter({f"{DROPPED}{k}": v for k, v in histogram.dropped.items()})
    precision, strategy = default_precision(t.precision, t.accelerator), t.strategy.value
    trained = sum(p.numel() for p in bundle.trainable().parameters() if p.requires_grad)  # LoRA: the adapter
    frozen = sum(p.numel() for p in bundle.parameters()) - trained
    text_len = bundle.encode_text(["a"]).text.shape[1]  # padded to the encoder's length, as training batches are
    with torch.device("meta"):
        meta_dit = DiT(bundle.vae.latent_channels, bundle.text.dim, bundle.dit.args)  # shapes only
    if cfg.train.lora.rank > 0:  # what LoRA's layers save for backward, and what its frozen base does not
        from sora.models.lora import add_lora

        add_lora(meta_dit, OmegaConf.to_object(cfg.train.lora))
    rows = []
    for i, b in enumerate(buckets.buckets):
        size = buckets.batch_sizes[i]
        grid = bundle.geometry.token_grid(b.num_frames, b.height, b.width)
        tokens = grid[0] * grid[1] * grid[2]
        batch_bytes = size * 3 * b.num_frames * b.height * b.width * 4
        memory = training_memory(meta_dit, trained, frozen, grid, text_len, size, batch_bytes, precision, strategy,
                                 world, sp)
        rows.append({"bucket": [b.num_frames, b.height, b.width], "clips": counts.get(i, 0),
                     "batch_size": size, "batches_per_epoch_per_device": -(-counts.get(i, 0) // (size * readers)),
                     "tokens_per_batch": tokens * size,
                     "tflops_per_step": dit_train_flops(bundle.dit, grid, text_len, size) / sp / 1e12,
                     "peak_memory_gib": memory.as_gib()})
    report = {"buckets": rows, "skipped": dict(skipped), "params": {"trained": trained, "frozen": frozen},
              "precision": precision, "strategy": strategy, "devices": world, "sequence_parallel": sp,
              "checkpoint_fraction": cfg.dit.checkpoint_fraction}
    log.info("dry run: %d clips in %d bucket(s), %d skipped %s; %s trained + %s frozen parameters; %s, %s on %d "
             "device(s), checkpoint_fraction %s", sum(counts.values()), len(rows), sum(skipped.values()),
             dict(skipped) or "", f"{trained / 1e6:.2f}M", f"{frozen / 1e6:.2f}M", precision, strategy, world,
             cfg.dit.checkpoint_fraction)
    for r in rows:
        log.info("  bucket %-16s clips %6d  batch %3d  batches/epoch/device %5d  tokens/batch %7d  TFLOP/step %8.3f  "
                 "peak memory %.2f GiB/device (state %.2f, activations %.2f, transient %.2f)", str(r["bucket"]),
                 r["clips"], r["batch_size"], r["batches_per_epoch_per_device"], r["tokens_per_batch"],
                 r["tflops_per_step"],
                 *(r["peak_memory_gib"][k] for k in ("total", "state", "activations", "transient")))
    if problem := empty_bucket(histogram, buckets, cfg.data, f"data.shards={cfg.data.shards!r}"):
        raise SoraError(problem)
    return report


# ---------------------------------------------------------------------------------------------------------------
# Fine-tuning a released model: the memory table (docs/TRAINING.md, "Fine-tuning from released weights")
# ---------------------------------------------------------------------------------------------------------------

# Wan2.1's transformer sizes (its config.json): width, FFN width, heads, blocks; 16 latent channels, umT5's 4096-wide
# text, 1x2x2 patches, one shared adaLN map (adaLN-single), no pooled text.
WAN_SIZES = {"Wan2.1-1.3B": (1536, 8960, 12, 30), "Wan2.1-14B": (5120, 13824, 40, 40)}


def wan_sized_dit(name: str):
    """Our DiT at a Wan2.1 size, on the meta device (shapes only). The FFN width is set through mlp_ratio
    (8960 / 1536 and 13824 / 5120 give exactly 8960 and 13824)."""
    from sora.models.dit_args import DiTArgs

    width, ffn, heads, depth = WAN_SIZES[name]
    args = DiTArgs(hidden_size=width, depth=depth, num_heads=heads, mlp_ratio=ffn / width, patch_size=[1, 2, 2],
                   modulation="single", pooled_text=False, head_mlp_width=0)  # Wan's head is linear
    with torch.device("meta"):
        return DiT(16, 4096, args)


def finetune_memory_table(frames: int = 81, height: int = 480, width: int = 832, lora_rank: int = 32,
                          gpus: tuple = (1, 8, 64), gpu_gib: float = 80) -> tuple[list[dict], str]:
    """(rows, markdown): per-GPU memory of a full fine-tune and a LoRA of each Wan2.1 size on 1, 8 and 64 GPUs, one
    clip of frames x height x width a GPU (Wan's VAE: 4x temporal, 8x spatial compression; 81 x 480 x 832 is
    21 x 60 x 104 latents, 32,760 tokens), 512 text tokens (umT5's padded length), bf16-mixed."""
    from sora.models.lora import LoRAArgs, adapter_modules, add_lora
    from sora.models.memory import GiB, finetune_activations, finetune_state

    grid = (1 + (frames - 1) // 4, height // 16, width // 16)  # latents / 1x2x2 patches
    rows = []
    for name in WAN_SIZES:
        for method in ("full", f"LoRA r{lora_rank}"):
            dit = wan_sized_dit(name)
            params = sum(p.numel() for p in dit.parameters())
            lora = 0
            if method != "full":
                add_lora(dit, LoRAArgs(rank=lora_rank, alpha=lora_rank))
                lora = sum(p.numel() for p in adapter_modules(dit).parameters())
                base = wan_sized_dit(name)  # the state's base count from the plain DiT
            act = finetune_activations(dit, grid, 512)
            for n in gpus:
                state = finetune_state(dit if not lora else base, lora, n)
                held = sum(state.values())
                peak_none, peak_ckpt = held + act["none"] + act["working"], held + act["all"] + act["working"]
                rows.append({"model": name, "params": params, "method": method, "trained": lora or params,
                             "gpus": n, "strategy": "one device, param_dtype=bf16" if n == 1 else "fsdp",
                             **{k: v / GiB for k, v in state.items()},
                             "activations": act["none"] / GiB, "activations_ckpt": act["all"] / GiB,
                             "peak": peak_none / GiB, "peak_ckpt": peak_ckpt / GiB,
                             "fits": peak_ckpt / GiB <= gpu_gib})
    head = ("| model | method (trained) | GPUs | weights | grads | optimizer | EMA | activations | activations, "
            "checkpointed | peak | peak, checkpointed |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]

    def peak(gib: float) -> str:  # in bold when it does not fit
        return f"{gib:.1f}" if gib <= gpu_gib else f"**{gib:.1f}**"

    for r in rows:
        trained = f"{r['trained'] / 1e9:.2f}B" if r["trained"] >= 1e9 else f"{r['trained'] / 1e6:.1f}M"
        lines.append(f"| {r['model']} ({r['params'] / 1e9:.2f}B) | {r['method']} ({trained}) | {r['gpus']} | "
                     f"{r['weights']:.1f} | {r['grads']:.1f} | {r['optimizer']:.1f} | {r['ema']:.1f} | "
                     f"{r['activations']:.1f} | {r['activations_ckpt']:.1f} | {peak(r['peak'])} | "
                     f"{peak(r['peak_ckpt'])} |")
    return rows, "\n".join(lines) + f"\n\nGiB per GPU; in bold: over {gpu_gib:g} GiB."


def main(argv=None) -> int:
    from sora.errors import ArgumentParser

    p = ArgumentParser(prog="python -m sora.training.dry_run", description="The fine-tuning memory table (GiB a GPU).")
    p.add_argument("--finetune-table", action="store_true", required=True,
                   help="full fine-tune and LoRA of Wan2.1-1.3B and 14B sized DiTs on 1, 8 and 64 GPUs")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--lora-rank", type=int, default=32)
    a = p.parse_args(argv)
    print(finetune_memory_table(a.frames, a.height, a.width, a.lora_rank)[1])
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
