"""Long videos from a checkpoint with each long.* switch off in turn: drift, time, and peak memory by length.

    python bench/long_video.py CKPT                                  # every row, 4 windows and 240 frames
    python bench/long_video.py CKPT --prompts P.txt --lengths 32,240 --context-noise 0.05 --history-guidance 1.5
    python bench/long_video.py CKPT --lengths 240 --rows window_by_window,all   # some rows only
    python bench/long_video.py CKPT --first-frames                   # each video from its first frame as well
    python bench/long_video.py CKPT --first-frames-bar               # ... a first frame with the occluding bar
    python bench/long_video.py CKPT --later-windows-cfg 1            # later windows' text guidance a switch too
    python bench/long_video.py CKPT --draft-frames 1 --redraw-cfg 6  # text -> first frame -> video a switch too
    python bench/long_video.py CKPT --candidates 4                   # best of 4 a window a switch too
    python bench/long_video.py CKPT --rows all-latent_context-draft_frames   # several switches off
    python bench/long_video.py CKPT --memory-only                    # peak memory of 60 and 240 frames

Rows (docs/SAMPLING.md#long-videos): `window_by_window` (every switch off: the sampler as it was), `all` (every
switch the checkpoint was trained for on: latent context, context noise, history guidance, the rolling schedule,
with --later-windows-cfg the text guidance of later windows, and with --draft-frames the first window made again
from the first frames of its draft, at --redraw-cfg's text guidance, and with --candidates each window the best of
that many by the model's own denoising error), and `all - X` for each switch X (X off, the
others on), so each part's effect is a number; --rows may name `all - X - Y` too (X and Y off). A switch the checkpoint
was not trained for is left out of every row, and said so. With --first-frames each video is also given, as its
first frame (sample.py's image=), a frame of the built-in dataset rendered for its prompt (colour, shape, the
direction it starts in; seeded by the video's index), as the issue's "images of held-out combinations given as the
first frame" asks; its rows' videos go to DIR/ROW/LENGTH-image. --first-frames-bar draws the dataset's occluding bar
(near the frame's middle, across the shape's path) in each of those frames as well, so the model is shown the bar
rather than left to draw it (DIR/ROW/LENGTH-image-bar). Every row streams its files (long.stream changes no
frame: tests/test_forcing.py). Each row's videos (DIR/ROW/LENGTH/000.mp4, ...) are scored with the drift score
(`sora.eval.drift.score_drift_dir`, per trained window) when it is importable; without it a row reports its time
alone.

Memory: each length is made once more in a fresh process (one prompt, streamed to a file): the process's resident
high-water mark (VmHWM) over the generation, less its resident size just before it (after the model is loaded and
one window made), with glibc told to return freed blocks (as bench/memory.py); on CUDA,
torch.cuda.max_memory_allocated likewise. Prints one JSON line a row, then a markdown table.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def load(ckpt: str, device: str, steps: int | None, cfg: float | None = None, overlap: int | None = None,
         sampler: str | None = None, schedule: str | None = None):
    import torch

    from sora.devices import resolve_device
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    bundle = ModelBundle.from_checkpoint(ckpt).to(resolve_device(device))
    settings = SampleSettings.of(bundle.cfg).override(steps=steps, cfg=cfg, overlap_frames=overlap, sampler=sampler,
                                                         schedule=schedule)
    return bundle, settings


def switches_on(bundle, settings, args) -> tuple[dict, dict]:
    """({switch: its on value} for those the checkpoint was trained for, {switch: why not} for the others)."""
    from sora.errors import SoraError
    from sora.inference.pipeline import check_long

    wanted = {"latent_context": True, "context_noise": args.context_noise, "history_guidance": args.history_guidance,
              "ar_step": args.ar_step}
    if args.later_windows_cfg is not None:  # a switch of its own only when asked for: the rows stay what they were
        wanted["later_windows_cfg"] = args.later_windows_cfg
    if args.draft_frames:
        wanted["draft_frames"] = args.draft_frames
    if args.candidates:
        wanted["candidates"] = args.candidates
    on, skipped = {}, {}
    for name, value in wanted.items():
        try:
            check_long(bundle, replace(settings, sampler="euler", long=long_config({name: value}, args)))
            on[name] = value
        except SoraError as e:
            skipped[name] = str(e)
    return on, skipped


def long_config(values: dict, args, **more):
    """A row's switches -> LongVideoConfig; --redraw-cfg goes with draft_frames, when the row has it on."""
    from sora.config.schema import LongVideoConfig

    values = dict(values)
    if values.get("draft_frames"):
        values["redraw_cfg"] = args.redraw_cfg
    return LongVideoConfig(**values, **more)


def rows_of(on: dict, wanted: list[str] = ()) -> dict[str, dict]:
    """Row name -> the long.* values it samples with: every switch off, all on, all but one; and each of `wanted`
    of the form 'all - X - Y' (several switches off; spaces optional)."""
    rows = {"window_by_window": {}, "all": dict(on)}
    for name in on:
        rows[f"all - {name}"] = {k: v for k, v in on.items() if k != name}
    for row in wanted:
        parts = [p.strip() for p in row.split("-")]
        if len(parts) > 2 and parts[0] == "all" and all(p in on for p in parts[1:]):
            rows[" - ".join(parts)] = {k: v for k, v in on.items() if k not in parts[1:]}
    return rows


def prompts_of(bundle, args) -> list[str]:
    from sora.errors import SoraError

    if args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise SoraError(f"--prompts {args.prompts!r} is not a file (one prompt a line)")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        try:
            from sora.eval.drift import drift_prompts
        except ImportError:
            drift_prompts = None
        prompts = drift_prompts(bundle.cfg.data) if drift_prompts else []
        if not prompts and bundle.cfg.data.eval_prompts and Path(bundle.cfg.data.eval_prompts).is_file():
            prompts = [p.strip() for p in Path(bundle.cfg.data.eval_prompts).read_text().splitlines() if p.strip()]
    if not prompts:
        raise SoraError("no prompts: give --prompts FILE (the checkpoint's data.eval_prompts is not there)")
    return prompts[: args.limit] if args.limit else prompts


def first_frames(bundle, prompts: list[str], seed: int, height: int, width: int, bar: bool = False):
    """n 3 h w in [-1, 1]: for each prompt, the first frame of a clip of the built-in dataset rendered for it (its
    colour, shape and starting direction, as the checkpoint's data.moving_shapes draws them, with the occluding bar
    if `bar`; seeded seed + i), at the sampler's size as training resizes clips."""
    import numpy as np
    import torch

    from sora.data.buckets import resize_crop
    from sora.data.moving_shapes import caption_verb, parse_caption, render_long_clip
    from sora.errors import SoraError

    shapes = bundle.cfg.data.moving_shapes
    if shapes is None:
        raise SoraError("--first-frames renders the built-in dataset's frames: this checkpoint did not train on it "
                        "(data.moving_shapes is null)")
    frames = []
    for i, prompt in enumerate(prompts):
        parsed = parse_caption(prompt)
        if parsed is None:
            raise SoraError(f"--first-frames: prompt {i + 1} ({prompt!r}) is not a moving-shapes caption")
        frame, _ = render_long_clip(*parsed, caption_verb(prompt) or "moving", np.random.default_rng(seed + i), 1,
                                    shapes, bundle.cfg.data.frame_stride, occluder=bar)  # 1 h w 3
        frames.append(resize_crop(torch.from_numpy(frame), height, width)[:, 0])  # 3 h w
    return torch.stack(frames)


def sample_rows(args) -> list[dict]:
    from sora.errors import SoraError
    from sora.inference.pipeline import generate_to_dir
    from sora.inference.prompting import VisualPrompt, make_pieces

    try:
        from sora.eval.drift import score_drift_dir
    except ImportError:  # the drift score comes with its own change; until then, times alone
        score_drift_dir = None
    bundle, settings = load(args.ckpt, args.device, args.steps, args.cfg, args.overlap, args.sampler,
                           args.schedule)
    window = settings.window
    lengths = [int(n) for n in args.lengths.split(",")] if args.lengths else [4 * window, 240]
    prompts = prompts_of(bundle, args)
    first_frame = "image_bar" if args.first_frames_bar else "image" if args.first_frames else "text"
    images = None if first_frame == "text" else first_frames(bundle, prompts, args.seed, settings.height,
                                                             settings.width, bar=args.first_frames_bar)
    on, skipped = switches_on(bundle, settings, args)
    for name, why in skipped.items():
        print(json.dumps({"switch": name, "left_out": why}), flush=True)
    asked = [r.strip() for r in args.rows.split(",")] if args.rows else []
    rows = rows_of(on, asked)
    named = {r.replace(" ", ""): r for r in rows}  # 'all-ar_step' names the row 'all - ar_step'
    wanted = [named.get(r.replace(" ", ""), r) for r in asked] if asked else list(rows)
    unknown = [r for r in wanted if r not in rows]
    if unknown:
        raise SoraError(f"--rows: {unknown[0]!r} is not a row of this checkpoint; its rows: {', '.join(rows)}")
    out = []
    for row, values in ((r, rows[r]) for r in wanted):
        long = long_config(values, args, stream=True)
        s = replace(settings, long=long, sampler="euler" if long.ar_step else settings.sampler)
        for n in lengths:
            suffix = "" if images is None else "-" + first_frame.replace("_", "-")  # LENGTH-image, LENGTH-image-bar
            folder = Path(args.out) / row.replace(" ", "") / f"{n}{suffix}"
            sn, make = s.override(num_frames=n), None
            if images is not None:  # batch_seed - seed is the batch's first video: its images
                def make(batch, batch_seed, callback, sn=sn):
                    start = batch_seed - args.seed
                    visual = VisualPrompt("image", image=images[start : start + len(batch)])
                    return make_pieces(bundle, batch, batch_seed, sn, visual, callback)
            t0 = time.perf_counter()
            generate_to_dir(bundle, prompts, folder, args.seed, sn, batch_size=args.batch_size, make=make)
            recorded = {**values, **({"redraw_cfg": long.redraw_cfg} if long.draft_frames else {})}
            result = {"row": row, "num_frames": n, "first_frame": first_frame,
                      "videos": len(prompts), "long": recorded, "seed": args.seed, "sampler": sn.sampler,
                      "schedule": sn.schedule, "steps": sn.steps, "cfg": sn.cfg, "overlap_frames": sn.overlap,
                      "seconds_per_video": round((time.perf_counter() - t0) / len(prompts), 3)}
            if score_drift_dir is not None:
                scores = score_drift_dir(folder, prompts, window)
                result.update({k: scores[k] for k in ("all_windows_pass", "median_frames_to_first_failure",
                                                      "per_window_pass", "failed_windows_by_check") if k in scores})
                result["by_verb"] = {verb: {k: part[k] for k in ("n", "all_windows_pass",
                                                                "median_frames_to_first_failure")}
                                     for verb, part in scores.get("by_verb", {}).items()}
                result["by_bar"] = {name: {k: part[k] for k in ("n", "all_windows_pass") if k in part}
                                    for name, part in scores.get("by_bar", {}).items()}
            print(json.dumps(result), flush=True)
            out.append(result)
    return out


def measure_memory(args, num_frames: int) -> dict:
    """One streamed video of num_frames in this process: the peak over the generation, above where it started."""
    import torch

    from sora.config.schema import LongVideoConfig
    from sora.inference.pipeline import generate_to_files

    bundle, settings = load(args.ckpt, args.device, args.steps)
    prompt = prompts_of(bundle, args)[:1]
    s = replace(settings, long=LongVideoConfig(stream=True))
    out = Path(args.out) / "memory"
    generate_to_files(bundle, prompt, [out / "warm.mp4"], args.seed, s.override(num_frames=s.window))  # caches
    cuda = bundle.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the resident size now
        base = _status("VmRSS")
    t0 = time.perf_counter()
    generate_to_files(bundle, prompt, [out / f"{num_frames}.mp4"], args.seed, s.override(num_frames=num_frames))
    peak = torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")
    return {"memory": "cuda_allocated" if cuda else "resident", "num_frames": num_frames,
            "base_mb": round(base / 2**20, 1), "peak_mb": round(peak / 2**20, 1),
            "growth_mb": round((peak - base) / 2**20, 1), "seconds": round(time.perf_counter() - t0, 2)}


def memory_rows(args) -> list[dict]:
    rows = []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    for n in (60, 240):
        cmd = [sys.executable, __file__, args.ckpt, "--memory-child", str(n), "--device", args.device,
               "--out", args.out, "--seed", str(args.seed)]
        cmd += ["--steps", str(args.steps)] if args.steps else []
        cmd += ["--prompts", args.prompts] if args.prompts else []
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    short, long = rows
    ratio = {"memory_ratio_240_to_60": round(long["peak_mb"] / short["peak_mb"], 3),
             "growth_ratio_240_to_60": round(long["growth_mb"] / max(short["growth_mb"], 0.1), 3)}
    print(json.dumps(ratio), flush=True)
    return rows + [ratio]


def table(rows: list[dict]) -> str:
    verbs = sorted({v for r in rows for v in r.get("by_verb", {})})
    lines = ["| row | frames | all windows pass | " + "".join(f"{v}: pass | " for v in verbs)
             + "with a bar: pass (videos) | without: pass (videos) | median frames to first failure | s / video |",
             "| --- | --- | --- | " + "--- | " * len(verbs) + "--- | --- | --- | --- |"]

    def part(r: dict, name: str) -> str:
        got = r.get("by_bar", {}).get(name, {})
        return f"{got.get('all_windows_pass', 'n/a')} ({got.get('n', 0)})" if got else "n/a"

    for r in rows:
        by_verb = "".join(f"{r['by_verb'][v]['all_windows_pass'] if v in r.get('by_verb', {}) else 'n/a'} | "
                          for v in verbs)
        lines.append(f"| {r['row']} | {r['num_frames']} | {r.get('all_windows_pass', 'n/a')} | {by_verb}"
                     f"{part(r, 'bar')} | {part(r, 'no_bar')} | "
                     f"{r.get('median_frames_to_first_failure', 'n/a')} | {r['seconds_per_video']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    from sora.errors import exit_on_user_error

    exit_on_user_error(run)(argv)


def run(argv=None) -> None:
    from sora.diffusion.samplers import SAMPLERS
    from sora.diffusion.schedules import SCHEDULES
    from sora.errors import ArgumentParser, SoraError

    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a task=dit checkpoint (.ckpt) or an export (.safetensors)")
    parser.add_argument("--prompts", help="one prompt a line (default: the drift score's held-out prompts, or the "
                        "checkpoint's data.eval_prompts)")
    parser.add_argument("--limit", type=int, default=0, help="the first N prompts only (0: all)")
    parser.add_argument("--lengths", help="frames, comma-separated (default: 4 windows and 240)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the checkpoint's)")
    parser.add_argument("--cfg", type=float, help="text guidance scale (default: the checkpoint's)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS),
                        help="the sampler of rows without ar_step (default: the checkpoint's; ar_step rows use euler)")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), help="the sampler's time schedule (default: the "
                        "checkpoint's)")
    parser.add_argument("--overlap", type=int, help="frames each later window is given from the one before "
                        "(default: half a window)")
    parser.add_argument("--context-noise", type=float, default=0.05, help="long.context_noise when on (0.05)")
    parser.add_argument("--history-guidance", type=float, default=1.5, help="long.history_guidance when on (1.5)")
    parser.add_argument("--ar-step", type=int, default=1, help="long.ar_step when on (1)")
    parser.add_argument("--later-windows-cfg", type=float, help="long.later_windows_cfg when on; given, it is a "
                        "switch of the rows as the others are (default: left out of every row)")
    parser.add_argument("--draft-frames", type=int, help="long.draft_frames when on; given, it is a switch of the "
                        "rows as the others are (default: left out of every row)")
    parser.add_argument("--redraw-cfg", type=float, help="long.redraw_cfg of the rows with long.draft_frames "
                        "(default: the first window's text guidance)")
    parser.add_argument("--candidates", type=int, help="long.candidates when on (best of N by the model's own "
                        "denoising error); given, it is a switch of the rows as the others are (default: left out)")
    parser.add_argument("--rows", help="these rows only, comma-separated (default: every row), e.g. "
                        "'window_by_window,all', or 'all-X-Y' (switches X and Y off)")
    parser.add_argument("--first-frames", action="store_true",
                        help="give each video a rendered first frame of its prompt's shape as well (image to video)")
    parser.add_argument("--first-frames-bar", action="store_true",
                        help="as --first-frames, with the dataset's occluding bar drawn in each first frame")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="long_video_bench", help="where the videos go (default: ./long_video_bench)")
    parser.add_argument("--memory-only", action="store_true", help="only the peak memory of 60 and 240 frames")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)  # one length, in this process
    args = parser.parse_args(argv)
    if not Path(args.ckpt).is_file():
        raise SoraError(f"ckpt {args.ckpt!r} is not a file")
    for key, low in (("steps", 1), ("batch_size", 1), ("ar_step", 0), ("limit", 0), ("cfg", 0), ("overlap", 1),
                     ("later_windows_cfg", 0), ("draft_frames", 1), ("candidates", 2),
                     ("redraw_cfg", 0)):
        value = getattr(args, key)
        if value is not None and value < low:
            raise SoraError(f"--{key.replace('_', '-')} must be >= {low}, got {value}")
    if args.draft_frames and (args.first_frames or args.first_frames_bar):
        raise SoraError("--draft-frames makes each video's first frames from text, and --first-frames gives it one; "
                        "give one of them")
    if args.lengths and not all(n.strip().isdigit() and int(n) >= 1 for n in args.lengths.split(",")):
        raise SoraError(f"--lengths must be frame counts >= 1, comma-separated, got {args.lengths!r}")
    if args.memory_child:
        print(json.dumps(measure_memory(args, args.memory_child)), flush=True)
        return
    rows = [] if args.memory_only else sample_rows(args)
    if not args.no_memory:
        memory_rows(args)
    if rows:
        print(table(rows))


if __name__ == "__main__":
    main()
