"""Tasks, the unit of a stage's work, and how a worker runs one: the same for the local process pool
(runner.py) and Ray Data (ray_engine.py)."""

import logging

log = logging.getLogger(__name__)

Task = list[tuple[str, list[dict] | None]]  # [(source, its records to do, or None for the split stage)]


def group_tasks(records: list[dict], min_clips: int = 1) -> list[Task]:
    """Clips grouped by source (in first-seen order), consecutive sources joined until a task has min_clips."""
    by_source: dict[str, list[dict]] = {}
    for r in records:
        by_source.setdefault(r["source"], []).append(r)
    tasks, task, n = [], [], 0
    for source, recs in by_source.items():
        task.append((source, recs))
        n += len(recs)
        if n >= min_clips:
            tasks.append(task)
            task, n = [], 0
    return tasks + ([task] if task else [])


def device_for(device: str, rank: int) -> str:
    """The device of worker `rank`: `cuda` spreads the workers over the visible GPUs; anything else as given."""
    if device == "cuda":
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 1:
            return f"cuda:{rank % torch.cuda.device_count()}"
    return device


def run_task(worker, task: Task) -> list[dict]:
    """A task's records. A file that fails in a way no stage foresaw is recorded as skipped with the error, so one
    file never ends a long run; what the stage expects (unreadable, empty, no scene) is its own reason."""
    if hasattr(worker, "run_task"):  # a stage that batches across files (caption)
        try:
            return worker.run_task(task)
        except Exception as e:  # noqa: BLE001 - the safety net: recorded, counted and logged, never a traceback
            return [r for source, records in task for r in _failed(source, records, e)]
    out = []
    for source, records in task:
        try:
            out += worker.run(source, records)
        except Exception as e:  # noqa: BLE001 - as above
            out += _failed(source, records, e)
    return out


def _failed(source: str, records: list[dict] | None, e: Exception) -> list[dict]:
    detail = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
    log.warning("skipping %s: error: %s", source, detail)
    if records is None:  # the split stage: one line for the file
        return [{"source": source, "start": 0, "end": 0, "skipped": "error", "detail": detail, "of": 1}]
    return [{**r, "skipped": "error", "detail": detail} for r in records]
