"""Progress that tells the truth: against whichever limit ends the run first, steps or train.max_minutes.

Lightning's bar counts toward max_steps, so a 13-minute run bounded by time showed hours left toward
max_steps=100000. This callback measures both limits and reports the nearer one. On a terminal it redraws one
line; anywhere else (a log file, a pipe, a SLURM .out) it writes a plain line every train.progress_every_s
seconds, never carriage-return frames. Hydra's log file (RUN/train.log) gets the lines in both cases.
"""

import logging
import sys
import time

import lightning as L

log = logging.getLogger("sora.progress")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def progress_line(step: int, max_steps: int, elapsed_s: float, budget_s: float | None, steps_per_s: float | None,
                  loss: float | None = None) -> str:
    """One line: the step, time against the budget, time left to whichever limit comes first, speed, loss."""
    left_steps = (max_steps - step) / steps_per_s if max_steps > 0 and steps_per_s else None
    left_time = max(0.0, budget_s - elapsed_s) if budget_s is not None else None
    by_time = left_time is not None and (left_steps is None or left_time <= left_steps)
    parts = [f"step {step}" + (f" of {max_steps}" if max_steps > 0 and not by_time else "")]
    parts.append(f"{_minutes(elapsed_s)} of {_minutes(budget_s)}" if budget_s is not None
                 else f"{_minutes(elapsed_s)} elapsed")
    if by_time:
        parts.append(f"{_minutes(left_time)} left (time budget)")
    elif left_steps is not None:
        parts.append(f"{_minutes(left_steps)} left (max_steps={max_steps})")
    if steps_per_s:
        parts.append(f"{steps_per_s:.2f} steps/s")
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    return " | ".join(parts)


class _DropOnTerminal(logging.Filter):
    """Keeps progress records off a terminal handler while the redrawn line shows them there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != log.name


class Progress(L.Callback):
    def __init__(self, max_minutes: float | None, every_s: float, terminal: bool | None = None):
        self.budget_s = 60.0 * max_minutes if max_minutes else None
        self.every_s = every_s
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.t0 = self.last_line = None
        self.step0 = 0
        self.filtered: list[logging.Handler] = []

    def _elapsed(self, trainer) -> float:
        """Training seconds against the budget: Lightning's Timer (restored on resume) when there is a budget."""
        for cb in trainer.callbacks:
            if type(cb).__name__ == "Timer":
                return cb.time_elapsed("train")
        return time.perf_counter() - self.t0

    def line(self, trainer) -> str:
        seconds = time.perf_counter() - self.t0
        done = trainer.global_step - self.step0
        loss = trainer.callback_metrics.get("train/loss")
        steps_per_s = done / seconds if done and seconds > 0 else None
        return progress_line(trainer.global_step, trainer.max_steps, self._elapsed(trainer), self.budget_s,
                             steps_per_s, float(loss) if loss is not None else None)

    def on_train_start(self, trainer, module):
        self.t0, self.step0 = time.perf_counter(), trainer.global_step
        if self.terminal and trainer.is_global_zero:
            for handler in logging.getLogger().handlers:
                if (not isinstance(handler, logging.FileHandler)
                        and getattr(handler, "stream", None) in (sys.stderr, sys.stdout)):
                    handler.addFilter(_DropOnTerminal())
                    self.filtered.append(handler)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if not trainer.is_global_zero:
            return
        now = time.perf_counter()
        if self.terminal:
            sys.stderr.write("\r" + self.line(trainer)[:200].ljust(120))
            sys.stderr.flush()
        if self.last_line is None or now - self.last_line >= self.every_s:
            self.last_line = now
            log.info(self.line(trainer))

    def on_train_end(self, trainer, module):
        if not trainer.is_global_zero:
            return
        if self.terminal:
            sys.stderr.write("\n")
        for handler in self.filtered:
            handler.filters = [f for f in handler.filters if not isinstance(f, _DropOnTerminal)]
        log.info("%s (done)", self.line(trainer))
