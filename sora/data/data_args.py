"""The data settings (`data.*`: `DataArgs`), and the one place that turns them into the paths a run reads.

`resolve_data_paths` runs once at start, before anything is built or saved: it builds the built-in dataset when
data.shards are its own, resolves every `auto` path, and checks every file and shard pattern the run will read,
each failure one line naming its key. A default never points at a dataset the run did not ask for: held-out
shards and prompt files are `auto`, which follows data.shards' dataset (the built-in one's files when data.shards
is the built-in dataset's, else none, said in one log line).
"""

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from sora.data.moving_shapes import MovingShapesArgs, ensure_moving_shapes
from sora.data.stream import check_shards, expand_shards
from sora.errors import SoraError
from sora.settings import Settings, setting

log = logging.getLogger(__name__)

AUTO = "auto"  # a path that follows data.shards' dataset (see resolve_data_paths)

# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DataArgs(Settings):
    """The loader (`sora.data.stream.make_loader`, `BucketSet.from_config`) and what a run samples and evaluates.
    The defaults are the CPU quick start's: 8 frames of 32x32 at stride 2 from the built-in dataset."""

    # Webdataset shards: a brace pattern (train-{000000..000007}.tar) or a glob (train-*.tar).
    shards: str = "data/moving_shapes/train-*.tar"
    moving_shapes: Optional[MovingShapesArgs] = field(default_factory=MovingShapesArgs)
    num_frames: int = setting(8, ge=1)
    frame_stride: int = setting(2, ge=1)
    height: int = setting(32, ge=1)
    width: int = setting(32, ge=1)
    random_start: bool = True  # clips start at a random time (false: at frame 0)
    # Captions say what a clip does from its first frame (a bouncing caption of the built-in dataset names the way
    # it starts). Null: every crop starts at a random time. A share: that share of crops starts at the clip's first
    # frame, the rest at a random time, and those later crops are trained as continuations, given their first
    # frames (conditioning mode first_k, sora/training/dit_task.py): only the frames given say where in the clip
    # they are, as a later window of a long video is given the video so far. Needs conditioning that gives frames.
    clip_start_share: Optional[float] = setting(None, ge=0, le=1)
    random_crop: bool = True  # a random crop of what covers the bucket (false: the centre)
    # The quick start's: more optimizer steps in the CPU budget beat bigger batches this early.
    batch_size_per_gpu: int = setting(16, ge=1)
    # Size and duration buckets, [[num_frames, height, width], ...] (null: the one bucket above); clips go to the
    # nearest of their aspect ratio (sora/data/buckets.py). Buckets with num_frames 1 take images.
    buckets: Optional[List[List[int]]] = None
    # Per-bucket batch size that keeps DiT tokens per batch near this (null: batch_size_per_gpu for every bucket).
    tokens_per_batch: Optional[int] = setting(None, ge=1)
    # Share of batches that are image batches (null: as they come from the data; packs mix the two themselves).
    image_batch_ratio: Optional[float] = setting(None, ge=0, le=1)
    # Pack clips of any bucket into one sequence of up to tokens_per_batch tokens, with block-diagonal attention
    # (NaViT; DiT.forward_packed), instead of one bucket per batch. Needs tokens_per_batch.
    packing: bool = False
    num_workers: int = setting(1, ge=0)
    # Videos decoded once and kept whole in each reader's memory (a DataLoader worker's), up to this many MB
    # (sora/data/decode.py: DecodedClips); 0: decode every time. The built-in dataset is 100 MB and read for ten
    # epochs in the quick start: its worker then decodes in the first epoch only instead of taking CPU from training.
    decoded_cache_mb: int = setting(256, ge=0)
    shuffle_buffer: int = setting(512, ge=1)
    strict: bool = False  # true: stop at the first bad sample, naming it (false: skip, count, report)
    min_side_px: int = setting(8, ge=1)  # smaller clips are skipped (too_small)
    max_aspect: float = setting(6.0, ge=1)  # longer side / shorter side beyond this is skipped (extreme_aspect)
    # Curation scores to train on, {NAME: MIN, ...} (e.g. data.min_scores={motion:0.5,aesthetic:4.5}): a sample whose
    # .json `scores` (data/curate.py, docs/CURATION.md) has NAME below MIN is dropped and counted as min_scores.NAME;
    # a sample without NAME stops the run at start, naming score and shard. Null or {}: every sample. Typed Any, not
    # Dict[str, float]: Hydra merges an override into a typed dict, which struct mode refuses a new key; names and
    # numbers are checked in `check`.
    min_scores: Optional[Any] = None
    # A latent cache written by data/cache_latents.py: training reads latents and text embeddings, no decoding.
    latent_cache: Optional[str] = None
    sample_fps: int = setting(4, ge=1)  # frame rate of written samples: the source fps / frame_stride
    # Held-out shards: the DiT's validation loss (val.*) and the VAE's reconstruction at the end of task=vae (null:
    # no validation loss; the VAE then reconstructs training shards). auto: the built-in dataset's test shards
    # when data.shards is the built-in dataset's, else null.
    eval_shards: Optional[str] = AUTO
    # Prompt files for the samples logged during training and written at its end (one prompt a line); auto: the
    # built-in dataset's when data.shards is the built-in dataset's, else null.
    eval_prompts: Optional[str] = AUTO
    train_prompts: Optional[str] = AUTO

    def check(self, at: str = "") -> None:
        for row in self.buckets or []:
            if len(row) != 3 or min(row) < 1:
                raise SoraError(f"{at}buckets: each bucket is [num_frames, height, width] >= 1, got {list(row)}")
        if self.min_scores is not None:
            if not isinstance(self.min_scores, Mapping):
                raise SoraError(f"{at}min_scores must be a mapping {{NAME: MIN, ...}}, e.g. {{motion: 0.5, aesthetic: "
                                f"4.5}}, got {self.min_scores!r}")
            for name, low in self.min_scores.items():
                if not str(name).strip():
                    raise SoraError(f"{at}min_scores: a score name is empty; give {{NAME: MIN, ...}}, e.g. "
                                    "{motion: 0.5}")
                if isinstance(low, bool) or not isinstance(low, (int, float)) or low != low:  # low != low: NaN
                    raise SoraError(f"{at}min_scores.{name} must be a number, got {low!r}")
        if self.clip_start_share is not None and not self.random_start:
            raise SoraError(f"{at}clip_start_share={self.clip_start_share} starts the other crops at a random time, "
                            f"and {at}random_start=false starts every crop at frame 0: set {at}random_start=true "
                            f"or {at}clip_start_share=null")
        if self.clip_start_share is not None and self.latent_cache:
            raise SoraError(f"{at}clip_start_share={self.clip_start_share} picks where each crop starts, and a "
                            f"latent cache holds one crop of each clip: set {at}clip_start_share=null or "
                            f"{at}latent_cache=null")
        if self.packing and not self.tokens_per_batch:
            raise SoraError(f"{at}packing=true packs clips up to {at}tokens_per_batch tokens: set {at}tokens_per_batch")


# ---------------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------------

# What `auto` becomes for the built-in dataset: files its writer puts in data.moving_shapes.root.
BUILTIN_FILES = {"eval_shards": "test-*.tar", "eval_prompts": "heldout_prompts.txt",
                 "train_prompts": "train_prompts.txt"}


def is_builtin(data: DataArgs) -> bool:
    """data.shards are the built-in dataset's: data.moving_shapes is set and data.shards lies under its root."""
    if data.moving_shapes is None:
        return False
    root = os.path.abspath(os.path.expanduser(data.moving_shapes.root))
    return os.path.commonpath([root, os.path.abspath(os.path.expanduser(data.shards))]) == root


def latent_shards(data: DataArgs) -> str:
    """The shard pattern of data.latent_cache (written by data/cache_latents.py)."""
    return f"{data.latent_cache.rstrip('/')}/latents-*.tar"


def resolve_data_paths(data: DataArgs) -> DataArgs:
    """`data` with every `auto` path resolved, after checking every file and shard pattern the run reads.

    Builds the built-in dataset first when data.shards is its own and it is missing. Checked, each failure one
    SoraError naming its key: data.shards (or data.latent_cache and its shards) and data.eval_shards match files
    that open as tar archives; a prompt file that is missing gets one warning (no samples of those prompts). Call
    it once at start, before the config is saved anywhere: the returned paths replace the config's, so that a
    checkpoint records what its run read (`python -m sora.eval` reads data.eval_shards from there).
    """
    builtin = is_builtin(data)
    if builtin:
        t0 = time.time()
        if ensure_moving_shapes(data.moving_shapes):
            log.info("built the moving-shapes dataset in %s (%.0f s)", data.moving_shapes.root, time.time() - t0)
    resolved, off = {}, []
    for key, name in BUILTIN_FILES.items():
        if getattr(data, key) == AUTO:
            resolved[key] = f"{data.moving_shapes.root.rstrip('/')}/{name}" if builtin else None
            if not builtin:
                off.append(f"data.{key}")
    if off:
        log.info("data: data.shards=%r is not the built-in dataset's, so %s (auto) are off; set them to use held-out "
                 "shards or prompt files of this dataset", data.shards, ", ".join(off))
    data = dataclasses.replace(data, **resolved)

    if data.latent_cache:  # training reads the cache, not data.shards
        if not Path(data.latent_cache).is_dir():
            raise SoraError(f"data.latent_cache={data.latent_cache!r} is not a directory (write one with "
                            "data/cache_latents.py)")
        check_shards(expand_shards(latent_shards(data), key="data.latent_cache"))
    else:
        check_shards(expand_shards(data.shards))
    if data.eval_shards:
        check_shards(expand_shards(data.eval_shards, key="data.eval_shards"))
    for key in ("eval_prompts", "train_prompts"):
        path = getattr(data, key)
        if path and not Path(path).is_file():
            log.warning("data.%s=%r is not a file: no samples of those prompts (null silences this)", key, path)
    return data
