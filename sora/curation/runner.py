"""Running a stage: what is left to do (resume), the work on a pool of processes, the manifest written as results
come in, and the run's summary.

The unit of work is a task: one or more sources, each with the clips of it still to do, so a file is decoded
once. A stage's worker has `setup(device)` (models, once per process) and `run(source, records) -> records`; a
stage that decides in order across files (dedup) also gives `finish(records) -> records`, called in the main
process on each task's results in input order. Results are written as each task ends, so a killed run loses only
the tasks in flight, and a rerun with the same --out starts after the last clip written.
"""

import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from sora.curation.manifest import ManifestWriter, clip_key, is_live, read_records
from sora.curation.tasks import Task, device_for, run_task
from sora.errors import SoraError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# What is left to do
# ---------------------------------------------------------------------------------------------------------------


def done_records(out: str, stage: str) -> list[dict]:
    """What an earlier run of this stage wrote to `out` (none if it does not exist)."""
    return read_records(out, stage) if Path(out).is_file() else []


def pending_sources(sources: list[str], done: list[dict]) -> list[str]:
    """The split stage's files still to do: a file is done when all its clips' lines (`of` of them) are written."""
    count, of = Counter(r["source"] for r in done), {r["source"]: r["of"] for r in done}
    return [s for s in sources if count[s] < of.get(s, 1)]


def pending_clips(records: list[dict], done: list[dict]) -> tuple[list[dict], list[dict]]:
    """(live input clips not written yet, skipped or dropped input clips not written yet: copied as they are)."""
    seen = {clip_key(r) for r in done}
    todo = [r for r in records if clip_key(r) not in seen]
    return [r for r in todo if is_live(r)], [r for r in todo if not is_live(r)]


# ---------------------------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------------------------


_WORKER, _SETUP_ERROR = None, None


def _init_worker(worker, device: str, ranks, threads: int) -> None:
    global _WORKER, _SETUP_ERROR
    import cv2
    import torch

    torch.set_num_threads(threads)  # the workers share the machine's cores, not each all of them
    cv2.setNumThreads(1)
    try:
        worker.setup(device_for(device, ranks.get()))
    except Exception as e:  # noqa: BLE001 - an initializer that raises is restarted by the pool, forever
        _SETUP_ERROR = e if isinstance(e, SoraError) else \
            SoraError(f"a worker could not load its models: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
    _WORKER = worker


def _run_in_worker(task: Task) -> list[dict]:
    if _SETUP_ERROR is not None:
        raise _SETUP_ERROR  # ends the run in the main process, in one line
    return run_task(_WORKER, task)


def run_tasks(worker, tasks: list[Task], workers: int, device: str):
    """Each task's records, in task order, from `workers` processes (in this process when 1)."""
    if workers <= 1 or len(tasks) <= 1:
        worker.setup(device)
        for task in tasks:
            yield run_task(worker, task)
        return
    ctx = mp.get_context("spawn")  # fork would copy a parent's threads and CUDA state
    ranks = ctx.Queue()
    for rank in range(workers):
        ranks.put(rank)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(worker, device, ranks, threads)) as pool:
        yield from pool.imap(_run_in_worker, tasks)


# ---------------------------------------------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------------------------------------------


def run_stage(stage: str, worker, tasks: list[Task], out: str, workers: int = 1, device: str = "cpu",
              passthrough: list[dict] = (), finish: Callable[[list[dict]], list[dict]] | None = None,
              done: list[dict] = (), engine: str = "local", extra: dict | None = None,
              not_kept_out: str | None = None) -> dict:
    """Run `tasks` and append their records (and `passthrough`, first) to `out`, leaving out clips an earlier run
    wrote (`done`: a split task redoes a file whose clips were cut short); returns the run's summary, also written
    to OUT.summary.json. `engine` "ray" runs the tasks through Ray Data (sora/curation/ray_engine.py).
    `not_kept_out`: a second manifest for the records not kept, when `out` must hold kept clips only (export)."""
    t0, counts, seen = time.time(), Counter(), {clip_key(r) for r in done}
    clips_in = sum(len(recs) if recs is not None else 1 for task in tasks for _, recs in task)
    side = ManifestWriter(not_kept_out, stage) if not_kept_out else None
    with ManifestWriter(out, stage) as writer:
        def write(records):
            if side is None:
                return writer.write(records)
            side.write([r for r in records if not is_live(r)])
            writer.write([r for r in records if is_live(r)])

        write(list(passthrough))
        if engine == "ray":
            from sora.curation.ray_engine import ray_run_tasks

            results = ray_run_tasks(worker, tasks, workers, device)
        elif engine == "local":
            results = run_tasks(worker, tasks, workers, device)
        else:
            raise SoraError(f"--engine={engine!r} must be local or ray")
        finished = 0
        for records in results:
            records = [r for r in (finish(records) if finish else records) if clip_key(r) not in seen]
            write(records)
            for r in records:
                counts[_outcome(r)] += 1
            finished += 1
            if finished % 20 == 0 or finished == len(tasks):
                log.info("%s: %d/%d tasks, %d clips written", stage, finished, len(tasks), sum(counts.values()))
    if side is not None:
        side.close()
    seconds = time.time() - t0
    made = counts["kept"] if stage == "split" else clips_in  # split: clips cut per second; others: clips done
    summary = {"stage": stage, "out": str(out), ("videos_in" if stage == "split" else "clips_in"): clips_in,
               "already_done": len(done),
               "passed_through": len(passthrough), "written": sum(counts.values()),
               "outcomes": dict(sorted(counts.items())), "seconds": round(seconds, 2),
               "clips_per_second": round(made / seconds, 3) if seconds > 0 and made else None,
               "workers": workers, "device": device, "engine": engine, **(extra or {})}
    Path(str(out) + ".summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _outcome(r: dict) -> str:
    """A record's outcome in a run's counts: kept, or the reason it was skipped or dropped."""
    if r.get("skipped"):
        return f"skipped:{r['skipped']}"
    if r.get("keep", True) is False:
        return "dropped:" + ",".join(r.get("dropped_by", ["?"]))
    return "kept"
