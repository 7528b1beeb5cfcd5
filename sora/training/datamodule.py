"""The Lightning side of the data stream: this rank's loader, and every reader's position in checkpoints."""

import logging
from collections import Counter
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from sora.data.buckets import BucketSet
from sora.data.stream import make_loader, strip_bookkeeping

log = logging.getLogger(__name__)


SKIPPED_FILE = "skipped_samples.jsonl"


class ClipDataModule(L.LightningDataModule):
    """Hands Lightning this rank's loader, and keeps (and checkpoints) every reader's position and skip counts.

    Every skipped sample goes to `skipped_path` (default: RUN/skipped_samples.jsonl, in the trainer's
    default_root_dir, which train.py sets to the run directory); a worker's SoraError is raised here, in the main
    process, as the user's one line (sora/data/stream.py: strip_bookkeeping)."""

    def __init__(self, cfg, seed: int, buckets: BucketSet | None = None, sequence_parallel_size: int = 1,
                 skipped_path: Path | None = None):
        super().__init__()
        self.cfg, self.seed, self.buckets = cfg, seed, buckets
        self.sp = sequence_parallel_size  # ranks that share one batch (each takes a slice of its tokens)
        self.skipped_path = skipped_path
        self.positions: dict[int, dict] = {}
        self.skipped: Counter = Counter()
        self.batches_seen = 0
        self._resume: dict | None = None

    def train_dataloader(self) -> DataLoader:
        # Sequence parallelism: the sp ranks of a group read the same batches, so data splits over groups.
        world, rank = self.trainer.world_size // self.sp, self.trainer.global_rank // self.sp
        workers = max(1, self.cfg.num_workers)
        state, offset = None, 0
        if self._resume:
            r = self._resume
            if r.get("world_size") == world and r.get("num_workers") == workers:
                state = {int(k): v for k, v in r["positions"].items()}
                offset = r["batches_seen"] % workers  # the DataLoader asks workers in turn, starting at 0
            else:
                log.warning("data: the checkpoint's loader ran %s rank(s) x %s worker(s), this run %s x %s: "
                            "starting the stream afresh", r.get("world_size"), r.get("num_workers"), world, workers)
        if self.skipped_path is None:
            self.skipped_path = Path(self.trainer.default_root_dir) / SKIPPED_FILE
        return make_loader(self.cfg, self.seed, rank, world, self.buckets, state, offset, self.skipped_path)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        batch, position, skipped = strip_bookkeeping(batch)
        if position is not None:
            self.positions[position["reader"]] = position
            self.batches_seen += 1
        self.skipped.update(skipped)
        return batch

    def state_dict(self) -> dict:
        # Every rank calls this when a checkpoint is written; rank 0 writes the file. Gather all ranks'
        # reader positions (reader ids are global) so that each rank finds its own on resume.
        positions = dict(self.positions)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, positions)
            for part in gathered:
                positions.update(part)
        return {"positions": {str(k): v for k, v in positions.items()}, "batches_seen": self.batches_seen,
                "world_size": self.trainer.world_size // self.sp if self.trainer else 1,
                "num_workers": max(1, self.cfg.num_workers), "skipped": dict(self.skipped)}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state
        self.positions = {int(k): v for k, v in state.get("positions", {}).items()}
        self.batches_seen = state.get("batches_seen", 0)
        self.skipped = Counter(state.get("skipped", {}))
