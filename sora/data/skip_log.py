"""A reader's skipped samples: every one to a JSON-lines file, and a few summary lines in the log.

One warning line per clip buried the run's own output (a dataset whose clips are all too short for a bucket gave
2,048 lines before its error). Instead each reader (a rank's DataLoader worker) logs one line per reason when its
count of that reason reaches 1, 10, 100, 1000, ...: the first skip shows at once, so a user sees a problem
without waiting for the end of an epoch (hours on a large dataset); later ones come at a log-spaced rate, a few
lines per reader however many clips are bad. Each line gives the count and the last few examples; the file
(RUN/skipped_samples.jsonl in a run, its path given by the loader's caller) holds every skipped sample, one JSON
object a line, written by every reader: each line is one write to the file opened for appending, so lines of
different workers do not interleave on a local filesystem. The run's totals by reason are reported at its end
(sora/training/callbacks.py: DataReport) and in results.json. Samples that data.min_scores leaves out are counted
the same way under `min_scores.NAME` (`drop`), summed up at info level and not written to the file.
"""

import json
import logging
from collections import Counter, defaultdict, deque

log = logging.getLogger("sora.data.stream")

EXAMPLES = 3  # per summary line: the most recent skips of that reason


def is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


class SkipLog:
    """Skipped samples of one reader: `add` appends one to the file and logs a summary at counts 1, 10, 100, ..."""

    def __init__(self, path: str | None, reader: int):
        self.path, self.reader = path, reader
        self.counts: Counter = Counter()
        self.recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=EXAMPLES))

    def add(self, reason: str, detail: str, where: str, epoch: int) -> None:
        self.counts[reason] += 1
        self.recent[reason].append(f"{where} ({detail})")
        if self.path:
            record = {"where": where, "reason": reason, "detail": detail, "reader": self.reader, "epoch": epoch}
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        n = self.counts[reason]
        if is_power_of_ten(n):
            log.warning("data: reader %d skipped %d sample(s) so far as %s, e.g. %s%s", self.reader, n, reason,
                        "; ".join(self.recent[reason]), f"; every one is in {self.path}" if self.path else "")

    def drop(self, reason: str, detail: str, where: str) -> None:
        """A sample data.min_scores leaves out (reason min_scores.NAME): counted and summed up at counts 1, 10, 100,
        ... at info level, as asked for, and not written to the file (the shards hold its scores)."""
        self.counts[reason] += 1
        self.recent[reason].append(f"{where} ({detail})")
        n = self.counts[reason]
        if is_power_of_ten(n):
            log.info("data: reader %d dropped %d sample(s) so far below data.%s, e.g. %s", self.reader, n, reason,
                     "; ".join(self.recent[reason]))
