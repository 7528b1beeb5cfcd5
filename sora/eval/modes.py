"""How well a model prompted with images and videos does, on held-out clips of the moving-shapes dataset.

Each mode is run on the first held-out ground-truth clips (one window each, read as training reads them: from
frame 0, at the training frame stride, centre-cropped) with their own captions, written to mp4 and read back,
then measured:
  image      the clip's first frame given: PSNR of the output's first frame against it (it is given: this checks
             it comes out as given); how much the frames made after it change when another clip's first frame
             is given instead (the same prompts and seed: 0 for a model blind to the image); probe scores
  forward    the first half given, the second made: how often the new frames move in the caption's direction;
             the centroid's step at the seam against the clip's own median step a frame
  backward   the same with the second half given and the first made
  long       text to video at 4x the window, made window by window: the share of videos whose every window has
             the caption's colour, and colour and direction (on this dataset a shape crosses the frame in about
             1.5 windows and no training clip shows one leave it, so direction cannot hold over 4 windows)
  loop       PSNR of the last frame against the first, and of the one before it
  connect    clip i to clip i + 1: PSNR of the given ends in the output against the clips (they are given:
             this checks they come out as given), and the centroid's step out of clip A
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sora.data.moving_shapes import parse_caption
from sora.data.stream import make_loader, strip_bookkeeping
from sora.data.video_io import read_video, to_uint8_frames, write_mp4
from sora.eval.probe import analyze, centroids, score
from sora.inference.pipeline import SampleSettings
from sora.inference.prompting import VisualPrompt, make


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (peak 255); 100 for identical ones."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 100.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def mean_psnr(pairs) -> float:
    """The mean PSNR in dB of (a, b) uint8 image pairs, to 2 decimals."""
    return round(float(np.mean([psnr_uint8(a, b) for a, b in pairs])), 2)


def held_out_clips(data_cfg, eval_shards: str, num_clips: int, num_frames: int) -> tuple[torch.Tensor, list[str]]:
    """(n 3 T h w clips in [-1, 1], their captions): the first held-out clips, as training reads them."""
    data = data_cfg.copy()
    data.shards, data.num_workers, data.shuffle_buffer, data.buckets, data.packing = eval_shards, 0, 1, None, False
    data.random_start = data.random_crop = False
    data.num_frames, data.batch_size_per_gpu = num_frames, num_clips
    data.latent_cache, data.tokens_per_batch = None, None
    data.min_scores = None  # held-out clips are read unfiltered (data.min_scores is training's)
    batch, _, _ = strip_bookkeeping(next(iter(make_loader(data, seed=0))))
    return batch["video"][:num_clips], list(batch["caption"][:num_clips])


def _write_read(videos: torch.Tensor, out_dir: Path, fps: int) -> list[np.ndarray]:
    """Write videos as the user would get them, and read them back (uint8 t h w 3)."""
    paths = [out_dir / f"{i:03d}.mp4" for i in range(len(videos))]
    for video, path in zip(videos, paths):
        write_mp4(path, video, fps)
    return [read_video(p)[0] for p in paths]


def made_frames_change_with_image(bundle, prompts: list[str], seed: int, settings: SampleSettings,
                                  images: torch.Tensor, videos: torch.Tensor) -> float | None:
    """Mean absolute change (pixel values in [-1, 1]) of the frames made after a given first image when video i
    is given image i - 1 instead, same prompts and seed: how much the made frames follow the image. The pipeline
    pastes the given image into the output, so its own PSNR says nothing of whether the DiT saw it; this does
    (with a causal VAE its decoder also carries the image into the next frames). None with nothing to compare.

    images: n 3 h w, the ones `videos` (n 3 T h w, from make) were given."""
    made = bundle.geometry.latent_index(videos.shape[2]) >= bundle.dit.patch_size[0]  # T: outside the given patch
    if len(images) < 2 or not made.any():
        return None
    other = make(bundle, prompts, seed, settings, VisualPrompt("image", image=images.roll(1, 0)))  # n 3 T h w
    change = (videos[:, :, made] - other[:, :, made].to(videos.device)).abs().mean()
    return float(f"{change.item():.3g}")  # significant digits: a barely trained model moves them by ~1e-7


def _direction_seam(videos: list[np.ndarray], clips: list[np.ndarray], prompts: list[str], new: slice,
                    seam: tuple[int, int]) -> dict:
    """Direction of the new frames against the caption, and the centroid's step across the seam."""
    agree, ratios, made = 0, [], []
    for video, clip, prompt in zip(videos, clips, prompts):
        agree += analyze(video[new])["direction"] == parse_caption(prompt)[2]
        c, own = centroids(video), centroids(clip)
        step_own = np.nanmedian(np.linalg.norm(np.diff(own, axis=0), axis=1))
        step_seam = np.linalg.norm(c[seam[1]] - c[seam[0]])
        step_made = np.nanmedian(np.linalg.norm(np.diff(c[new], axis=0), axis=1))  # the made frames' own step
        if np.isfinite(step_seam) and step_own > 0:
            ratios.append(float(step_seam / step_own))
            made.append(float(step_made / step_own))
    return {"n": len(videos), "new_frames_direction_acc": agree / max(len(videos), 1),
            "seam_step_over_own_step": round(float(np.median(ratios)), 3) if ratios else None,
            "new_frames_step_over_own_step": round(float(np.nanmedian(made)), 3) if made else None,
            "seams_measured": len(ratios)}


@torch.no_grad()
def evaluate_modes(bundle, data_cfg, eval_shards: str, out_dir: Path, settings: SampleSettings,
                   num_clips: int = 16, seed: int = 0) -> dict:
    """{mode: scores} for a model trained to take given frames (see the module docstring)."""
    out_dir, s = Path(out_dir), replace(settings, num_frames=settings.window)
    T, fps = s.window, s.fps
    clips, prompts = held_out_clips(data_cfg, eval_shards, num_clips, T)
    truth = [to_uint8_frames(c) for c in clips]
    results, half = {}, T // 2

    def run(mode: str, visual: VisualPrompt, settings=s) -> tuple[list[np.ndarray], torch.Tensor]:
        """The mode's videos as read back from mp4 (uint8 t h w 3 each), and as made (n 3 T h w in [-1, 1])."""
        videos = make(bundle, prompts, seed, settings, visual)
        (out_dir / mode).mkdir(parents=True, exist_ok=True)
        (out_dir / mode / "prompts.txt").write_text("".join(p + "\n" for p in prompts))
        return _write_read(videos, out_dir / mode, fps), videos

    images = clips[:, :, 0]  # n 3 h w
    got, videos = run("image", VisualPrompt("image", image=images))
    scores = {k: v for k, v in score(got, prompts).items() if k != "videos"}
    scores["first_frame_psnr_db"] = mean_psnr((g[0], t[0]) for g, t in zip(got, truth))
    scores["made_frames_change_with_image"] = made_frames_change_with_image(bundle, prompts, seed, s, images, videos)
    results["image"] = scores

    got, _ = run("forward", VisualPrompt("extend", clip=clips[:, :, :half], extend="forward"),
                 replace(s, num_frames=T - half, overlap_frames=half))
    results["forward"] = _direction_seam(got, truth, prompts, slice(half, None), (half - 1, half))
    got, _ = run("backward", VisualPrompt("extend", clip=clips[:, :, half:], extend="backward"),
                 replace(s, num_frames=T - half, overlap_frames=half))
    results["backward"] = _direction_seam(got, truth, prompts, slice(None, T - half), (T - half - 1, T - half))

    got, _ = run("long", VisualPrompt(), replace(s, num_frames=4 * T))
    hits = np.zeros((len(got), 4, 2), bool)  # video, window, (colour, direction) as the caption says
    for v, (video, prompt) in enumerate(zip(got, prompts)):
        want = parse_caption(prompt)
        for w in range(4):
            found = analyze(video[w * T : (w + 1) * T])
            hits[v, w] = found["color"] == want[0], found["direction"] == want[2]
    results["long"] = {"n": len(got), "num_frames": 4 * T, "kept_color_acc": float(hits[:, :, 0].all(1).mean()),
                       "kept_color_and_direction_acc": float(hits.all((1, 2)).mean()),
                       "per_window_color_and_direction_acc": hits.all(2).mean(0).round(3).tolist()}

    got, _ = run("loop", VisualPrompt("loop"))
    results["loop"] = {"n": len(got), "last_vs_first_psnr_db": mean_psnr((g[-1], g[0]) for g in got),
                       "before_last_vs_first_psnr_db": mean_psnr((g[-2], g[0]) for g in got)}

    g = max(1, T // 4)
    nxt = [(i + 1) % len(truth) for i in range(len(truth))]
    got, _ = run("connect", VisualPrompt("connect", clips=(clips, clips[nxt])), replace(s, overlap_frames=g))
    # output = A[:-g], the window (A's last g, the transition, B's first g), B[g:]
    a_end, b_start = T - 1, 2 * T - 2 * g
    seams = [_direction_seam([v[: b_start + 1]], [truth[i]], [prompts[i]], slice(a_end, b_start + 1),
                             (a_end, a_end + 1))["seam_step_over_own_step"] for i, v in enumerate(got)]
    results["connect"] = {
        "n": len(got), "given_frames_each_side": g,
        "start_matches_a_psnr_db": mean_psnr((v[a_end], truth[i][-1]) for i, v in enumerate(got)),
        "end_matches_b_psnr_db": mean_psnr((v[b_start], truth[j][0]) for v, j in zip(got, nxt)),
        "seam_out_of_a_step_over_own_step": round(float(np.median([x for x in seams if x is not None])), 3)
        if any(x is not None for x in seams) else None}
    (out_dir / "modes.json").write_text(json.dumps(results, indent=1))
    return results
