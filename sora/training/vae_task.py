"""Training a video VAE as the best peers do: L1 + KL + LPIPS + a late hinge GAN with VQGAN's adaptive weight.

    loss = L1 + kl_weight KL + lpips_weight LPIPS + [step >= gan_start_step] gan_weight lambda G
    lambda = ||grad_last L_rec|| / ||grad_last G||    (VQGAN, Esser et al. 2021, eq. 7; L_rec = L1 + lpips_weight LPIPS)

L1 and KL to N(0, I) as in LDM (Rombach et al. 2022); LPIPS (Zhang et al. 2018) with VGG16 weights from a local
file; G the generator's hinge loss against a 3D patch discriminator, which starts late (as Wan-VAE,
HunyuanVideo and Open-Sora's autoencoders start theirs) so it sharpens a reconstruction that is already right
instead of fighting it. Images and clips train together: a bucket of num_frames=1 takes images (data.buckets,
data.image_batch_ratio), which the causal VAE encodes as its first frame.

The discriminator trains in the same optimizer step: its loss sees the reconstruction detached, and the
generator's GAN term sees the discriminator's weights detached (torch.func.functional_call), so one backward
gives each network only its own gradients. Lightning's automatic optimization, gradient clipping, the
non-finite guard, the LR schedule and exact resume (both networks and their AdamW state are in every
checkpoint) then work as for the DiT. LPIPS is frozen and kept out of the checkpoints.
"""

from pathlib import Path

import torch
from torch.func import functional_call

from sora.data.stream import make_loader
from sora.eval.end_of_run import reconstruct
from sora.eval.metrics import psnr, ssim
from sora.models.discriminator import (
    PatchDiscriminator3D,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
)
from sora.models.flops import num_params
from sora.models.geometry import LatentGeometry
from sora.models.lpips import LPIPS, video_lpips
from sora.models.vae import build_vae
from sora.training.task import Task

LPIPS_FRAMES = 4  # frames a clip LPIPS compares each step (the same random ones across the batch): VGG16 is costly


class VAETask(Task):
    def __init__(self, cfg):
        super().__init__(cfg)
        t = cfg.task
        self.vae = build_vae(cfg.vae)
        self.discriminator = PatchDiscriminator3D(t.disc_channels) if t.gan_weight > 0 else None
        # In a list, not a submodule: frozen weights from a file of their own, not to be copied into checkpoints.
        self._lpips = [LPIPS.from_files(t.lpips_backbone)] if t.lpips_backbone else []

    def trained_parameters(self):
        params = list(self.vae.parameters())
        return params + (list(self.discriminator.parameters()) if self.discriminator is not None else [])

    # -- what train.py asks of a task ------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg) -> "VAETask":
        with torch.device("meta"):  # the frame rule, without building the weights
            cls.check_buckets(cfg, LatentGeometry.of(build_vae(cfg.vae)))
        return cls(cfg)

    @property
    def geometry(self) -> LatentGeometry:
        return LatentGeometry.of(self.vae)

    def describe(self) -> str:
        return f"task=vae  params: vae {num_params(self.vae)}"

    def final_results(self, run_dir: Path) -> dict:
        """Reconstruction PSNR, SSIM (and LPIPS) on the held-out shards, or the training ones when there are none."""
        data = self.cfg.data.copy()
        data.shards, data.num_workers = self.cfg.data.eval_shards or self.cfg.data.shards, 0
        if self.cfg.data.eval_shards:
            data.min_scores = None  # held-out clips are read unfiltered (data.min_scores is training's)
        return reconstruct(self.vae, make_loader(data, seed=1), run_dir / "samples" / "final", data.sample_fps,
                           lpips=self.lpips)

    def setup(self, stage: str):
        for net in self._lpips:
            net.to(self.device)

    @property
    def lpips(self) -> LPIPS | None:
        return self._lpips[0] if self._lpips else None

    def gan_active(self) -> bool:
        return self.discriminator is not None and self.global_step >= self.cfg.task.gan_start_step

    # -- the step ----------------------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        t = self.cfg.task
        video = batch["video"]  # b 3 t h w
        mean, logvar = self.vae.posterior(video)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        recon = self.vae.decode_raw(z)  # b 3 t h w
        l1 = (recon - video).abs().mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        logs = {"train/l1": l1, "train/kl": kl}
        rec = l1
        if self.lpips is not None:
            perceptual = video_lpips(self.lpips, recon, video, LPIPS_FRAMES)
            logs["train/lpips"] = perceptual
            if t.lpips_weight > 0:
                rec = rec + t.lpips_weight * perceptual
        loss = rec + t.kl_weight * kl
        if self.gan_active():
            detached = {name: p.detach() for name, p in self.discriminator.named_parameters()}
            g_loss = hinge_g_loss(functional_call(self.discriminator, detached, (recon,)))
            weight = adaptive_weight(rec, g_loss, self.vae.last_layer()) if torch.is_grad_enabled() else 0.0
            d_loss = hinge_d_loss(self.discriminator(video), self.discriminator(recon.detach()))
            loss = loss + t.gan_weight * weight * g_loss + d_loss
            logs.update({"train/g_loss": g_loss, "train/d_loss": d_loss, "train/gan_lambda": weight})
        if not self.loss_is_finite(loss):
            return None
        with torch.no_grad():
            if hasattr(self.vae, "latent_scale"):  # running latent std, so encode() hands the DiT unit-variance latents
                self.vae.latent_scale.lerp_(z.float().std(), 0.01 if self.global_step > 0 else 1.0)
                logs["train/latent_scale"] = self.vae.latent_scale
            logs.update({"train/loss": loss, "train/psnr": psnr(recon, video),
                         "train/ssim": ssim(recon.clamp(-1, 1), video)})
        self.log_dict(logs, prog_bar=True, batch_size=video.shape[0])
        return loss
