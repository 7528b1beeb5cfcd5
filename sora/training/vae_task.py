"""Training the causal VAE: L1 reconstruction + KL to N(0, I) (Kingma & Welling 2014), weighted
`task.kl_weight` as in LDM (Rombach et al. 2022)."""

import torch

from sora.eval.metrics import psnr
from sora.models.vae import build_vae
from sora.training.task import Task


class VAETask(Task):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.vae = build_vae(cfg.vae)

    def trained_parameters(self):
        return self.vae.parameters()

    def training_step(self, batch, batch_idx):
        video = batch["video"]  # b 3 t h w
        mean, logvar = self.vae.posterior(video)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        recon = self.vae.decoder(z)
        l1 = (recon - video).abs().mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = l1 + self.cfg.task.kl_weight * kl
        if not self.loss_is_finite(loss):
            return None
        with torch.no_grad():  # running latent std, so encode() hands the DiT unit-variance latents
            self.vae.latent_scale.lerp_(z.float().std(), 0.01 if self.global_step > 0 else 1.0)
        self.log_dict({"train/loss": loss, "train/l1": l1, "train/kl": kl, "train/psnr": psnr(recon, video),
                       "train/latent_scale": self.vae.latent_scale}, prog_bar=True, batch_size=video.shape[0])
        return loss
