"""The evaluation at the end of a training run, on a model bundle or a VAE; no Lightning.

- `probe_prompts`: sample every held-out and training prompt a few times and score the videos with the
  moving-shapes probe (sora/eval/probe.py);
- `probe_modes`: for a model trained to take given frames, each prompting mode on held-out clips
  (sora/eval/modes.py);
- `final_drift` (train.final_drift): held-out prompts made val.drift_windows times the trained length window by
  window (the pipeline's `generate_long`) and their drift scored per window (sora/eval/drift.py);
- `reconstruct`: the VAE's reconstruction PSNR, SSIM (and LPIPS, given its weights) on held-out clips.
"""

import glob
import json
import logging
from pathlib import Path

import torch

from sora.data.video_io import write_mp4
from sora.errors import SoraError
from sora.eval.metrics import psnr, ssim
from sora.eval.probe import score_dir
from sora.inference.pipeline import SampleSettings, generate_to_dir

log = logging.getLogger(__name__)


def read_prompts(path: str | None) -> list[str]:
    """The prompts of a file, one a line (blank lines skipped); none for a missing or unset file."""
    if not path or not Path(path).is_file():
        return []
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def probe_prompts(bundle, prompt_files: dict[str, str | None], out_dir: Path, samples_per_prompt: int,
                  settings: SampleSettings) -> dict:
    """{split: probe scores}: each split's prompts sampled `samples_per_prompt` times into out_dir/split/."""
    results = {}
    for split, path in prompt_files.items():
        prompts = read_prompts(path) * samples_per_prompt
        if not prompts:
            continue
        out = Path(out_dir) / split
        generate_to_dir(bundle, prompts, out, seed=0, settings=settings)
        (out / "prompts.txt").write_text("".join(p + "\n" for p in prompts))
        try:
            scores = score_dir(out, prompts)
        except SoraError as e:  # prompts that are not moving-shapes captions: samples written, no probe
            log.info("probe skipped for %s: %s", split, e)
            continue
        results[split] = {k: v for k, v in scores.items() if k != "videos"}
        (out / "probe.json").write_text(json.dumps(scores, indent=1))
    return results


def probe_modes(bundle, data_cfg, out_dir: Path, settings: SampleSettings, num_clips: int = 16) -> dict | None:
    """{mode: scores} on the first held-out clips of `data_cfg.eval_shards` (sora/eval/modes.py); None when the
    run has no held-out shards or they are not moving-shapes clips (the modes are still usable, just unscored)."""
    from sora.eval.modes import evaluate_modes

    if not data_cfg.eval_shards or not glob.glob(data_cfg.eval_shards):
        log.info("prompting modes not scored: no data.eval_shards")
        return None
    try:
        return evaluate_modes(bundle, data_cfg, data_cfg.eval_shards, Path(out_dir), settings, num_clips)
    except SoraError as e:  # captions that are not moving-shapes captions: nothing to score against
        log.info("prompting modes not scored: %s", e)
        return None


def final_drift(bundle, cfg, out_dir: Path, settings: SampleSettings) -> dict | None:
    """The drift score of long videos (sora/eval/drift.py: measure_drift) of the run's held-out prompts, at
    val.drift_windows times the trained window; None when there are no moving-shapes prompts to score."""
    from sora.eval.drift import drift_prompts, measure_drift

    prompts = drift_prompts(cfg.data)
    if not prompts:
        log.info("drift not scored: no moving-shapes prompts in data.eval_prompts or the built-in dataset")
        return None
    return measure_drift(bundle, prompts, Path(out_dir), settings, cfg.val.drift_windows,
                         cfg.val.drift_samples_per_prompt)


@torch.no_grad()
def reconstruct(vae, loader, out_dir: Path, fps: int, num_batches: int = 8, lpips=None) -> dict:
    """Reconstruction PSNR (dB), SSIM and, with an LPIPS network, LPIPS over a few batches of held-out clips
    (posterior means, as sampling decodes them); writes one input|reconstruction mp4."""
    from sora.models.lpips import video_lpips

    device = next(vae.parameters()).device
    vae.eval()
    scores = {"psnr": [], "ssim": [], "lpips": []}
    for i, batch in zip(range(num_batches), loader):
        video = batch["video"].to(device)
        recon = vae.decode(vae.encode(video, sample=False)).clamp(-1, 1)
        scores["psnr"].append(psnr(recon, video).item())
        scores["ssim"].append(ssim(recon, video).item())
        if lpips is not None:
            scores["lpips"].append(video_lpips(lpips, recon, video).item())
        if i == 0:
            write_mp4(Path(out_dir) / "reconstruction.mp4", torch.cat([video[0], recon[0]], dim=-1), fps)
    mean = lambda v: round(sum(v) / len(v), 4) if v else None
    results = {"reconstruction_psnr_db": mean(scores["psnr"]), "reconstruction_ssim": mean(scores["ssim"]),
               "num_batches": len(scores["psnr"])}
    if lpips is not None:
        results["reconstruction_lpips"] = mean(scores["lpips"])
    return results
