"""The filter stage: thresholds on any score, each clip kept or dropped with the thresholds it failed, and what
each threshold removed (alone and with others), so a threshold is chosen by what it costs.

    --min motion=0.3 --min aesthetic=4.5 --max text=0.02 --min sharpness=50

Rerun on its own output with other thresholds: a clip dropped by an earlier filter is judged again; a duplicate
(the dedup stage's) stays dropped.
"""

from collections import Counter
from dataclasses import dataclass, field

from sora.curation.manifest import key_name
from sora.errors import SoraError
from sora.settings import Settings


def parse_thresholds(items: list[str] | None, flag: str) -> dict[str, float]:
    """["motion=0.3", ...] -> {"motion": 0.3}; SoraError naming the flag for anything else."""
    out = {}
    for item in items or []:
        name, eq, value = item.partition("=")
        try:
            if not eq or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise SoraError(f"{flag} {item!r}: want SCORE=NUMBER, e.g. {flag} motion=0.3") from None
    return out


@dataclass
class FilterArgs(Settings):
    min: dict[str, float] = field(default_factory=dict)  # score -> lowest value kept
    max: dict[str, float] = field(default_factory=dict)  # score -> highest value kept

    def check(self, at: str = "") -> None:
        if not self.min and not self.max:
            raise SoraError(f"{at}min and {at}max are both empty: give at least one threshold (--min SCORE=X)")

    def rules(self) -> list[tuple[str, str, float]]:
        """(name as reported, score, bound) for each threshold: "motion<0.3" drops a motion under 0.3."""
        return [(f"{s}<{v:g}", s, v) for s, v in self.min.items()] + \
            [(f"{s}>{v:g}", s, v) for s, v in self.max.items()]


def judged(record: dict) -> bool:
    """A clip the filter judges: scored, not skipped, not a duplicate."""
    return not record.get("skipped") and "duplicate" not in record.get("dropped_by", []) and "scores" in record


def check_scores(records: list[dict], args: FilterArgs) -> None:
    """Refuse thresholds on a score the manifest's clips do not have (a typo, or a scorer not run)."""
    scored = [r for r in records if judged(r)]
    if not scored:
        raise SoraError("the input manifest has no scored clip: run the score stage first")
    have = set.intersection(*(set(r["scores"]) for r in scored))
    missing = sorted({s for _, s, _ in args.rules()} - have)
    if missing:
        lacking = next(r for r in scored if not set(missing) <= set(r["scores"]))
        raise SoraError(f"no {', '.join(missing)} score on {key_name(lacking)} (it has {', '.join(lacking['scores'])})"
                        f": name a score the score stage wrote, or score the clips with it")


def apply(records: list[dict], args: FilterArgs) -> list[dict]:
    """Each record with keep and dropped_by set from the thresholds (records not judged are returned as they are)."""
    out = []
    for r in records:
        if judged(r):
            failed = [name for name, s, v in args.rules()
                      if (r["scores"][s] < v if name.startswith(f"{s}<") else r["scores"][s] > v)]
            r = {k: v for k, v in r.items() if k not in ("keep", "dropped_by")}
            r = {**r, "keep": not failed, **({"dropped_by": failed} if failed else {})}
        out.append(r)
    return out


def removed_by(records: list[dict], args: FilterArgs) -> dict:
    """What each threshold removed: clips failing it, clips failing it alone, and the totals."""
    judged_records = [r for r in records if judged(r)]
    any_, alone = Counter(), Counter()
    for r in judged_records:
        failed = r.get("dropped_by", [])
        any_.update(failed)
        if len(failed) == 1:
            alone[failed[0]] += 1
    kept = sum(r["keep"] for r in judged_records)
    return {"judged": len(judged_records), "kept": kept, "dropped": len(judged_records) - kept,
            "by_threshold": {name: {"failed": any_[name], "failed_only_this": alone[name]} for name, _, _ in
                             args.rules()}}
