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
