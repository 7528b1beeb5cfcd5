"""A run's report: clips in and out of each stage and why they left, a histogram of each score (kept and dropped
stacked, the filter's thresholds drawn), and a contact sheet of kept and dropped clips, so thresholds are chosen by
looking.

    python data/curate.py report split.jsonl score.jsonl dedup.jsonl filter.jsonl --out report/

Writes report.json, report.md, hist_SCORE.png for each score and contact_sheet.png.
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sora.curation.manifest import STAGES, is_live, key_name, read_records
from sora.curation.media import read_frames
from sora.data.decode import BadSample
from sora.errors import SoraError

# ---------------------------------------------------------------------------------------------------------------
# Counts
# ---------------------------------------------------------------------------------------------------------------


def stage_counts(manifests: list[tuple[str, list[dict]]]) -> list[dict]:
    """Per manifest (in pipeline order): clips in (the previous stage's kept; split: videos), out (kept), and every
    clip not kept by its reason (`skipped:` unusable, `dropped:` judged and removed), counted up to that stage."""
    rows, previous = [], None
    for path, records in manifests:
        stage = records[0]["stage"]
        why = Counter()
        for r in records:
            if r.get("skipped"):
                why[f"skipped:{r['skipped']}"] += 1
            elif not is_live(r):
                why.update(f"dropped:{d}" for d in r.get("dropped_by", ["?"]))
        out = sum(is_live(r) for r in records)
        clips_in = len({r["source"] for r in records}) if stage == "split" else previous
        rows.append({"stage": stage, "manifest": str(path), "in": clips_in, "out": out,
                     "not_kept": dict(sorted(why.items()))})
        previous = out
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Histograms
# ---------------------------------------------------------------------------------------------------------------


def thresholds_of(path: str) -> dict:
    """The filter's thresholds from its run summary (MANIFEST.summary.json), if it is there."""
    summary = Path(str(path) + ".summary.json")
    try:
        s = json.loads(summary.read_text())
    except (OSError, ValueError):
        return {}
    return {"min": s.get("min", {}), "max": s.get("max", {})} if s.get("stage") == "filter" else {}


def histograms(records: list[dict], out: Path, thresholds: dict) -> list[str]:
    """hist_SCORE.png for each score: kept and not kept stacked; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in records if "scores" in r and not r.get("skipped")]
    names = sorted({s for r in scored for s in r["scores"]})
    files = []
    for name in names:
        kept = [r["scores"][name] for r in scored if name in r["scores"] and is_live(r)]
        dropped = [r["scores"][name] for r in scored if name in r["scores"] and not is_live(r)]
        values = np.array(kept + dropped, float)
        fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
        bins = np.histogram_bin_edges(values, bins=min(30, max(5, len(values) // 2)))
        ax.hist([kept, dropped], bins=bins, stacked=True, color=["tab:green", "tab:red"],
                label=[f"kept ({len(kept)})", f"not kept ({len(dropped)})"])
        for kind, style in (("min", "--"), ("max", ":")):
            if name in thresholds.get(kind, {}):
                bound = thresholds[kind][name]
                ax.axvline(bound, color="black", linestyle=style, label=f"{kind} {bound:g}")
        ax.set_xlabel(name)
        ax.set_ylabel("clips")
        ax.legend(fontsize=7)
        fig.tight_layout()
        file = f"hist_{name}.png"
        fig.savefig(out / file)
        plt.close(fig)
        files.append(file)
    return files


# ---------------------------------------------------------------------------------------------------------------
# Contact sheet
# ---------------------------------------------------------------------------------------------------------------


def _spread(items: list, count: int) -> list:
    """`count` items spread evenly over the list (all when it is short)."""
    if len(items) <= count:
        return items
    return [items[int((i + 0.5) * len(items) / count)] for i in range(count)]


def _label(r: dict) -> str:
    if r.get("skipped"):
        return r["skipped"]
    if not is_live(r):
        return ",".join(r.get("dropped_by", ["dropped"]))[:28]
    s = r.get("scores", {})
    return " ".join(f"{k[0]}{v:.2g}" for k, v in sorted(s.items()))[:28] or "kept"


def contact_sheet(records: list[dict], path: Path, per_group: int = 12, columns: int = 6, thumb: int = 128) -> int:
    """The middle frame of up to `per_group` kept and `per_group` dropped clips (spread over the manifest), each
    labelled with its scores or why it was dropped; returns how many clips it shows."""
    groups = [("kept", _spread([r for r in records if is_live(r)], per_group)),
              ("not kept", _spread([r for r in records if not is_live(r) and r["end"] > r["start"]], per_group))]
    th, label_h, title_h = thumb * 9 // 16, 12, 16
    rows = sum(max(1, -(-len(g) // columns)) for _, g in groups)
    sheet = Image.new("RGB", (columns * thumb, rows * (th + label_h) + len(groups) * title_h), "white")
    draw, y, shown = ImageDraw.Draw(sheet), 0, 0
    for title, group in groups:
        draw.text((4, y + 2), f"{title}: {len(group)} shown", fill="black")
        y += title_h
        for i, r in enumerate(group):
            x, yy = (i % columns) * thumb, y + (i // columns) * (th + label_h)
            mid = (r["start"] + r["end"]) // 2
            try:
                frames, _ = read_frames(r["source"], [mid], size=(th, thumb))
                sheet.paste(Image.fromarray(frames[mid]), (x, yy))
                shown += 1
            except (BadSample, KeyError):
                draw.rectangle((x, yy, x + thumb - 1, yy + th - 1), outline="gray")
            draw.text((x + 2, yy + th), _label(r), fill="green" if is_live(r) else "red")
        y += max(1, -(-len(group) // columns)) * (th + label_h)
    sheet.quantize(256).save(path, optimize=True)  # a palette keeps the PNG small
    return shown


# ---------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------


def write_report(paths: list[str], out_dir: str) -> dict:
    """The report of the manifests `paths` (any stages of one run) into `out_dir`; returns report.json's content."""
    manifests = []
    for p in paths:
        records = read_records(p)
        if not records:
            raise SoraError(f"manifest {p!r} holds no clip")
        stages = {r["stage"] for r in records}
        if len(stages) > 1:
            raise SoraError(f"{p} mixes the stages {', '.join(sorted(stages))}: each stage writes its own manifest")
        manifests.append((p, records))
    manifests.sort(key=lambda m: STAGES.index(m[1][0]["stage"]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = stage_counts(manifests)
    scored = [m for m in manifests if any("scores" in r for r in m[1])]
    last_path, last = manifests[-1]
    hist_files = histograms(scored[-1][1], out, thresholds_of(scored[-1][0])) if scored else []
    shown = contact_sheet(last, out / "contact_sheet.png")
    report = {"stages": counts, "histograms": hist_files, "contact_sheet": "contact_sheet.png",
              "contact_sheet_clips": shown, "last_manifest": str(last_path),
              "examples_not_kept": [f"{key_name(r)}: {_label(r)}" for r in last if not is_live(r)][:20]}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    lines = ["| stage | in | out | not kept (cumulative, by reason) |", "| --- | --- | --- | --- |"]
    for c in counts:
        why = ", ".join(f"{k} {v}" for k, v in c["not_kept"].items()) or "-"
        unit = " videos" if c["stage"] == "split" else ""
        lines.append(f"| {c['stage']} | {c['in']}{unit} | {c['out']} | {why} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return report
