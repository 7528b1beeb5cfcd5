"""Training text-to-video diffusion: a thin Lightning wrapper around a ModelBundle.

The bundle (sora/inference/bundle.py) is the model: frozen VAE, text encoder, DiT, objective. This task adds
what only training needs: the EMA copy of what trains, the loss step (latents from the VAE or a latent cache,
the conditioning with caption dropout), and the plumbing of FSDP, sequence parallelism and compilation.
"""

import logging
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from sora.data.latent_cache import sample_latent
from sora.diffusion.frame_modes import CONTINUE, draw_frame_masks, gives_frames
from sora.distributed.fsdp import fully_shard_trained, gather_full_state
from sora.distributed.sequence import parallelize_sequence, sequence_parallel_group, share_rng_state
from sora.eval.end_of_run import final_drift, probe_modes, probe_prompts, read_prompts
from sora.inference.bundle import ModelBundle, vae_from_config
from sora.inference.pipeline import SampleSettings
from sora.models.conditioning import Conditioning
from sora.models.dit import DiT
from sora.models.flops import num_params
from sora.models.geometry import LatentGeometry
from sora.models.lora import adapter_state
from sora.models.vae import encode_frames_alone
from sora.training.callbacks import SampleVideos, Throughput
from sora.training.ema import EMA
from sora.training.lora import LoRATraining, SaveLoRA, whole
from sora.training.master_weights import DTYPES, lower_block_linears
from sora.training.task import Task
from sora.training.validation import DriftValidation, Validation

log = logging.getLogger(__name__)


def as_batches(fn, x):
    """fn on a batch (b ...); on a pack, fn on each clip as a batch of one."""
    return [fn(v[None])[0] for v in x] if isinstance(x, list) else fn(x)


class DiTTask(Task):
    def __init__(self, cfg, bundle: ModelBundle | None = None):
        bundle = bundle or ModelBundle.build(cfg)
        super().__init__(bundle.cfg)  # the bundle's config records the VAE a vae.ckpt brought
        self.model = bundle
        # train.lora.rank > 0: peft's adapters on the DiT are all that trains (sora/training/lora.py)
        self.lora = LoRATraining(OmegaConf.to_object(self.cfg.train.lora)) if self.cfg.train.lora.rank > 0 else None
        if self.lora is not None:
            self.lora.prepare(bundle)
        # EMA of everything that trains: the DiT and, when it is trainable, the text encoder; or the LoRA adapter.
        self.ema = EMA(self.trained_module(), self.cfg.train.ema_decay)
        self.sharded = False  # train.strategy=fsdp: see configure_model
        self._gathered_ema: dict | None = None  # sharded runs: the whole EMA state, gathered on rank 0 to sample
        self.last_step_shapes: list | None = None  # for sora.training.callbacks.Throughput
        self.sequence_group = None  # train.sequence_parallel_size > 1: this rank's group (see setup)

    def trained_module(self) -> nn.Module:
        """What trains, as one module: the DiT (and a trainable text encoder), or the LoRA adapter alone."""
        return self.model.trainable() if self.lora is None else self.lora.adapters(self.model.dit)

    def trained_parameters(self):
        return self.trained_module().parameters()

    # -- what train.py asks of a task ------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg) -> "DiTTask":
        """The frozen VAE first (a trained one from vae.ckpt decides the frame rule), every bucket checked against
        it, then the DiT and the text encoder."""
        vae, cfg = vae_from_config(cfg)
        cls.check_buckets(cfg, LatentGeometry.of(vae, cfg.dit.patch_size))
        return cls(cfg, ModelBundle.build(cfg, vae=vae))

    @property
    def geometry(self) -> LatentGeometry:
        return self.model.geometry

    def describe(self) -> str:
        lora = "" if self.lora is None else f", LoRA adapter {num_params(self.trained_module())} (only it trains)"
        return f"task=dit  params: dit {num_params(self.model.dit)}, text {num_params(self.model.text)}{lora}"

    def callbacks(self, run_dir: Path, buckets) -> list:
        t = self.cfg.train
        callbacks = [Throughput(window=t.log_every_n_steps)]
        if self.lora is not None:
            callbacks.append(SaveLoRA(run_dir))
        if self.cfg.data.eval_shards:  # the validation loss: every val.every_n_steps and at the end
            callbacks.append(Validation(self.cfg.data, self.cfg.val, buckets, run_dir / "val_loss.jsonl"))
        if self.cfg.val.drift_every_n_steps > 0 and gives_frames(self.cfg.conditioning.modes):
            callbacks.append(DriftValidation(self.cfg, run_dir / "drift"))
        if t.sample_every_n_steps > 0:
            callbacks.append(SampleVideos(read_prompts(self.cfg.data.eval_prompts), run_dir / "samples",
                                          t.sample_every_n_steps))
        return callbacks

    @property
    def sequence_parallel_size(self) -> int:
        return self.cfg.train.sequence_parallel_size

    def check_before_training(self) -> None:
        if self.cfg.data.latent_cache:  # made by this VAE and text encoder, with what frame conditioning needs
            from sora.data.latent_cache import check_cache

            check_cache(self.cfg.data.latent_cache, self.model.vae, self.model.text,
                        gives_frames(self.cfg.conditioning.modes))

    def prepare_final(self) -> None:
        if self.cfg.train.final_samples:
            self.gather_for_sampling()  # sharded runs: every rank takes part, rank 0 samples

    def final_results(self, run_dir: Path) -> dict:
        """Every held-out and training prompt sampled and probed; each prompting mode scored if it learnt them."""
        out, settings, bundle = run_dir / "samples" / "final", SampleSettings.of(self.cfg), self.sampling_bundle()
        prompts = {"heldout": self.cfg.data.eval_prompts, "train": self.cfg.data.train_prompts}
        results = {"probe": probe_prompts(bundle, prompts, out, self.cfg.train.samples_per_prompt, settings)}
        if gives_frames(self.cfg.conditioning.modes):  # it learnt to take frames: score each prompting mode
            results["modes"] = probe_modes(bundle, self.cfg.data, out / "modes", settings)
            if self.cfg.train.final_drift:  # long videos window by window, scored per window
                results["drift"] = final_drift(bundle, self.cfg, out / "drift", settings)
        return results

    # -- setup -----------------------------------------------------------------------------------------------

    def configure_model(self):
        """train.strategy=fsdp (Lightning's ModelParallelStrategy gives the mesh): shard what trains, and its EMA.

        The EMA copy is sharded the same way, so its update is a per-shard lerp with no communication. The frozen
        VAE and a frozen text encoder stay whole on every rank.
        """
        if self.device_mesh is None or self.sharded:
            return
        self.to(self.trainer.strategy.root_device)  # ModelParallelStrategy leaves placement to the module
        dtype = torch.bfloat16 if str(self.trainer.precision).startswith("bf16") else None
        mesh = self.device_mesh["data_parallel"]
        fully_shard_trained(self.model.trainable(), mesh, dtype)
        if self.lora is None:
            fully_shard_trained(self.ema.model, mesh, dtype)
        else:  # the EMA adapter, each linear a unit (never run: averaged shard by shard)
            from torch.distributed.fsdp import fully_shard

            for linear in [m for m in self.ema.model.modules() if isinstance(m, nn.Linear)]:
                fully_shard(linear, mesh=mesh)
            # Lightning loads a single-file checkpoint into the sharded module before on_load_checkpoint: the frozen
            # base it does not hold is the one just rebuilt.
            self.strict_loading = False
        self.sharded = True

    def setup(self, stage: str):
        dit, sp = self.model.dit, self.cfg.train.sequence_parallel_size
        if sp > 1 and self.sequence_group is None:
            # The DiT being trained splits tokens; the EMA copy (made in __init__) stays whole, for sampling.
            self.sequence_group = sequence_parallel_group(sp, self.trainer.strategy.root_device.type)
            parallelize_sequence(dit, self.sequence_group)
        # AdamW then keeps fp32 masters
        if self.cfg.train.param_dtype != "fp32" and not getattr(self, "_lowered", False):
            lower_block_linears(dit, DTYPES[self.cfg.train.param_dtype])  # the EMA copy (made in __init__) stays fp32
            self._lowered = True
        if self.cfg.train.fp8 and not getattr(self, "_fp8", False):  # before sharding and compiling, as torchao asks
            from sora.models.fp8 import convert_to_fp8

            convert_to_fp8(dit, self.cfg.train.fp8)  # the EMA copy (made in __init__) stays in high precision
            self._fp8 = True
        if self.cfg.train.compile and not getattr(self, "_compiled", False):
            # Regional compilation: each block compiled once and reused (all blocks share one graph), so
            # compile time does not grow with depth; bucket shapes are dynamic dimensions.
            for block in dit.blocks:
                block.compile(dynamic=None)
            self._compiled = True

    # -- the step --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def latents(self, batch: dict):
        """b z t h w (or a pack: [z t h w]): drawn from a latent cache's moments, or the frozen VAE's encoding."""
        if "latent" in batch:
            return as_batches(sample_latent, batch["latent"])
        return as_batches(self.model.vae.encode, batch["video"])

    @torch.no_grad()
    def given_latents(self, batch: dict):
        """The latent frames a condition may give: each made from its own pixel frames only, with no causal
        look-back (sora.models.vae.encode_frames_alone; in pixel space, the frames themselves)."""
        if "latent" in batch:  # a latent cache holds them beside the clip's latent (data/cache_latents.py)
            return as_batches(sample_latent, batch["alone"])
        return as_batches(lambda v: encode_frames_alone(self.model.vae, v), batch["video"])

    def conditioning(self, batch: dict, latent) -> Conditioning:
        """The batch's captions as a Conditioning, each replaced by the empty caption with probability
        train.caption_dropout (what classifier-free guidance samples with); and, when conditioning.modes
        gives frames, each clip's given frames drawn from the mixture (sora/diffusion/frame_modes.py)."""
        captions = list(batch["caption"])
        like = latent[0] if isinstance(latent, list) else latent  # the dtype and device of the latents
        drop = torch.rand(len(captions)) < self.cfg.train.caption_dropout  # b
        if "context" in batch:  # embeddings of a frozen text encoder, from a latent cache
            cond = Conditioning(batch["context"].to(like.dtype), batch["mask"].bool())
        else:
            cond = self.model.encode_text(captions)
        if drop.any():
            with torch.set_grad_enabled(self.model.text.trainable):
                cond = cond.with_text(drop, self.model.encode_text([""]))
        c = self.cfg.conditioning
        if not gives_frames(c.modes):
            return cond
        modes, pt = dict(c.modes), self.model.dit.patch_size[0]
        late = batch.get("late") or [False] * len(captions)  # b: a crop from later in its clip (data.clip_start_share)
        if isinstance(latent, list):  # a pack: one mask a clip, each its own length
            masks = [draw_frame_masks(1, z.shape[1], pt, CONTINUE if later else modes)[0][0]
                     for z, later in zip(latent, late)]
        else:
            masks = draw_frame_masks(latent.shape[0], latent.shape[2], pt, modes)[0]  # b t
            if any(late):  # a crop from later in its clip is given its first frames: the clip so far
                continued = draw_frame_masks(latent.shape[0], latent.shape[2], pt, CONTINUE)[0]  # b t
                masks = torch.where(torch.tensor(late)[:, None], continued, masks)  # b t
        # Asked while the masks are still on the CPU: on the GPU the answer would wait for the queue (a sync a step).
        if not any(m.any() for m in (masks if isinstance(masks, list) else [masks])):
            return cond  # nothing given in this batch: no given latents to encode (a second VAE pass)
        masks = [m.to(like.device) for m in masks] if isinstance(masks, list) else masks.to(like.device)
        frame_t = torch.rand(len(captions), device=like.device) * c.frame_noise  # b: noise augmentation level
        return cond.with_frames(self.given_latents(batch), masks, frame_t)

    def training_step(self, batch, batch_idx):
        latent = self.latents(batch)
        cond = self.conditioning(batch, latent)
        loss = self.model.objective.loss(self.model.dit, latent, cond)
        if not self.loss_is_finite(loss):
            return None  # Lightning skips backward and the optimizer step
        self.log("train/loss", loss, prog_bar=True, batch_size=len(cond))
        # What Throughput needs to count this step's model FLOPs: (token grid, text length, clips).
        clips = [(z.shape, 1) for z in latent] if isinstance(latent, list) else [(latent.shape, latent.shape[0])]
        self.last_step_shapes = [(self.model.geometry.grid_of_latent(shape), cond.text.shape[1], n)
                                 for shape, n in clips]
        return loss

    def on_train_batch_start(self, batch, batch_idx):
        super().on_train_batch_start(batch, batch_idx)
        if self.sequence_group is not None:  # one clip, one noise draw: the group's ranks draw the same numbers
            share_rng_state(self.sequence_group)

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end: checkpoint callbacks run before the module's batch-end hook,
        # and a checkpoint must hold the EMA that includes its own step.
        opt = self.optimizers(use_pl_optimizer=False)
        # train.param_dtype=bf16: average the fp32 master weights, not their bf16 roundings
        self.ema.update(self.trained_module(), self.global_step, getattr(opt, "full_precision", lambda: None)())

    # -- checkpoints -----------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if not self.model.text.trainable:  # a frozen encoder is not ours to store: it reloads from text.path
            for key in [k for k in checkpoint["state_dict"] if k.startswith("model.text.")]:
                del checkpoint["state_dict"][key]
        if self.lora is not None:  # the adapter and its EMA; the frozen base is rebuilt on resume
            self.lora.strip_base(checkpoint["state_dict"])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        from sora.inference.checkpoint import upgrade

        super().on_load_checkpoint(checkpoint)
        upgrade(checkpoint)  # format-1 key names
        if "state_dict" not in checkpoint:  # FSDP: the strategy has loaded the weights already (and taken them out)
            return
        if not self.model.text.trainable:  # the frozen encoder's own weights, loaded from text.path
            checkpoint["state_dict"].update({f"model.text.{k}": v for k, v in self.model.text.state_dict().items()})
        if self.lora is not None:
            self.lora.fill_base(checkpoint["state_dict"], self.model.dit)

    # -- sampling during training ----------------------------------------------------------------------------

    def gather_for_sampling(self) -> None:
        """Sharded runs: every rank calls this; rank 0 then holds the whole EMA state for sampling_bundle()."""
        if self.sharded and self.lora is not None:  # the whole base on rank 0, the EMA adapter merged in
            full = gather_full_state(self.model.trainable())  # {"dit.*"}: the wrapped DiT's names
            ema = adapter_state(self.ema.model, whole)  # every rank gathers
            dit = {k[len("dit."):]: v for k, v in full.items() if k.startswith("dit.")}
            self._gathered_ema = ({f"dit.{k}": v for k, v in self.lora.merged_state(dit, ema).items()}
                                  if self.global_rank == 0 else None)
        elif self.sharded:
            full = gather_full_state(self.ema.model)  # {"dit.*", "text.*"} on rank 0's CPU, {} elsewhere
            self._gathered_ema = full if self.global_rank == 0 else None

    def sampling_bundle(self, ema: bool = True) -> ModelBundle:
        """A bundle of the frozen parts with the EMA (or raw) DiT and text encoder."""
        if not self.sharded and self.lora is not None:
            # The base with the EMA (or raw) adapter merged in, in fp32 as the EMA copy is (train.param_dtype=bf16
            # lowers the training DiT's linears): fp32 weights no adapter touches are shared, the others are new
            # tensors for as long as the bundle lives.
            adapters = adapter_state(self.ema.model if ema else self.trained_module())
            state = {k: v.float() if v.is_floating_point() else v
                     for k, v in self.lora.merged_state(self.model.dit.state_dict(), adapters).items()}
            with torch.device("meta"):
                dit = DiT(self.model.dit.in_channels, self.model.text.dim, self.model.dit.args)
            dit.load_state_dict(state, assign=True)
            return ModelBundle(self.cfg, self.model.vae, self.model.text, dit.eval().requires_grad_(False),
                               "ema" if ema else "raw").eval()
        if not self.sharded:  # share the weights: nothing is copied
            parts = self.ema.model if ema else self.model.trainable()
            text = parts["text"] if "text" in parts else self.model.text
            return ModelBundle(self.cfg, self.model.vae, text, parts["dit"], "ema" if ema else "raw").eval()
        # The sharded weights run only with every rank: rank 0 samples from the gathered copy.
        assert ema and self._gathered_ema is not None, "a sharded run samples its EMA after gather_for_sampling()"
        state = self._gathered_ema
        parts = {name: {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
                 for name in ("dit", "text")}
        frozen_text = None if self.model.text.trainable else self.model.text
        with torch.random.fork_rng(devices=[]):  # a rebuilt word encoder's init must not move the training RNG
            bundle = ModelBundle.assemble(self.cfg, parts, vae=self.model.vae, text=frozen_text, where="gathered EMA")
        return bundle.to(self.device)
