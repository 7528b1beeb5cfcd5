"""Stages on many machines through Ray Data (the `curate-ray` extra): the same tasks and workers as the local pool,
run by `Dataset.map_batches` with a callable class (one actor per worker, models loaded once in its constructor,
`num_gpus` each when the device is a GPU), their records streamed back in order to the one process that appends
them to the manifest, so resuming works as it does locally.

    python data/curate.py score split.jsonl --out score.jsonl --engine ray --workers 32 --device cuda

`--workers` is the number of actors; Ray places them over the cluster that `ray.init()` joins (RAY_ADDRESS, or a
local one). Every machine reads the videos at the paths the manifest names: a shared file system.
"""

import json
import pickle

import numpy as np

from sora.curation.tasks import run_task
from sora.errors import SoraError


class _StageActor:
    """One Ray actor: the stage's worker, set up once, run on batches of tasks (one JSON string each)."""

    def __init__(self, worker_bytes: bytes, device: str):
        self.worker = pickle.loads(worker_bytes)
        self.worker.setup(device)  # "cuda" is the actor's own GPU: Ray sets CUDA_VISIBLE_DEVICES per actor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = [json.dumps(run_task(self.worker, [tuple(t) for t in json.loads(task)])) for task in batch["task"]]
        return {"records": np.array(out, dtype=object)}


def ray_run_tasks(worker, tasks: list, workers: int, device: str):
    """Each task's records, in task order, computed by `workers` Ray actors."""
    try:
        import ray
    except ImportError:
        raise SoraError("--engine ray needs Ray Data: pip install '.[curate-ray]'") from None
    if not tasks:
        return
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # dedup decides in input order
    gpus = 1 if str(device).startswith("cuda") else 0
    ds = ray.data.from_items([{"task": json.dumps(t)} for t in tasks])
    ds = ds.map_batches(_StageActor, batch_size=1, batch_format="numpy", concurrency=max(1, workers), num_gpus=gpus,
                        fn_constructor_kwargs={"worker_bytes": pickle.dumps(worker), "device": str(device)})
    for row in ds.iter_rows():
        yield json.loads(row["records"])
