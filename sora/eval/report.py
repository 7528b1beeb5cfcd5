"""A sweep's report: one Markdown table of every run's overrides and final metrics, and its validation curves.

    python train.py -m dit.qk_norm=true,false train.max_minutes=2       # Hydra multirun: SWEEP/0, SWEEP/1, ...
    python -m sora.eval.report SWEEP                                   # SWEEP/report.md, val_loss_steps.png,
                                                                       # val_loss_wall.png

A run directory is any directory under SWEEP holding `.hydra/overrides.yaml` (Hydra writes it for each job).
Its final metrics are RUN/results.json's (written when a run completes: a run without it is listed as not
finished); its curve is RUN/val_loss.jsonl, one line per validation (sora/training/validation.py), plotted
against optimizer steps and against training seconds (evaluation time excluded), all runs on one chart each.
"""

import argparse
import json
import sys
from pathlib import Path

from sora.errors import SoraError, exit_on_user_error

# ---------------------------------------------------------------------------------------------------------------
# Reading a sweep
# ---------------------------------------------------------------------------------------------------------------


def find_runs(sweep: Path) -> list[Path]:
    """Run directories under a sweep, in Hydra's job order (numeric where the names are numbers)."""
    runs = [p.parent.parent for p in sweep.rglob(".hydra/overrides.yaml")]
    return sorted(runs, key=lambda p: (int(p.name) if p.name.isdigit() else 1 << 30, str(p)))


def read_run(run: Path) -> dict:
    from omegaconf import OmegaConf

    overrides = [str(o) for o in OmegaConf.load(run / ".hydra" / "overrides.yaml")]
    results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else None
    curve_file = run / "val_loss.jsonl"
    lines = curve_file.read_text().splitlines() if curve_file.is_file() else []
    curve = [json.loads(line) for line in lines if line.strip()]
    return {"dir": run, "overrides": overrides, "results": results, "curve": curve}


def varied_overrides(runs: list[dict]) -> list[list[str]]:
    """Each run's overrides without the ones every run shares (those go in the report's header)."""
    shared = set.intersection(*(set(r["overrides"]) for r in runs)) if runs else set()
    return [[o for o in r["overrides"] if o not in shared] for r in runs]


# ---------------------------------------------------------------------------------------------------------------
# Writing the report
# ---------------------------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def table(runs: list[dict]) -> str:
    labels = varied_overrides(runs)
    probe = any((r["results"] or {}).get("probe", {}).get("heldout") for r in runs)
    head = ["run", "overrides", "steps", "final val loss", "best val loss", "train minutes"]
    head += ["held-out colour / direction / shape"] if probe else []
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r, label in zip(runs, labels):
        res, curve = r["results"] or {}, r["curve"]
        row = [r["dir"].name, " ".join(f"`{o}`" for o in label) or "(none)",
               _fmt(res.get("steps")) if r["results"] else "not finished",
               _fmt(res.get("val_loss", curve[-1]["loss"] if curve else None)),
               _fmt(min(c["loss"] for c in curve) if curve else None),
               _fmt(curve[-1]["train_seconds"] / 60 if curve else None)]
        if probe:
            h = res.get("probe", {}).get("heldout")
            row.append(" / ".join(f"{h[k]:.2f}" for k in ("color_acc", "direction_acc", "shape_acc")) if h else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], out: Path, x_key: str, x_label: str, scale: float = 1.0) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for r, label in zip(runs, varied_overrides(runs)):
        if r["curve"]:
            ax.plot([c[x_key] * scale for c in r["curve"]], [c["loss"] for c in r["curve"]], marker="o", markersize=3,
                    label=" ".join(label) or r["dir"].name)
    ax.set_xlabel(x_label)
    ax.set_ylabel("validation loss (fixed noise and timesteps)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def write_report(sweep: Path) -> Path:
    """SWEEP/report.md and the two PNGs beside it; returns the Markdown file."""
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise SoraError(f"{str(sweep)!r} is not a directory (give the sweep directory of `python train.py -m ...`)")
    runs = [read_run(p) for p in find_runs(sweep)]
    if not runs:
        raise SoraError(f"{str(sweep)!r} holds no run (no */.hydra/overrides.yaml): is it a multirun directory?")
    shared = sorted(set.intersection(*(set(r["overrides"]) for r in runs)))
    plot(runs, sweep / "val_loss_steps.png", "step", "optimizer steps")
    plot(runs, sweep / "val_loss_wall.png", "train_seconds", "training minutes (validation time excluded)", 1 / 60)
    text = [f"# Sweep {sweep.name}", "", f"{len(runs)} run(s); overrides shared by all: "
            + (" ".join(f"`{o}`" for o in shared) or "none") + ".", "",
            "Validation loss: the mean squared velocity error on held-out clips at fixed noise and timesteps "
            "(the same for every run), on the EMA weights.", "", table(runs), "",
            "![validation loss against steps](val_loss_steps.png)", "",
            "![validation loss against training time](val_loss_wall.png)", ""]
    out = sweep / "report.md"
    out.write_text("\n".join(text))
    return out


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="the sweep directory (multirun/DATE/TIME, or hydra.sweep.dir)")
    args = parser.parse_args(argv)
    out = write_report(Path(args.sweep))
    print(out.read_text())
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
