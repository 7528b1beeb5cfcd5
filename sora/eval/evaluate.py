"""A checkpoint's metrics, one JSON file: what two runs of an ablation compare.

    python -m sora.eval ckpt=RUN/checkpoints/last.ckpt out=eval.json metrics=[val_loss,fvd,clip,recon,probe] \\
        fvd.i3d=weights/i3d_torchscript.pt clip.path=weights/clip-vit-base-patch32 [data.eval_shards=...]

- `val_loss` (always, at the top level): the validation loss of sora/eval/validation.py, the number a run logs;
- `fvd`: StyleGAN-V's protocol (sora/eval/fvd.py) against the held-out clips, generated from their captions;
- `clip`: CLIP score and CLIPSIM of videos of data.eval_prompts (sora/eval/clip_score.py);
- `recon`: the VAE's reconstruction PSNR and SSIM on held-out clips (sora/eval/metrics.py);
- `probe`: the moving-shapes probe on held-out and training prompts (sora/eval/probe.py);
- `modes`: each prompting mode on held-out clips, as the end of a run scores them (sora/eval/modes.py).
Each metric states the weights it used; nothing is downloaded.
"""

import logging
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from sora.data.buckets import BucketSet
from sora.data.decode import BadSample
from sora.data.stream import ClipStream, expand_shards, raw_samples
from sora.errors import SoraError
from sora.eval.validation import ValidationLoss, eval_data_config
from sora.inference.pipeline import SampleSettings, generate_long

log = logging.getLogger(__name__)

METRICS = ("val_loss", "fvd", "clip", "recon", "probe", "modes")

# ---------------------------------------------------------------------------------------------------------------
# Held-out clips
# ---------------------------------------------------------------------------------------------------------------


def held_out(data_cfg, num_frames: int, frame_stride: int, height: int, width: int, limit: int):
    """Batches of up to 16 (b 3 T h w clips in [-1, 1], captions) from data.eval_shards, in shard order, each
    `num_frames` frames from frame 0 at `frame_stride`, resized to cover (height, width) and centre-cropped. Clips
    too short are left out (counted in the returned dict's "too_short")."""
    data = eval_data_config(data_cfg)
    data.num_frames, data.frame_stride, data.height, data.width = num_frames, frame_stride, height, width
    data.buckets = None
    shards = expand_shards(data.shards) if data.shards else []
    if not shards:
        raise SoraError("data.eval_shards is not set: this metric needs held-out clips")
    stream = ClipStream(shards, data, BucketSet.from_config(data))
    skipped, videos, captions, n = {}, [], [], 0
    for raw in raw_samples(shards):
        if n >= limit:
            break
        try:
            _, item = stream.process(raw, random.Random(0))
        except BadSample as e:
            skipped[e.reason] = skipped.get(e.reason, 0) + 1
            continue
        videos.append(item["video"])
        captions.append(item["caption"])
        n += 1
        if len(videos) == 16:
            yield torch.stack(videos), captions, skipped  # b 3 T h w
            videos, captions = [], []
    if videos:
        yield torch.stack(videos), captions, skipped


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def val_loss(bundle, cfg) -> dict:
    result = ValidationLoss(cfg.data, cfg.val, BucketSet.from_config(cfg.data, bundle.geometry))(bundle)
    return {**result, "timesteps": list(cfg.val.timesteps), "seed": cfg.val.seed, "eval_shards": cfg.data.eval_shards}


def _generate(bundle, prompts: list[str], settings: SampleSettings, seed: int, batch_size: int) -> torch.Tensor:
    """Videos of the prompts, video i seeded seed + i (as sample.py), on the CPU: n 3 T h w."""
    out = []
    for start in range(0, len(prompts), batch_size):
        with torch.autocast(bundle.device.type, torch.bfloat16, enabled=bundle.device.type == "cuda"):
            out.append(generate_long(bundle, prompts[start : start + batch_size], seed + start, settings).float().cpu())
    return torch.cat(out)


def fvd(bundle, cfg, ecfg, settings: SampleSettings, device) -> dict:
    from sora.eval.fvd import PROTOCOL, feature_stats, frechet_distance, fvd_settings, i3d_features, load_i3d

    f = ecfg.fvd
    long = fvd_settings(bundle, settings, f.num_frames)  # exactly f.num_frames frames, or a one-line error
    detector, sha = load_i3d(f.i3d, device)
    stride = f.frame_stride or cfg.data.frame_stride
    real, captions, skipped = [], [], {}
    for video, caps, skipped in held_out(cfg.data, f.num_frames, stride, settings.height, settings.width, f.num_real):
        real.append(i3d_features(detector, video, device))
        captions += caps
    if len(captions) < 2:
        raise SoraError(f"FVD: data.eval_shards holds {len(captions)} clip(s) of {f.num_frames} frames at stride "
                        f"{stride} (skipped: {skipped or 'none'}); it needs at least 2")
    prompts = [captions[i % len(captions)] for i in range(f.num_generated)]  # generated from the real clips' captions
    fake = []
    for start in range(0, len(prompts), ecfg.batch_size):
        videos = _generate(bundle, prompts[start : start + ecfg.batch_size], long, ecfg.seed + start, ecfg.batch_size)
        if videos.shape[2] != f.num_frames:  # the comparison is only FVD between clips of one length
            raise SoraError(f"FVD: the checkpoint made {videos.shape[2]}-frame clips for fvd.num_frames={f.num_frames}")
        fake.append(i3d_features(detector, videos, device))
    real_f, fake_f = np.concatenate(real), np.concatenate(fake)
    value = frechet_distance(*feature_stats(real_f), *feature_stats(fake_f))
    return {"fvd": value, "num_real": len(real_f), "num_generated": len(fake_f), "num_frames": f.num_frames,
            "frame_stride": stride, "size": [settings.height, settings.width], "real_skipped": skipped,
            "protocol": PROTOCOL, "detector": str(f.i3d), "detector_sha256": sha}


def clip(bundle, cfg, ecfg, settings: SampleSettings, device) -> dict:
    from sora.eval.clip_score import CLIPScorer, summarize
    from sora.eval.end_of_run import read_prompts

    scorer = CLIPScorer(ecfg.clip.path, device)
    prompts = read_prompts(cfg.data.eval_prompts) * ecfg.clip.samples_per_prompt
    if not prompts:
        raise SoraError(f"clip: data.eval_prompts={cfg.data.eval_prompts!r} holds no prompt")
    cos = []
    for start in range(0, len(prompts), ecfg.batch_size):
        batch = prompts[start : start + ecfg.batch_size]
        cos.append(scorer.cosines(_generate(bundle, batch, settings, ecfg.seed + start, ecfg.batch_size), batch).cpu())
    return {**summarize(torch.cat(cos), scorer.path), "prompts": cfg.data.eval_prompts}


@torch.no_grad()
def recon(bundle, cfg, ecfg, device) -> dict:
    from sora.eval.metrics import psnr, ssim
    from sora.models.lpips import LPIPS, video_lpips

    vae, d = bundle.vae, cfg.data
    lpips = LPIPS.from_files(ecfg.lpips, key="lpips").to(device) if ecfg.lpips else None
    psnrs, ssims, lpipses, n = [], [], [], 0
    for video, _, _ in held_out(d, d.num_frames, d.frame_stride, d.height, d.width, ecfg.recon_clips):
        video = video.to(device)
        out = vae.decode(vae.encode(video, sample=False)).clamp(-1, 1)
        psnrs.append(psnr(out, video).item() * len(video))
        ssims.append(ssim(out, video).item() * len(video))
        if lpips is not None:
            lpipses.append(video_lpips(lpips, out, video).item() * len(video))
        n += len(video)
    if n == 0:
        raise SoraError("recon: data.eval_shards holds no usable clip")
    return {"psnr_db": sum(psnrs) / n, "ssim": sum(ssims) / n, "num_clips": n,
            "lpips": sum(lpipses) / n if lpipses else None, "lpips_weights": ecfg.lpips,
            "vae": cfg.vae.ckpt or f"{cfg.vae.kind.value} (no trained weights: pixel space is the identity)"}


def probe(bundle, cfg, ecfg, settings: SampleSettings, out_dir: Path) -> dict:
    from sora.eval.end_of_run import probe_prompts

    prompts = {"heldout": cfg.data.eval_prompts, "train": cfg.data.train_prompts}
    scores = probe_prompts(bundle, prompts, out_dir, ecfg.samples_per_prompt, settings)
    return {**scores, "videos": str(out_dir), "detector": "sora.eval.probe (hand-written, no weights)"}


def modes(bundle, cfg, settings: SampleSettings, out_dir: Path) -> dict:
    from sora.eval.modes import evaluate_modes

    # The end of a run scores the same way; here a caption that is not a moving-shapes one stops it in one line.
    scores = evaluate_modes(bundle, cfg.data, cfg.data.eval_shards, out_dir, settings)
    return {**scores, "videos": str(out_dir), "detector": "sora.eval.probe (hand-written, no weights)"}


# ---------------------------------------------------------------------------------------------------------------
# The whole evaluation
# ---------------------------------------------------------------------------------------------------------------


def check_evaluation(bundle, cfg, ecfg, settings: SampleSettings) -> None:
    """What each asked metric needs, checked before any is computed (the validation loss alone can take long): the
    metric names, FVD's clip length, the local weights' paths, the prompt files. One line naming the key. (clip and
    probe make videos at the checkpoint's trained size, which its training checked.)"""
    from sora.eval.fvd import check_i3d, fvd_settings

    unknown = [m for m in ecfg.metrics if m not in METRICS]
    if unknown:
        raise SoraError(f"metrics: {unknown[0]!r} is not a metric (one of {', '.join(METRICS)})")
    if "fvd" in ecfg.metrics:
        fvd_settings(bundle, settings, ecfg.fvd.num_frames)
        check_i3d(ecfg.fvd.i3d)
    if "clip" in ecfg.metrics and not (ecfg.clip.path and Path(ecfg.clip.path).is_dir()):
        raise SoraError(f"clip.path={ecfg.clip.path!r} is not a directory: the CLIP score needs a transformers "
                        "CLIPModel saved with save_pretrained at a local path")
    if "recon" in ecfg.metrics and ecfg.lpips and not Path(ecfg.lpips).is_file():
        raise SoraError(f"lpips={ecfg.lpips!r} is not a file (LPIPS's VGG16 weights; null: PSNR and SSIM only)")
    if "modes" in ecfg.metrics:
        from sora.diffusion.frame_modes import gives_frames

        if not gives_frames(cfg.conditioning.modes):
            raise SoraError(f"metrics: modes scores a model given frames, but {ecfg.ckpt} was trained on text alone "
                            "(conditioning.modes)")
        if not cfg.data.eval_shards:
            raise SoraError("data.eval_shards is not set: modes prompts the model with held-out clips")
        expand_shards(cfg.data.eval_shards, "data.eval_shards")
    if {"clip", "probe"} & set(ecfg.metrics):
        for key in ("eval_prompts", "train_prompts"):
            path = cfg.data[key]
            if ecfg.data[key] is not None and not Path(path).is_file():  # given here: a probe would skip it silently
                raise SoraError(f"data.{key}={path!r} is not a file (one prompt a line)")
            try:
                if path and Path(path).is_file():
                    Path(path).read_text()
            except UnicodeDecodeError:
                raise SoraError(f"data.{key}={path!r} is not a text file (one prompt a line)") from None


def evaluate(bundle, ecfg, device, step: int | None = None) -> dict:
    """Every asked metric of a bundle, as one dict with val_loss at its top level."""
    cfg = bundle.cfg.copy()
    overrides = {k: v for k, v in OmegaConf.to_container(ecfg.data).items() if v is not None}
    cfg.data = OmegaConf.merge(cfg.data, overrides)
    settings = SampleSettings.of(cfg).override(steps=ecfg.steps, cfg=ecfg.cfg)
    check_evaluation(bundle, cfg, ecfg, settings)
    weights = f"{ecfg.ckpt} ({bundle.weights} weights)"
    result = {"ckpt": str(ecfg.ckpt), "weights": bundle.weights, "step": step,
              "sampling": {"sampler": settings.sampler, "steps": settings.steps, "cfg": settings.cfg}}
    vl = val_loss(bundle, cfg)
    result["val_loss"], result["val"] = vl["loss"], {**vl, "model": weights}
    log.info("val_loss %.5f (%d clips)", vl["loss"], vl["num_clips"])
    out_dir = Path(ecfg.out).with_suffix("")
    for name in ecfg.metrics:
        if name == "val_loss":
            continue
        if name == "fvd":
            value = fvd(bundle, cfg, ecfg, settings, device)
        elif name == "clip":
            value = clip(bundle, cfg, ecfg, settings, device)
        elif name == "recon":
            value = recon(bundle, cfg, ecfg, device)
        elif name == "modes":
            value = modes(bundle, cfg, settings, out_dir / "modes")
        else:
            value = probe(bundle, cfg, ecfg, settings, out_dir / "probe")
        result[name] = {**value, "generator": weights} if name != "recon" else value  # the videos' model
        log.info("%s: %s", name, {k: v for k, v in value.items() if isinstance(v, (int, float))})
    return result
