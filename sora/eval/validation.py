"""Validation loss: the diffusion loss on held-out clips at fixed noise and fixed timesteps, split over ranks.

Training loss draws a new timestep and new noise for every clip, so it is noisy and its level depends on the
timestep distribution of the objective. Two runs of an ablation compare instead on one number that depends on
the weights alone: the loss of the same clips, with the same noise, at the same equally spaced timesteps, for
every run and every checkpoint (SD3, Esser et al. 2024, ranks its models by such a validation loss).

- **Clips**: the first `val.num_clips` usable clips of `data.eval_shards`, in shard order, read as training reads
  them but from frame 0 and centre-cropped; a clip goes to its bucket as in training. Latents are the VAE's mean
  (no sampling), captions are never dropped, and no frame is given (text to video).
- **Noise**: clip i at timestep k draws its noise from a CPU generator seeded by (val.seed, i, k).
- **Timesteps**: `val.timesteps`. The result is the mean squared velocity error at each, and their mean.
- **Ranks**: the clips are cut into batches once, the same for any number of processes (each bucket's clips in
  order, `val.batch_size` or the bucket's batch size a batch); rank r runs batches r, r + W, r + 2W, ... and the
  per-clip losses are gathered. Sums are exact (math.fsum), so the result is the same bit for bit on 1 or N
  processes: no batch runs with other clips than it would alone, and no sum depends on the order it is added in.
  Sharded models (FSDP) need every rank in every forward: ranks with fewer batches repeat their first one and
  drop its result, so no rank idles while another works and none waits on a collective the others never join.
"""

import math
import random
from dataclasses import dataclass

import torch

from sora.data.buckets import BucketSet
from sora.data.decode import BadSample
from sora.data.stream import ClipStream, expand_shards, raw_samples
from sora.errors import SoraError

# ---------------------------------------------------------------------------------------------------------------
# The clips, cut into batches
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ValBatch:
    ids: list[int]  # each clip's index among the validation clips
    video: torch.Tensor  # b c t h w in [-1, 1]
    captions: list[str]


def eval_data_config(data_cfg):
    """The training data config, read for validation: held-out shards, from frame 0, centre crops, no packing."""
    data = data_cfg.copy()
    data.shards, data.latent_cache, data.packing, data.num_workers = data_cfg.eval_shards, None, False, 0
    data.random_start = data.random_crop = False
    data.min_scores = None  # held-out clips are read unfiltered (data.min_scores is training's)
    return data


def plan_batches(data_cfg, val_cfg, buckets: BucketSet) -> list[tuple[int, list[tuple[int, dict]]]]:
    """[(bucket index, [(clip id, raw sample), ...]), ...]: every validation batch, the same on every rank."""
    data = eval_data_config(data_cfg)
    if not data.shards:
        raise SoraError("the validation loss needs held-out clips: set data.eval_shards")
    try:
        shards = expand_shards(data.shards)
    except SoraError as e:  # its message names data.shards; here they are the held-out ones
        raise SoraError(str(e).replace("data.shards", "data.eval_shards", 1)) from None
    stream = ClipStream(shards, data, buckets)
    open_batches: dict[int, list] = {}
    batches, n = [], 0
    for raw in raw_samples(stream.shards):
        try:
            _, _, _, b = stream.locate(raw)
        except BadSample:  # skipped as training skips it; the clip ids count usable clips only
            continue
        members = open_batches.setdefault(b, [])
        members.append((n, raw))
        n += 1
        if len(members) >= (val_cfg.batch_size or buckets.batch_sizes[b]):
            batches.append((b, open_batches.pop(b)))
        if n >= val_cfg.num_clips:
            break
    batches += [(b, members) for b, members in sorted(open_batches.items()) if members]
    if n == 0:
        raise SoraError(f"data.eval_shards={data.shards!r} holds no usable clip for the validation loss")
    return batches


def decode_batches(data_cfg, buckets: BucketSet, planned) -> list[ValBatch]:
    """Decode the planned batches (only this rank's: decoding is the expensive part)."""
    data = eval_data_config(data_cfg)
    stream = ClipStream(expand_shards(data.shards), data, buckets)
    out = []
    for b, members in planned:
        items = [stream.process(raw, random.Random(0))[1] for _, raw in members]  # no randomness: start 0, centre crop
        out.append(ValBatch([i for i, _ in members], torch.stack([it["video"] for it in items]),  # b c t h w
                            [it["caption"] for it in items]))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------------------------


def clip_noise(shape, seed: int, clip_id: int, step: int) -> torch.Tensor:
    """The fixed noise of one clip at timestep index `step` (c t h w), the same on any device and rank."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + clip_id * 1009 + step)
    return torch.randn(shape, generator=g)


@torch.no_grad()
def batch_losses(bundle, batch: ValBatch, timesteps: list[float], seed: int) -> list[list[float]]:
    """[[loss at each timestep] for each clip]: mean squared velocity error over the clip's latent."""
    device = bundle.device
    z = bundle.vae.encode(batch.video.to(device), sample=False)  # b z t h w: the mean, no sampling
    cond = bundle.encode_text(batch.captions)
    out = [[0.0] * len(timesteps) for _ in batch.ids]
    for k, t in enumerate(timesteps):
        eps = torch.stack([clip_noise(z.shape[1:], seed, i, k) for i in batch.ids]).to(device, z.dtype)  # b z t h w
        tt = torch.full((z.shape[0],), float(t), device=device)  # b
        v = bundle.objective.velocity(bundle.dit, bundle.objective.noised(z, eps, tt), tt, cond)
        err = (v.double() - (eps - z).double()).square().flatten(1).mean(1)  # b
        for j, value in enumerate(err.tolist()):
            out[j][k] = value
    return out


def _gather(per_clip: dict) -> dict:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        parts = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, per_clip)
        per_clip = {k: v for part in parts for k, v in part.items()}
    return per_clip


def summarize(per_clip: dict[int, list[float]], timesteps: list[float]) -> dict:
    """{"loss", "per_timestep": {t: loss}, "num_clips"} from every clip's losses, exactly rounded sums."""
    n = len(per_clip)
    per_t = [math.fsum(v[k] for v in per_clip.values()) / n for k in range(len(timesteps))]
    return {"loss": math.fsum(per_t) / len(per_t), "per_timestep": {f"{t:g}": x for t, x in zip(timesteps, per_t)},
            "num_clips": n}


class ValidationLoss:
    """The validation loss of a model bundle on a run's held-out clips; this rank's share is decoded once."""

    def __init__(self, data_cfg, val_cfg, buckets: BucketSet, rank: int = 0, world_size: int = 1):
        self.timesteps, self.seed = [float(t) for t in val_cfg.timesteps], int(val_cfg.seed)
        planned = plan_batches(data_cfg, val_cfg, buckets)
        self.num_batches = len(planned)
        mine = planned[rank::world_size]
        # Every rank runs the same number of forwards (sharded models need each rank in each forward).
        self.rounds = -(-len(planned) // world_size)
        self.batches = decode_batches(data_cfg, buckets, mine)
        self.pad = self.batches[0] if self.batches else decode_batches(data_cfg, buckets, planned[:1])[0]

    def __call__(self, bundle, sharded: bool = False) -> dict:
        was_training = bundle.dit.training
        bundle.dit.eval()
        per_clip = {}
        try:
            for batch in self.batches:
                per_clip.update(zip(batch.ids, batch_losses(bundle, batch, self.timesteps, self.seed)))
            if sharded:  # join the other ranks' remaining forwards; the results are dropped
                for _ in range(self.rounds - len(self.batches)):
                    batch_losses(bundle, self.pad, self.timesteps, self.seed)
        finally:
            bundle.dit.train(was_training)
        return summarize(_gather(per_clip), self.timesteps)
