"""Train a text-to-video DiT (task=dit, default) or a video VAE (task=vae), then write sample videos.

    python train.py                                  # CPU quick start on the built-in dataset
    python train.py dit=B vae=causal3d vae.ckpt=...  # anything in configs/ can be switched from here
    python train.py hydra.run.dir=runs/x             # the whole run in runs/x; rerun to resume it
"""

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from sora.config import register_schemas
from sora.errors import exit_on_user_error

log = logging.getLogger("sora.train")
register_schemas()


def make_logger(cfg, run_dir: Path):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    mode = cfg.logger.wandb.value
    if mode == "disabled":
        return CSVLogger(run_dir, name="", version="")
    os.environ.setdefault("WANDB_SILENT", "true")
    group, name = sweep_of(), cfg.logger.name
    if group and not name:  # a sweep's run is named by its overrides
        name = HydraConfig.get().job.override_dirname or run_dir.name
    return WandbLogger(project=cfg.logger.project, name=name, save_dir=str(run_dir), offline=mode == "offline",
                       group=group, config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def sweep_of() -> str | None:
    """The sweep a multirun job belongs to (`python train.py -m ...`: its sweep directory), or None."""
    from hydra.types import RunMode

    hc = HydraConfig.get() if HydraConfig.initialized() else None
    return str(Path(hc.sweep.dir)) if hc is not None and hc.mode == RunMode.MULTIRUN else None


def prepare_data(cfg) -> None:
    """The data a run reads, before anything is built or read for long (issue 27; the lead moves this call to right
    after check_train_config): the built-in dataset built if asked for, every `auto` path resolved and every path
    checked (sora/data/data_args.py). The resolved paths replace cfg.data's, so that checkpoints record what the
    run read."""
    from sora.data.data_args import latent_shards, resolve_data_paths
    from sora.data.stream import expand_shards

    data = resolve_data_paths(OmegaConf.to_object(cfg.data))
    cfg.data = data
    if data.latent_cache:
        log.info("data: %d latent-cache shard(s) in %s", len(expand_shards(latent_shards(data))), data.latent_cache)
    else:
        log.info("data: %d shard(s) from %s", len(expand_shards(data.shards)), data.shards)


def make_strategy(cfg):
    """Lightning's strategy for train.strategy (auto / ddp / fsdp); see README "Scaling out"."""
    if cfg.train.strategy.value == "auto":
        return "auto"
    if cfg.train.strategy.value == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        class FullyShardedStrategy(ModelParallelStrategy):
            """FSDP2 over every rank (no tensor parallelism); checkpoints are single files gathered on rank 0."""

            def setup_environment(self):
                self._data_parallel_size, self._tensor_parallel_size = self.num_nodes * self.num_processes, 1
                super().setup_environment()

        return FullyShardedStrategy(save_distributed_checkpoint=False)
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(find_unused_parameters=False)


def quiet_libraries() -> None:
    """One copy of each log line (Hydra's handlers), and no warnings that are by design here."""
    import lightning  # noqa: F401  (adds its own handlers on import)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The frozen VAE and the EMA copy are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    # config.yaml and run.json sit beside the checkpoints on purpose.
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")


def train(cfg, run_dir: Path) -> dict:
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from sora.config import check_against_vae, check_train_config
    from sora.data.buckets import BucketSet
    from sora.data.stream import make_loader
    from sora.errors import SoraError
    from sora.diffusion.frame_modes import gives_frames
    from sora.eval.end_of_run import probe_modes, probe_prompts, read_prompts, reconstruct
    from sora.inference.bundle import ModelBundle, vae_from_config
    from sora.inference.pipeline import SampleSettings
    from sora.models.flops import num_params
    from sora.models.geometry import LatentGeometry
    from sora.models.vae import build_vae
    from sora.training.callbacks import DataReport, Profile, SampleVideos, Throughput
    from sora.training.progress import Progress
    from sora.training.validation import Validation
    from sora.training.datamodule import ClipDataModule
    from sora.training.dit_task import DiTTask
    from sora.training.resilience import (AtomicCheckpointIO, NonFiniteError, Preemption, find_resume_checkpoint,
                                          run_record)
    from sora.training.vae_task import VAETask

    quiet_libraries()
    check_train_config(cfg)  # keys, ranges and settings that must agree: a bad value fails here, naming its key
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, ckpt_dir / "config.yaml", resolve=True)  # beside the checkpoints it describes
    prepare_data(cfg)
    is_dit = cfg.task.kind.value == "dit"
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)

    # The VAE (trained, from vae.ckpt) decides the frame rule: every bucket is checked against it before the
    # DiT is built.
    if is_dit:
        vae, cfg = vae_from_config(cfg)
        geometry = LatentGeometry.of(vae, cfg.dit.patch_size)
    else:
        with torch.device("meta"):
            geometry = LatentGeometry.of(build_vae(cfg.vae))
    check_against_vae(cfg, geometry)
    if not cfg.train.dry_run:  # [data, issue 27] can the shards fill every bucket? (a dry run counts every clip itself)
        from sora.data.preflight import preflight

        preflight(OmegaConf.to_object(cfg.data))
    module = DiTTask(cfg, ModelBundle.build(cfg, vae=vae)) if is_dit else VAETask(cfg)
    log.info("task=%s  params: %s", cfg.task.kind.value, f"dit {num_params(module.model.dit)}, text "
             f"{num_params(module.model.text)}" if is_dit else f"vae {num_params(module.vae)}")

    if cfg.train.dry_run:
        from sora.training.dry_run import dry_run

        if not is_dit:
            raise SoraError("train.dry_run=true reports on a DiT run (task=dit)")
        report = dry_run(cfg, module.model, BucketSet.from_config(cfg.data, geometry))
        (run_dir / "dry_run.json").write_text(json.dumps(report, indent=1))
        log.info("dry run: nothing trained; the report is in %s", run_dir / "dry_run.json")
        return {"dry_run": report}
    module.run_record = run_record()
    last = ckpt_dir / "last.ckpt"
    # Keep the newest keep_last_n step checkpoints (monitor the step, keep the largest) besides last.ckpt.
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:07d}", auto_insert_metric_name=False,
                                 every_n_train_steps=cfg.train.checkpoint_every_n_steps,
                                 save_top_k=cfg.train.keep_last_n, monitor="step", mode="max", save_last=True),
                 LearningRateMonitor("step"), DataReport(), Preemption(last),
                 Progress(cfg.train.max_minutes, cfg.train.progress_every_s)]
    buckets = BucketSet.from_config(cfg.data, geometry)  # per-bucket batch sizes from the token budget
    validation = None
    if is_dit:
        callbacks.append(Throughput(window=cfg.train.log_every_n_steps))
        if cfg.data.eval_shards:  # the validation loss: every val.every_n_steps and at the end
            validation = Validation(cfg.data, cfg.val, buckets, run_dir / "val_loss.jsonl")
            callbacks.append(validation)
    if cfg.train.profile_steps > 0:  # a window from one step's start to a later one's: every callback's work inside
        callbacks.append(Profile(run_dir / "profile", cfg.train.profile_start_step, cfg.train.profile_steps))
    if is_dit and cfg.train.sample_every_n_steps > 0:
        callbacks.append(SampleVideos(read_prompts(cfg.data.eval_prompts), run_dir / "samples", cfg.train.sample_every_n_steps))
    on_gpu = torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda")
    strategy, logger = make_strategy(cfg), make_logger(cfg, run_dir)
    try:
        trainer = L.Trainer(
            strategy=strategy, num_nodes=cfg.train.num_nodes,
            max_steps=cfg.train.max_steps,
            max_time={"minutes": cfg.train.max_minutes} if cfg.train.max_minutes else None,
            accelerator=cfg.train.accelerator, devices=cfg.train.devices,
            precision=cfg.train.precision or ("bf16-mixed" if on_gpu else "32-true"),
            gradient_clip_val=cfg.optim.grad_clip or None,
            log_every_n_steps=cfg.train.log_every_n_steps,
            logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
            default_root_dir=run_dir, enable_model_summary=False, num_sanity_val_steps=0,
            enable_progress_bar=False,  # Progress reports against the nearer limit, steps or minutes
        )
    except (ValueError, ModuleNotFoundError, MisconfigurationException) as e:  # Lightning's own checks of these keys
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SoraError(f"train.accelerator={cfg.train.accelerator}, train.devices={cfg.train.devices}, "
                        f"train.precision={cfg.train.precision}, train.strategy={cfg.train.strategy.value}: "
                        f"Lightning refused them: {first_line}") from None
    if trainer.is_global_zero:
        (run_dir / "run.json").write_text(json.dumps(module.run_record, indent=1))  # commit, versions, command, host
    resume = find_resume_checkpoint(ckpt_dir)
    if resume:
        log.info("resuming from %s", resume)
    if is_dit and cfg.data.latent_cache:
        from sora.data.latent_cache import check_cache

        check_cache(cfg.data.latent_cache, module.model.vae, module.model.text, gives_frames(cfg.conditioning.modes))
    sp = cfg.train.sequence_parallel_size
    datamodule = ClipDataModule(cfg.data, cfg.train.seed, buckets, sp if is_dit else 1)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except NonFiniteError as e:
        trainer.save_checkpoint(last, weights_only=False)
        raise NonFiniteError(f"{e}. Checkpoint of the last good weights: {last}") from None
    preempted = getattr(trainer, "sora_preempted", None)
    if not preempted:
        trainer.save_checkpoint(last, weights_only=False)  # also when max_minutes stopped the run between checkpoint steps
    log.info("trained %d steps; checkpoint %s", trainer.global_step, last)
    if preempted:
        log.warning("stopped by %s at step %d; rerun the same command to resume", preempted, trainer.global_step)
        return {"steps": trainer.global_step, "checkpoint": str(last), "preempted": preempted}

    results = {"steps": trainer.global_step, "checkpoint": str(last), "skipped_samples": dict(datamodule.skipped)}
    if validation is not None and validation.history:  # the last evaluation is the final weights' (on_train_end)
        final = validation.history[-1]
        results["val_loss"], results["val"] = final["loss"], final
    if is_dit and cfg.train.final_samples:
        module.gather_for_sampling()  # sharded runs: every rank takes part, rank 0 samples
    if trainer.is_global_zero:
        if cfg.train.final_samples:
            t0 = time.time()
            final = run_dir / "samples" / "final"
            if is_dit:
                prompts = {"heldout": cfg.data.eval_prompts, "train": cfg.data.train_prompts}
                bundle = module.sampling_bundle(ema=True)
                results["probe"] = probe_prompts(bundle, prompts, final, cfg.train.samples_per_prompt,
                                                 SampleSettings.of(cfg))
                if gives_frames(cfg.conditioning.modes):  # it learnt to take frames: score each prompting mode
                    results["modes"] = probe_modes(bundle, cfg.data, final / "modes", SampleSettings.of(cfg))
            else:
                eval_data = cfg.data.copy()
                eval_data.shards, eval_data.num_workers = cfg.data.eval_shards or cfg.data.shards, 0
                results.update(reconstruct(module.vae, make_loader(eval_data, seed=1), final, cfg.data.sample_fps,
                                           lpips=module.lpips))
            results["eval_seconds"] = round(time.time() - t0, 1)
            log.info("samples in %s", final)
        # Written only when a run finishes (not when preempted): its presence says the run is complete.
        (run_dir / "results.json").write_text(json.dumps(results, indent=1))
        print(json.dumps(results, indent=1), flush=True)
    return results


@hydra.main(version_base=None, config_path="configs", config_name="train")
@exit_on_user_error
def main(cfg) -> None:
    t0 = time.time()
    try:
        train(cfg, Path(HydraConfig.get().runtime.output_dir))
    finally:
        if "wandb" in sys.modules:  # a sweep runs its jobs in one process: each job's wandb run ends with it
            sys.modules["wandb"].finish()
    log.info("done in %.1f min", (time.time() - t0) / 60)


if __name__ == "__main__":
    main()
