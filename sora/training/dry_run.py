"""`train.dry_run=true`: what a run would do, before it does anything, and a refusal when the data cannot feed it.

Prints (and returns, for RUN/dry_run.json):
- the bucket histogram of the training data: clips per bucket, batches per epoch (per device), and the clips
  skipped, by reason (the stream's own rules: sora/data/stream.py). Shards written by data/make_shards.py carry
  .json metadata, so nothing is decoded; others are probed once per clip;
- tokens per batch and the model FLOPs of one training step, per bucket (sora/models/flops.py);
- parameter counts: trained and frozen;
- the peak memory per device of a training step for the model, precision, checkpointing and parallelism chosen
  (sora/models/memory.py), per bucket.

It fails, naming the bucket, when a bucket that data.buckets names receives no clip: Open-Sora users found such
buckets only by their absence from the logs.
"""

import logging
from collections import Counter

import torch

from sora.data.buckets import BucketSet
from sora.data.decode import BadSample
from sora.data.stream import ClipStream, expand_shards, raw_samples
from sora.errors import SoraError
from sora.models.dit import DiT
from sora.models.flops import dit_train_flops
from sora.models.memory import training_memory

log = logging.getLogger(__name__)


def bucket_histogram(data_cfg, buckets: BucketSet) -> tuple[Counter, Counter]:
    """(clips per bucket index, skipped clips per reason) over every training shard."""
    data = data_cfg.copy()
    data.latent_cache, data.packing = None, False
    stream = ClipStream(expand_shards(data.shards), data, buckets)
    counts, skipped = Counter(), Counter()
    for raw in raw_samples(stream.shards):
        try:
            counts[stream.locate(raw)[3]] += 1
        except BadSample as e:
            skipped[e.reason] += 1
    return counts, skipped


def _precision(cfg) -> str:
    on_gpu = torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda")
    return cfg.train.precision or ("bf16-mixed" if on_gpu else "32-true")


def _world_size(cfg) -> int:
    devices = str(cfg.train.devices).strip()
    if devices.isdigit():
        count = int(devices)
    elif devices.startswith("["):
        count = len([x for x in devices.strip("[]").split(",") if x.strip()])
    else:  # auto / -1: what Lightning would pick
        count = max(1, torch.cuda.device_count()) if torch.cuda.is_available() and cfg.train.accelerator != "cpu" else 1
    return count * cfg.train.num_nodes


def dry_run(cfg, bundle, buckets: BucketSet) -> dict:
    """The report (see the module docstring); raises SoraError when a configured bucket gets no clip."""
    if cfg.data.latent_cache:
        raise SoraError("train.dry_run reads video shards (data.shards); with data.latent_cache set it has no "
                        "histogram to make: run it without data.latent_cache")
    world, sp = _world_size(cfg), cfg.train.sequence_parallel_size
    readers = world // sp  # sequence-parallel ranks share batches
    counts, skipped = bucket_histogram(cfg.data, buckets)
    precision, strategy = _precision(cfg), cfg.train.strategy.value
    trained = sum(p.numel() for p in bundle.trainable().parameters())
    frozen = sum(p.numel() for p in bundle.parameters()) - trained
    text_len = bundle.encode_text(["a"]).text.shape[1]  # padded to the encoder's length, as training batches are
    with torch.device("meta"):
        meta_dit = DiT(bundle.vae.latent_channels, bundle.text.dim, bundle.dit.args)  # shapes only
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
                     "tokens_per_batch": tokens * size, "tflops_per_step": dit_train_flops(bundle.dit, grid, text_len, size) / sp / 1e12,
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
                 r["tflops_per_step"], *(r["peak_memory_gib"][k] for k in ("total", "state", "activations", "transient")))
    empty = [r["bucket"] for r in rows if r["clips"] == 0]
    if empty:
        where = "data.buckets" if cfg.data.buckets else "data.num_frames, data.height, data.width"
        raise SoraError(f"{where}: bucket {empty[0]} (frames, height, width) receives no clip from data.shards"
                        f"={cfg.data.shards!r} ({len(empty)} such bucket(s); skipped: {dict(skipped) or 'none'})")
    return report
