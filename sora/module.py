"""LightningModules: `DiTModule` trains text-to-video diffusion on frozen VAE latents; `VAEModule` trains the VAE.

Both store their resolved config in every checkpoint (`checkpoint["sora_config"]`, plain types only), so a
checkpoint rebuilds its model with no other file and loads with `torch.load(weights_only=True)`.
"""

import lightning as L
import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from sora.config import TrainConfig
from sora.dit import DiT
from sora.ema import EMA
from sora.flops import token_grid
from sora.resilience import NonFiniteGuard, grads_finite, rng_state, set_rng_state
from sora.latent_cache import sample_latent
from sora.objective import RectifiedFlow
from sora.optim import adamw, training_progress
from sora.pipeline import VideoPipeline
from sora.text import build_text_encoder
from sora.vae import build_vae


def to_plain(cfg) -> dict:
    """A (structured) config -> plain dict of str/int/float/bool/list/None, safe for weights_only loading."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def typed(cfg) -> DictConfig:
    """A plain dict or DictConfig -> config checked against TrainConfig (raises on unknown keys / bad types)."""
    return OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2, so MAX^2 = 4)."""
    mse = (x.float() - y.float()).pow(2).mean()
    return 10 * torch.log10(4.0 / mse.clamp(min=1e-10))


def all_ranks_agree(module: L.LightningModule, ok: bool) -> bool:
    """True only if `ok` on every rank: a step is skipped everywhere or nowhere (else DDP/FSDP would hang)."""
    trainer = module._trainer
    return ok if trainer is None else bool(trainer.strategy.reduce_boolean_decision(ok, all=True))


def skip_nonfinite_gradients(module: L.LightningModule, optimizer) -> None:
    """Drop this step's gradients when any is NaN/Inf: AdamW then leaves every weight as it was."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if all(p.grad is None for p in params):  # training_step skipped this step already (non-finite loss)
        return
    # Under FSDP each rank holds a shard of every gradient: each checks its own, then all agree.
    if not module.guard.check("gradient", all_ranks_agree(module, grads_finite(params)), module.global_step):
        for p in params:
            p.grad = None


def restore_rng(module: L.LightningModule) -> None:
    if getattr(module, "_pending_rng", None) is not None:
        set_rng_state(module._pending_rng)
        module._pending_rng = None


def save_extras(module: L.LightningModule, checkpoint: dict) -> None:
    """Plain config, RNG state, non-finite counters and the run record: all loadable with weights_only=True."""
    checkpoint["sora_config"] = to_plain(module.cfg)
    checkpoint["sora_rng"] = rng_state()
    checkpoint["sora_guard"] = module.guard.state_dict()
    if module.run_record is not None:
        checkpoint["sora_run"] = module.run_record


def load_extras(module: L.LightningModule, checkpoint: dict) -> None:
    # The RNG state is put back just before the first resumed step (restore_rng), not now: building the
    # DataLoader iterator in between draws from torch's generator, which the uninterrupted run did not.
    module._pending_rng = checkpoint.get("sora_rng")
    if "sora_guard" in checkpoint:
        module.guard.load_state_dict(checkpoint["sora_guard"])


# ---------------------------------------------------------------------------------------------------------------
# Text-to-video diffusion
# ---------------------------------------------------------------------------------------------------------------


class DiTModule(L.LightningModule):
    def __init__(self, cfg, load_vae_ckpt: bool = True):
        super().__init__()
        cfg = typed(cfg)
        if load_vae_ckpt and cfg.vae.ckpt:
            from sora.checkpoint import load_vae  # local: checkpoint.py imports this module

            self.vae, vae_cfg = load_vae(cfg.vae.ckpt)
            cfg.vae = OmegaConf.merge(vae_cfg, {"ckpt": cfg.vae.ckpt})  # record the architecture actually used
        else:
            self.vae = build_vae(cfg.vae)
        self.cfg = cfg
        self.vae.eval().requires_grad_(False)
        text = build_text_encoder(cfg.text)
        if text.trainable:
            self.text = text
        else:  # a frozen T5/CLIP is not ours to checkpoint: keep it out of state_dict, move it by hand
            self.__dict__["text"] = text
        self.dit = DiT(self.vae.latent_channels, text.dim, **to_plain(cfg.dit))
        # EMA of everything that trains: the DiT and, when it is trainable, the text encoder.
        # (Held outside the registered modules so state_dict names each weight once: dit.*, text.*, ema.*.)
        self.__dict__["trained"] = nn.ModuleDict({"dit": self.dit, **({"text": text} if text.trainable else {})})
        self.ema = EMA(self.trained, cfg.train.ema_decay)
        o = cfg.objective
        self.objective = RectifiedFlow(o.logit_normal_mean, o.logit_normal_std, o.prediction.value, o.t_min)
        self.guard = NonFiniteGuard(cfg.train.max_nonfinite_steps)
        self.run_record: dict | None = None  # set by train.py; saved in checkpoints
        self.sharded = False  # train.strategy=fsdp: see configure_model
        self._gathered_ema = None  # sharded runs sample from an unsharded copy of the EMA on rank 0

    def configure_model(self):
        """train.strategy=fsdp (Lightning's ModelParallelStrategy gives the mesh): shard what trains, and its EMA.

        The EMA copy is sharded the same way, so its update is a per-shard lerp with no communication. The frozen
        VAE and a frozen text encoder stay whole on every rank.
        """
        if self.device_mesh is None or self.sharded:
            return
        from sora.parallel import fully_shard_trained

        self.to(self.trainer.strategy.root_device)  # ModelParallelStrategy leaves placement to the module
        dtype = torch.bfloat16 if str(self.trainer.precision).startswith("bf16") else None
        for parts in (self.trained, self.ema.model):
            fully_shard_trained(parts, self.device_mesh["data_parallel"], dtype)
        self.sharded = True

    def gather_for_sampling(self) -> None:
        """Sharded runs: every rank calls this; rank 0 then holds an unsharded copy of the EMA for pipeline()."""
        if not self.sharded:
            return
        from sora.parallel import gather_full_state

        full = gather_full_state(self.ema.model)
        if self.global_rank != 0:
            return
        if self._gathered_ema is None:  # built once, then refilled at every sampling
            text = self.trained["text"] if "text" in self.trained else self.text
            with torch.random.fork_rng(devices=[]):  # the copy's init must not move the training RNG (exact resume)
                plain = nn.ModuleDict({"dit": DiT(self.vae.latent_channels, text.dim, **to_plain(self.cfg.dit))})
                if "text" in self.trained:
                    plain["text"] = build_text_encoder(self.cfg.text)
            # Outside the registered modules: a sampling copy, not part of the checkpoint.
            self.__dict__["_gathered_ema"] = plain.to(self.device).eval().requires_grad_(False)
        self._gathered_ema.load_state_dict(full)

    def setup(self, stage: str):
        if not self.text.trainable:
            self.text.to(self.device)
        sp = self.cfg.train.sequence_parallel_size
        if sp > 1 and self.dit.sp_group is None:
            from sora.parallel import sequence_parallel_group

            # The DiT being trained splits tokens; the EMA copy (made in __init__) stays whole, for sampling.
            self.dit.enable_sequence_parallel(sequence_parallel_group(sp, self.trainer.strategy.root_device.type))
        if self.cfg.train.compile and not getattr(self, "_compiled", False):
            # Regional compilation: each block compiled once and reused (all blocks share one graph), so
            # compile time does not grow with depth; bucket shapes are dynamic dimensions.
            for block in self.dit.blocks:
                block.compile(dynamic=None)
            self._compiled = True

    def training_step(self, batch, batch_idx):
        captions = list(batch["caption"])  # [b]
        drop = torch.rand(len(captions)) < self.cfg.train.caption_dropout  # for classifier-free guidance
        packed = isinstance(batch.get("video", batch.get("latent")), list)  # data.packing: clips of any shapes
        # latent: b z t h w, or for a pack a list of z t h w (each clip encoded alone)
        if "latent" in batch:  # a latent cache: no decoding, no VAE encoder
            latent = [sample_latent(z[None])[0] for z in batch["latent"]] if packed else sample_latent(batch["latent"])
        else:
            with torch.no_grad():
                video = batch["video"]  # b 3 t h w, or [3 t h w]
                latent = [self.vae.encode(v[None])[0] for v in video] if packed else self.vae.encode(video)
        like = latent[0] if packed else latent  # the dtype and device of the latents
        if "context" in batch:  # cached embeddings of a frozen text encoder
            context, mask = batch["context"].to(like.dtype), batch["mask"].bool()  # b m d, b m
            if drop.any():
                with torch.no_grad():
                    empty, empty_mask = self.text([""])  # 1 m d, 1 m
                rows = drop.to(like.device)
                context = torch.where(rows[:, None, None], empty.to(context.dtype), context)
                mask = torch.where(rows[:, None], empty_mask, mask)
        else:
            context, mask = self.text(["" if d else c for c, d in zip(captions, drop.tolist())])
        loss = (self.objective.loss_packed if packed else self.objective.loss)(self.dit, latent, context, mask)
        if not self.guard.check("loss", all_ranks_agree(self, bool(torch.isfinite(loss))), self.global_step):
            return None  # Lightning skips backward and the optimizer step
        self.log("train/loss", loss, prog_bar=True, batch_size=len(captions))
        # What sora.callbacks.Throughput needs to count this step's model FLOPs: (token grid, text length, clips).
        clips = [(z.shape, 1) for z in latent] if packed else [(latent.shape[1:], latent.shape[0])]
        self.last_step_shapes = [(token_grid(shape, self.dit.patch_size), context.shape[1], n) for shape, n in clips]
        return loss

    def on_fit_start(self):
        # setup() runs before the strategy moves the module to its device; a frozen encoder is not registered,
        # so it follows here, or a GPU run would feed the DiT text embeddings that live on the CPU.
        if not self.text.trainable:
            self.text.to(self.device)

    def on_train_batch_start(self, batch, batch_idx):
        restore_rng(self)
        if self.dit.sp_group is not None:  # one clip, one noise draw: the group's ranks must draw the same numbers
            from sora.parallel import share_rng_state

            share_rng_state(self.dit.sp_group)

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end: checkpoint callbacks run before the module's batch-end hook,
        # and a checkpoint must hold the EMA that includes its own step.
        self.ema.update(self.trained, self.global_step)

    def configure_optimizers(self):
        return adamw(self.trained.parameters(), self.cfg.optim, self.progress)

    def progress(self) -> float:
        return training_progress(self._trainer, self.cfg.train.max_minutes)

    def on_before_optimizer_step(self, optimizer):
        skip_nonfinite_gradients(self, optimizer)

    def on_save_checkpoint(self, checkpoint):
        save_extras(self, checkpoint)

    def on_load_checkpoint(self, checkpoint):
        load_extras(self, checkpoint)

    def pipeline(self, ema: bool = True) -> VideoPipeline:
        if self.sharded:  # the sharded weights run only with every rank: sample from the gathered copy
            assert ema and self._gathered_ema is not None, "a sharded run samples its EMA after gather_for_sampling()"
            parts = self._gathered_ema
        else:
            parts = self.ema.model if ema else self.trained
        text = parts["text"] if "text" in parts else self.text
        return VideoPipeline(self.vae, text.eval(), parts["dit"].eval(), self.objective)


# ---------------------------------------------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------------------------------------------


class VAEModule(L.LightningModule):
    """L1 reconstruction + KL to N(0, I) (Kingma & Welling 2014), weighted `task.kl_weight` as in LDM."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = typed(cfg)
        assert self.cfg.vae.kind.value == "causal3d", "task=vae trains a learnable VAE: set vae=causal3d"
        self.vae = build_vae(self.cfg.vae)
        self.guard = NonFiniteGuard(self.cfg.train.max_nonfinite_steps)
        self.run_record: dict | None = None

    def on_train_batch_start(self, batch, batch_idx):
        restore_rng(self)

    def training_step(self, batch, batch_idx):
        video = batch["video"]  # b 3 t h w
        mean, logvar = self.vae.posterior(video)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        recon = self.vae.decoder(z)
        l1 = (recon - video).abs().mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = l1 + self.cfg.task.kl_weight * kl
        if not self.guard.check("loss", all_ranks_agree(self, bool(torch.isfinite(loss))), self.global_step):
            return None
        with torch.no_grad():  # running latent std, so encode() hands the DiT unit-variance latents
            self.vae.latent_scale.lerp_(z.float().std(), 0.01 if self.global_step > 0 else 1.0)
        self.log_dict({"train/loss": loss, "train/l1": l1, "train/kl": kl, "train/psnr": psnr(recon, video),
                       "train/latent_scale": self.vae.latent_scale}, prog_bar=True, batch_size=video.shape[0])
        return loss

    def configure_optimizers(self):
        return adamw(self.vae.parameters(), self.cfg.optim, self.progress)

    def progress(self) -> float:
        return training_progress(self._trainer, self.cfg.train.max_minutes)

    def on_before_optimizer_step(self, optimizer):
        skip_nonfinite_gradients(self, optimizer)

    def on_save_checkpoint(self, checkpoint):
        save_extras(self, checkpoint)

    def on_load_checkpoint(self, checkpoint):
        load_extras(self, checkpoint)

    @torch.no_grad()
    def reconstruct(self, video: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self.vae.encode(video, sample=False)).clamp(-1, 1)


def num_params(module: nn.Module) -> str:
    n = sum(p.numel() for p in module.parameters())
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K" if n >= 1e2 else str(n) if n else "0"

