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
from sora.config.overrides import one_line_override_errors
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
    """The data a run reads, before anything is built or read for long: the built-in dataset built if asked for,
    every `auto` path resolved and every path checked (sora/data/data_args.py). The resolved paths replace
    cfg.data's, so that checkpoints record what the run read."""
    from sora.data.data_args import latent_shards, resolve_data_paths
    from sora.data.stream import expand_shards

    data = resolve_data_paths(OmegaConf.to_object(cfg.data))
    cfg.data = data
    if cfg.task.kind == "dit" and cfg.dit.init_from:  # a released Wan2.1's folder decides the DiT's architecture
        from sora.config.checks import resolve_init_from

        resolve_init_from(cfg)
    if data.latent_cache:
        log.info("data: %d latent-cache shard(s) in %s", len(expand_shards(latent_shards(data))), data.latent_cache)
    else:
        log.info("data: %d shard(s) from %s", len(expand_shards(data.shards)), data.shards)


def make_strategy(cfg):
    """Lightning's strategy for train.strategy (auto / ddp / fsdp); see docs/SCALING.md."""
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


def make_trainer(cfg, run_dir: Path, callbacks: list):
    """Lightning's Trainer for train.*; its own refusals of accelerator, devices, precision or strategy in one line."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from sora.devices import default_precision
    from sora.errors import SoraError
    from sora.training.resilience import AtomicCheckpointIO

    t = cfg.train
    try:
        return L.Trainer(
            strategy=make_strategy(cfg), num_nodes=t.num_nodes, max_steps=t.max_steps,
            max_time={"minutes": t.max_minutes} if t.max_minutes else None,
            accelerator=t.accelerator, devices=t.devices, precision=default_precision(t.precision, t.accelerator),
            gradient_clip_val=cfg.optim.grad_clip or None, log_every_n_steps=t.log_every_n_steps,
            logger=make_logger(cfg, run_dir), callbacks=callbacks, plugins=[AtomicCheckpointIO()],
            default_root_dir=run_dir, enable_model_summary=False, num_sanity_val_steps=0,
            enable_progress_bar=False,  # Progress reports against the nearer limit, steps or minutes
        )
    except (ValueError, ModuleNotFoundError, MisconfigurationException) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SoraError(f"train.accelerator={t.accelerator}, train.devices={t.devices}, "
                        f"train.precision={t.precision}, train.strategy={t.strategy.value}: "
                        f"Lightning refused them: {first_line}") from None


def run_callbacks(cfg, task, run_dir: Path, buckets) -> list:
    """Every run's callbacks (checkpoints, progress, data report, the profile), then the task's own."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from sora.training.callbacks import DataReport, Profile
    from sora.training.progress import Progress
    from sora.training.resilience import Preemption

    t, ckpt_dir = cfg.train, run_dir / "checkpoints"
    # Keep the newest keep_last_n step checkpoints (monitor the step, keep the largest) besides last.ckpt.
    # enable_version_counter=False: a last.ckpt this callback did not write (the preemption save, or a checkpoint
    # copied in to start from) is overwritten, not sidestepped into last-v1.ckpt while the resume still reads it.
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:07d}", auto_insert_metric_name=False,
                                 every_n_train_steps=t.checkpoint_every_n_steps, save_top_k=t.keep_last_n,
                                 monitor="step", mode="max", save_last=True, enable_version_counter=False),
                 LearningRateMonitor("step"), DataReport(), Preemption(ckpt_dir / "last.ckpt"),
                 Progress(t.max_minutes, t.progress_every_s)]
    if t.profile_steps > 0:  # a window from one step's start to a later one's: every callback's work inside
        callbacks.append(Profile(run_dir / "profile", t.profile_start_step, t.profile_steps))
    return callbacks + task.callbacks(run_dir, buckets)


def train(cfg, run_dir: Path) -> dict:
    import lightning

    from sora.config import check_train_config
    from sora.data.buckets import BucketSet
    from sora.training import TASKS
    from sora.training.datamodule import ClipDataModule
    from sora.training.resilience import (
        NonFiniteError,
        check_resume_fits,
        find_resume_checkpoint,
        run_record,
    )
    from sora.training.validation import Validation

    quiet_libraries()
    check_train_config(cfg)  # keys, ranges and settings that must agree: a bad value fails here, naming its key
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    ckpt_dir, last = run_dir / "checkpoints", run_dir / "checkpoints" / "last.ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    prepare_data(cfg)  # every path the run reads, resolved and checked
    lightning.seed_everything(cfg.train.seed, workers=True, verbose=False)

    task = TASKS[cfg.task.kind.value].from_config(cfg)  # buckets checked against the VAE and the data first
    log.info(task.describe())
    resume = find_resume_checkpoint(ckpt_dir)
    if resume:  # before config.yaml is rewritten: a run resumed with other settings keeps its record
        check_resume_fits(resume, task, cfg)
    OmegaConf.save(cfg, ckpt_dir / "config.yaml", resolve=True)  # beside the checkpoints it describes
    buckets = BucketSet.from_config(cfg.data, task.geometry)  # per-bucket batch sizes from the token budget
    if cfg.train.dry_run:
        from sora.training.dry_run import dry_run

        report = dry_run(cfg, task.model, buckets)
        (run_dir / "dry_run.json").write_text(json.dumps(report, indent=1))
        log.info("dry run: nothing trained; the report is in %s", run_dir / "dry_run.json")
        return {"dry_run": report}
    task.run_record = run_record()
    trainer = make_trainer(cfg, run_dir, run_callbacks(cfg, task, run_dir, buckets))
    if trainer.is_global_zero:
        (run_dir / "run.json").write_text(json.dumps(task.run_record, indent=1))  # commit, versions, command, host
    if resume:
        log.info("resuming from %s", resume)
    task.check_before_training()
    datamodule = ClipDataModule(cfg.data, cfg.train.seed, buckets, task.sequence_parallel_size)
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except NonFiniteError as e:
        trainer.save_checkpoint(last, weights_only=False)
        raise NonFiniteError(f"{e}. Checkpoint of the last good weights: {last}") from None
    preempted = getattr(trainer, "sora_preempted", None)
    if preempted:
        log.warning("stopped by %s at step %d; rerun the same command to resume", preempted, trainer.global_step)
        return {"steps": trainer.global_step, "checkpoint": str(last), "preempted": preempted}
    trainer.save_checkpoint(last, weights_only=False)  # also when max_minutes stopped the run between checkpoints
    log.info("trained %d steps; checkpoint %s", trainer.global_step, last)

    results = {"steps": trainer.global_step, "checkpoint": str(last), "skipped_samples": dict(datamodule.skipped)}
    if 0 < trainer.global_step < cfg.train.max_steps:  # train.max_minutes ended it first: say how far short
        results["stopped_by"] = f"train.max_minutes={cfg.train.max_minutes:g}"
        log.warning("train.max_minutes=%g stopped the run at step %d of train.max_steps=%d (%.0f%% of the steps "
                    "asked for): its scores are those of a shorter run", cfg.train.max_minutes, trainer.global_step,
                    cfg.train.max_steps, 100 * trainer.global_step / cfg.train.max_steps)
    validation = next((c for c in trainer.callbacks if isinstance(c, Validation)), None)
    if validation is not None and validation.history:  # the last evaluation is the final weights' (on_train_end)
        results["val_loss"], results["val"] = validation.history[-1]["loss"], validation.history[-1]
    task.prepare_final()
    if trainer.is_global_zero:
        if cfg.train.final_samples:
            t0 = time.time()
            results.update(task.final_results(run_dir))
            results["eval_seconds"] = round(time.time() - t0, 1)
            log.info("samples in %s", run_dir / "samples" / "final")
        # Written only when a run finishes (not when preempted): its presence says the run is complete.
        (run_dir / "results.json").write_text(json.dumps(results, indent=1))
        print(json.dumps(results, indent=1), flush=True)
    return results


@one_line_override_errors(Path(__file__).parent / "configs", "train")
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
