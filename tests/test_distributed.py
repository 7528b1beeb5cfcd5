"""Two processes on CPU (gloo): DDP gradients agree and ranks see different samples; Ulysses sequence-parallel
attention gives the single-process output and gradients; train.py runs DDP, and FSDP with DDP's losses."""

import gc
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import (
    compose_config,
    logged_losses,
    run_entry,
    sample_in_process,
    shrunk_overrides,
    train_in_process,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _ddp_worker(rank, world, port, shapes_dir):
    from torch.nn.parallel import DistributedDataParallel as DDP

    from sora.data.buckets import BucketSet
    from sora.data.stream import ClipStream, expand_shards, strip_bookkeeping
    from sora.inference.bundle import ModelBundle

    init(rank, world, port)
    try:
        overrides = [o for o in shrunk_overrides(shapes_dir, "/tmp/unused") if not o.startswith("hydra.")]
        cfg = compose_config("train", overrides)
        torch.manual_seed(0)
        bundle = ModelBundle.build(cfg)
        stream = ClipStream(expand_shards(cfg.data.shards), cfg.data, BucketSet.from_config(cfg.data), seed=0,
                            rank=rank, world_size=world)
        batch, _, _ = strip_bookkeeping(next(iter(stream)))
        dit = DDP(bundle.dit)
        torch.manual_seed(rank)  # different noise per rank, as in training
        bundle.objective.loss(dit, batch["video"], bundle.encode_text(batch["caption"])).backward()
        grads = torch.cat([p.grad.flatten() for p in bundle.dit.parameters() if p.grad is not None])
        all_grads = [torch.empty_like(grads) for _ in range(world)]
        dist.all_gather(all_grads, grads)
        assert grads.abs().sum() > 0
        torch.testing.assert_close(all_grads[0], all_grads[1])  # DDP averaged them
        captions = [None] * world
        dist.all_gather_object(captions, batch["caption"])
        assert captions[0] != captions[1]  # each rank reads its own shards
        # Free DDP's reducer while its process group lives: freed after it, gloo's destructor can deadlock
        # joining a thread that waits for the GIL (seen here about one run in three).
        del dit
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_agree_and_ranks_see_different_samples(shapes_dir):
    mp.spawn(_ddp_worker, args=(2, free_port(), shapes_dir), nprocs=2)


def _ulysses_worker(rank, world, port):
    from sora.distributed.sequence import heads_to_seq, parallelize_sequence, seq_to_heads, shard_tokens
    from sora.models.attention import attention
    from sora.models.conditioning import Conditioning
    from sora.models.dit import DiT, DiTArgs

    init(rank, world, port)
    try:
        group = dist.group.WORLD
        # The attention primitive: sharded q, k, v -> the full-sequence attention's shard.
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, 4, 12, 8, generator=g) for _ in range(3))  # b h n d, the same on both ranks
        full = attention(q, k, v)
        local = heads_to_seq(attention(*(seq_to_heads(shard_tokens(x, group, dim=2), group) for x in (q, k, v))), group)
        torch.testing.assert_close(local, shard_tokens(full, group, dim=2), atol=1e-6, rtol=1e-6)

        # The whole DiT: outputs equal, and the rank-summed gradients / P equal the single-process ones.
        torch.manual_seed(0)
        model = DiT(3, 16, DiTArgs(hidden_size=32, depth=2, num_heads=4, patch_size=[1, 2, 2]))
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.05)
        x, t = torch.randn(2, 3, 2, 8, 8, generator=g), torch.rand(2, generator=g)
        ctx, mask = torch.randn(2, 5, 16, generator=g), torch.ones(2, 5, dtype=torch.bool)
        mask[0, 3:] = False
        ref = model(x, t, Conditioning(ctx, mask))
        ref.square().mean().backward()
        ref_grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        parallelize_sequence(model, group)
        out = model(x, t, Conditioning(ctx, mask))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        out.square().mean().backward()
        for p, r in zip(model.parameters(), ref_grads):
            g_sum = p.grad.clone()
            dist.all_reduce(g_sum)
            torch.testing.assert_close(g_sum / world, r, atol=1e-5, rtol=1e-4)
    finally:
        dist.destroy_process_group()


def test_sequence_parallel_equals_single_process():
    mp.spawn(_ulysses_worker, args=(2, free_port()), nprocs=2)


# 4 steps on 2 CPU processes whose losses can be compared step by step (a constant LR after 2 warm-up steps).
TWO_PROCESS_RUN = ["train.accelerator=cpu", "optim.schedule=constant", "optim.warmup_steps=2", "logger.wandb=disabled",
                   "train.log_every_n_steps=1", "train.checkpoint_every_n_steps=2", "train.sample_every_n_steps=2",
                   "train.final_samples=false"]


def assert_trained_alike(reference, losses: dict, run) -> None:
    """Every per-step loss within 1e-4 of the reference run's, and the same final weights (EMA included)."""
    want = logged_losses(reference)
    assert sorted(want) == sorted(losses) == [0, 1, 2, 3]
    for step in want:
        assert abs(losses[step] - want[step]) <= 1e-4 * abs(want[step]), (step, losses[step], want[step])
    a = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert set(a) == set(b)
    for name, tensor in a.items():  # whole tensors with the reference's names, even from a sharded run
        torch.testing.assert_close(b[name], tensor, atol=1e-4, rtol=1e-4, msg=name)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, shapes_dir):
    """train.py under DDP on 2 CPU processes: 4 steps, each step's loss logged (the reference for FSDP too)."""
    run = tmp_path_factory.mktemp("ddp")
    proc = run_entry("train.py", *shrunk_overrides(shapes_dir, run), *TWO_PROCESS_RUN, "train.devices=2",
                     "train.strategy=ddp", "train.max_steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_train_py_with_ddp_on_two_cpu_processes(ddp_run):
    run = ddp_run
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert len(ckpt["ClipDataModule"]["positions"]) == 2  # both ranks' readers, for exact resume
    # The validation loss the 2 ranks computed at the end is the one a single process computes for the checkpoint.
    proc = run_entry("-m", "sora.eval", f"ckpt={run}/checkpoints/last.ckpt", f"out={run}/eval.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = json.loads((run / "results.json").read_text())["val"]
    assert json.loads((run / "eval.json").read_text())["val_loss"] == logged["loss"] and logged["num_clips"] == 8


def test_train_py_with_fsdp_trains_as_ddp_does_resumes_and_samples(ddp_run, shapes_dir, tmp_path):
    """FSDP shards weights, gradients, optimizer state and EMA; the arithmetic must be DDP's.

    Checks, on 2 CPU processes: the per-step losses of an FSDP run that stops at step 2 and is resumed to
    step 4 equal an uninterrupted DDP run's; the checkpoint is one file of whole (unsharded) tensors with
    DDP's names and EMA; samples during training and sample.py work from it.
    """
    common = [*TWO_PROCESS_RUN, "train.devices=2"]
    fsdp = tmp_path / "fsdp"
    got = {}
    for steps in (2, 4):  # stop at 2, then rerun the same command with more steps: a resume
        proc = run_entry("train.py", *shrunk_overrides(shapes_dir, fsdp), *common, "train.strategy=fsdp",
                         "dit.checkpoint_fraction=1", f"train.max_steps={steps}")  # checkpointing changes no value
        assert proc.returncode == 0, proc.stderr[-3000:]
        got.update(logged_losses(fsdp))  # a resumed run starts its metrics.csv afresh
    assert "resuming from" in proc.stderr + proc.stdout
    assert_trained_alike(ddp_run, got, fsdp)
    assert len(list((fsdp / "samples" / "step_0000002").glob("*.mp4"))) > 0  # sampled from the gathered EMA
    proc = sample_in_process(f"ckpt={fsdp}/checkpoints/last.ckpt", "prompt=a red circle moving right",
                             f"out={tmp_path}/out.mp4", "steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out.mp4").stat().st_size > 0


SP_RUN = [*TWO_PROCESS_RUN, "train.max_steps=4", "dit.num_heads=2"]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, shapes_dir):
    """The sequence-parallel runs' reference: one process under DDP (DDP re-seeds after the model is built, so a
    plain single-device run draws different noise from the start)."""
    one = tmp_path_factory.mktemp("one")
    proc = run_entry("train.py", *shrunk_overrides(shapes_dir, one), *SP_RUN, "train.devices=1", "train.strategy=ddp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return one


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_train_py_with_sequence_parallel_trains_as_one_process_does(one_process_run, shapes_dir, tmp_path, strategy):
    """2 processes, one sequence-parallel group: each clip's tokens split over both, and every step's loss is
    a single process's (same batches, same noise, the same update), under DDP and under FSDP."""
    sp = tmp_path / "sp"
    proc = run_entry("train.py", *shrunk_overrides(shapes_dir, sp), *SP_RUN, "train.devices=2",
                     f"train.strategy={strategy}", "train.sequence_parallel_size=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_trained_alike(one_process_run, logged_losses(sp), sp)


def test_sequence_parallel_settings_that_cannot_split_fail_at_start(shapes_dir, tmp_path):
    proc = train_in_process(*shrunk_overrides(shapes_dir, tmp_path), "train.accelerator=cpu", "train.devices=1",
                            "train.sequence_parallel_size=2", "dit.num_heads=1", "dit.hidden_size=32")
    assert proc.returncode != 0
    assert "sequence_parallel_size=2 must divide dit.num_heads=1" in proc.stderr and "Traceback" not in proc.stderr


def test_fsdp_for_the_vae_task_is_a_clear_error(shapes_dir, tmp_path):
    proc = train_in_process(*shrunk_overrides(shapes_dir, tmp_path), "task=vae", "vae=causal3d",
                            "train.accelerator=cpu", "train.devices=1", "train.strategy=fsdp")
    assert proc.returncode != 0
    assert "task=vae trains with train.strategy=ddp or auto" in proc.stderr and "Traceback" not in proc.stderr
