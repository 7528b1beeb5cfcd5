"""LoRA through peft (sora/models/lora.py, sora/training/lora.py): the wrapped DiT starts as its base, only the
adapter trains, checkpoints hold the adapter and resume exactly, files round-trip and merge, bad input is one line."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from sora.errors import SoraError
from sora.models.conditioning import Conditioning
from sora.models.dit import DiT, DiTArgs
from sora.models.lora import (
    LoRAArgs,
    adapter_modules,
    add_lora,
    load_lora,
    merged_dit_state,
    read_lora,
    save_lora,
)
from tests.conftest import compose_config, run_entry, sample_in_process, shrunk_overrides, train_in_process


def tiny_dit(seed: int = 0, **kw) -> DiT:
    """A tiny DiT with every parameter random (zero-initialised gates and output would hide an adapter)."""
    torch.manual_seed(seed)
    dit = DiT(3, 16, DiTArgs(hidden_size=32, depth=2, num_heads=2, patch_size=[1, 2, 2], **kw))
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.2)
    return dit.eval()


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x, t = torch.randn(2, 3, 2, 8, 8, generator=g), torch.rand(2, generator=g)  # b c t h w
    return x, t, Conditioning(torch.randn(2, 5, 16, generator=g), torch.ones(2, 5, dtype=torch.bool))


def randomize_adapters(dit: DiT, seed: int = 2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_modules(dit).parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


# ---------------------------------------------------------------------------------------------------------------
# The wrapped model
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [{}, {"attention_layout": "factorized"}, {"text_conditioning": "joint"}])
def test_with_b_at_zero_the_output_is_the_base_models_and_only_adapters_train(layout):
    x, t, cond = inputs()
    dit = tiny_dit(**layout)
    base = dit(x, t, cond)
    names = add_lora(dit, LoRAArgs(rank=4, alpha=8))
    # the default target: every attention projection and both FFN linears of every block, nothing else
    assert names and all(n.startswith("blocks.") and "adaLN" not in n for n in names)
    assert {n.split(".")[2] for n in names} >= {"attn", "mlp"}
    assert all(float(layer["lora_B"].weight.detach().abs().sum()) == 0 for layer in adapter_modules(dit).values())
    torch.testing.assert_close(dit(x, t, cond), base, atol=1e-5, rtol=1e-5)  # bit for bit on AVX-512, not AVX2
    trained = {n for n, p in dit.named_parameters() if p.requires_grad}
    assert trained == {n for n, _ in dit.named_parameters() if ".lora_A." in n or ".lora_B." in n}


def test_a_training_step_of_the_task_changes_only_adapter_tensors(shapes_dir, tmp_path):
    from sora.training.dit_task import DiTTask

    cfg = compose_config("train", [o for o in shrunk_overrides(shapes_dir, tmp_path) if not o.startswith("hydra.")]
                         + ["train.lora.rank=4", "train.lora.alpha=4"])
    torch.manual_seed(0)
    task = DiTTask.from_config(cfg)
    dit = task.model.dit
    with torch.no_grad():  # a base whose gates are open, so every adapter gets a gradient
        for name, p in dit.named_parameters():
            if ".lora_" not in name:
                p.normal_(0, 0.2)
    before = {k: v.clone() for k, v in {**task.model.state_dict(), **task.ema.state_dict()}.items()}
    trained = list(task.trained_parameters())
    assert {id(p) for p in trained} == {id(p) for p in adapter_modules(dit).parameters()}
    assert not task.model.text.trainable and not any(p.requires_grad for p in task.model.text.parameters())
    opt = torch.optim.AdamW(trained, lr=1e-2)
    for _ in range(2):  # two steps: B moves at the first, A (whose gradient is B^T ...) at the second
        x = torch.randn(2, 3, 4, 16, 16)
        task.model.objective.loss(dit, x, task.model.encode_text(["a", "b"])).backward()
        opt.step()
        opt.zero_grad()
        task.ema.update(task.trained_module(), 1)
    after = {**task.model.state_dict(), **task.ema.state_dict()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapters = {k for k in before if ".lora_A." in k or ".lora_B." in k}
    assert changed == adapters and len(adapters) == 4 * 7  # raw and EMA, A and B, 7 linears
    assert len(list(task.ema.parameters())) == 2 * 7  # the EMA holds the adapter alone, not the base


def test_our_lora_file_round_trips_and_merged_weights_give_the_adapters_output(tmp_path):
    x, t, cond = inputs()
    dit = tiny_dit()
    add_lora(dit, LoRAArgs(rank=4, alpha=6))
    randomize_adapters(dit)
    out = dit(x, t, cond)
    assert not torch.allclose(out, tiny_dit()(x, t, cond), atol=1e-3)  # the adapter does change the output
    save_lora(dit, str(tmp_path / "a.safetensors"))

    tensors, rank, alpha = read_lora(str(tmp_path / "a.safetensors"))
    assert (rank, alpha) == (4, 6.0)
    assert tensors["blocks.0.attn.qkv.lora_A.weight"].shape == (4, 32)  # (rank, in)
    assert tensors["blocks.0.attn.qkv.lora_B.weight"].shape == (96, 4)  # (out, rank)
    assert all(v.dtype == torch.float32 for v in tensors.values())
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "sora-lora" and meta["target"].split(",")[0] == "blocks.*.attn.*"

    other = tiny_dit()
    add_lora(other, LoRAArgs(rank=4, alpha=6))
    load_lora(other, str(tmp_path / "a.safetensors"))
    torch.testing.assert_close(other(x, t, cond), out, atol=0, rtol=0)

    plain = tiny_dit()
    plain.load_state_dict(merged_dit_state(dit))
    torch.testing.assert_close(plain(x, t, cond), out, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Runs: checkpoints, resume, files, sampling and export
# ---------------------------------------------------------------------------------------------------------------

# The quick start's base is DiT-initialised (zero gates, zero output layer): only adapters on adaLN and the output
# layer get a gradient at the first step, and through them the blocks' adapters later. Targeting every linear of
# the blocks and the output layer makes the runs below train every kind of adapter.
LORA_RUN = ["train.lora.rank=4", "train.lora.alpha=8", "train.lora.target=[blocks.*,final.linear]",
            "optim.schedule=constant", "optim.warmup_steps=2", "optim.lr=0.01", "train.sample_every_n_steps=0",
            "train.final_samples=false", "train.log_every_n_steps=1", "train.checkpoint_every_n_steps=2"]


@pytest.fixture(scope="module")
def lora_run(shapes_dir, tmp_path_factory):
    """A 4-step LoRA run, uninterrupted."""
    run = tmp_path_factory.mktemp("lora")
    proc = train_in_process(*shrunk_overrides(shapes_dir, run), *LORA_RUN, "train.max_steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_a_lora_checkpoint_holds_the_adapter_and_resumes_exactly(lora_run, shapes_dir, tmp_path):
    from tests.conftest import logged_losses

    ckpt = torch.load(lora_run / "checkpoints" / "last.ckpt", weights_only=True)
    dit_keys = [k for k in ckpt["state_dict"] if k.startswith("model.dit.")]
    assert dit_keys and all(".lora_A." in k or ".lora_B." in k for k in dit_keys)  # no frozen base
    assert {k.split(".")[0] for k in ckpt["state_dict"]} <= {"model", "ema"}
    assert not any(k.startswith("model.text.") for k in ckpt["state_dict"])  # frozen under LoRA
    n_adapter = len(dit_keys)
    assert len(ckpt["optimizer_states"][0]["state"]) == n_adapter  # AdamW state of the adapter alone
    assert len([k for k in ckpt["state_dict"] if k.startswith("ema.")]) == n_adapter

    run = tmp_path / "resumed"
    for steps in (2, 4):  # stop at 2, then the same command with more steps: a resume
        proc = train_in_process(*shrunk_overrides(shapes_dir, run), *LORA_RUN, f"train.max_steps={steps}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stderr
    want, got = logged_losses(lora_run), logged_losses(run)
    assert sorted(got) == [2, 3] and all(got[s] == want[s] for s in got)
    for name in ("lora.safetensors", "lora_ema.safetensors"):
        a, _, _ = read_lora(str(lora_run / name))
        b, _, _ = read_lora(str(run / name))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name
        assert any(float(v.abs().sum()) > 0 for k, v in a.items() if "lora_B" in k and k.startswith("blocks."))
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(final[k], v) for k, v in ckpt["state_dict"].items() if not k.startswith("model.vae"))


def test_lora_with_bf16_weights_keeps_fp32_masters_of_the_adapter(shapes_dir, tmp_path):
    """train.param_dtype=bf16: the blocks' linears, adapters included, in bf16, AdamW's fp32 masters of the adapter
    alone in the checkpoint; the validation loss runs on the merged DiT in fp32, as on the EMA copy."""
    proc = train_in_process(*shrunk_overrides(shapes_dir, tmp_path), *LORA_RUN, "train.max_steps=2",
                            "train.param_dtype=bf16", "train.precision=bf16-mixed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    state = ckpt["state_dict"]
    block_adapters = [k for k in state if k.startswith("model.dit.blocks.")]
    assert block_adapters and all(state[k].dtype == torch.bfloat16 for k in block_adapters)
    masters = ckpt["optimizer_states"][0]["master_weights"]
    assert len(masters) == len(block_adapters) and all(v.dtype == torch.float32 for v in masters.values())
    assert state["model.dit.final.linear.lora_A.default.weight"].dtype == torch.float32  # outside the blocks
    assert json.loads((tmp_path / "val_loss.jsonl").read_text().splitlines()[-1])["step"] == 2


def test_export_and_sample_with_a_lora(lora_run, tmp_path):
    """The run's checkpoint exports its base with the EMA adapter merged; a base export with --merge-lora and the
    run's lora_ema.safetensors gives the same weights; sample.py lora=FILE samples with it."""
    from sora.inference.bundle import ModelBundle
    from sora.inference.export import export

    ckpt = lora_run / "checkpoints" / "last.ckpt"
    export(str(ckpt), str(tmp_path / "merged.safetensors"))
    merged = ModelBundle.from_checkpoint(str(tmp_path / "merged.safetensors"))
    cfg = OmegaConf.create(torch.load(ckpt, weights_only=True)["sora_config"])
    cfg.train.lora.rank = 0  # the same run's base, without the adapter
    torch.manual_seed(cfg.train.seed)
    from sora.inference.bundle import vae_from_config

    vae, cfg = vae_from_config(cfg)
    ModelBundle.build(cfg, vae=vae).save(str(tmp_path / "base.safetensors"))
    proc = run_entry("-m", "sora.inference.export", str(tmp_path / "base.safetensors"),
                     str(tmp_path / "again.safetensors"), "--merge-lora", str(lora_run / "lora_ema.safetensors"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["tensors"] > 0
    again = ModelBundle.from_checkpoint(str(tmp_path / "again.safetensors"))
    base = ModelBundle.from_checkpoint(str(tmp_path / "base.safetensors"))
    a, b, c = merged.dit.state_dict(), again.dit.state_dict(), base.dit.state_dict()
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6, msg=k)
    assert not torch.equal(a["final.linear.weight"], c["final.linear.weight"])  # the adapter is in

    outs = []
    for name, extra in (("lora", [f"lora={lora_run / 'lora_ema.safetensors'}"]), ("merged", [])):
        ckpt_arg = tmp_path / ("base.safetensors" if extra else "merged.safetensors")
        proc = sample_in_process(f"ckpt={ckpt_arg}", "prompt=a red circle moving right", f"out={tmp_path}/{name}.gif",
                                 "steps=2", "provenance.c2pa=false", "provenance.watermark=false", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append((tmp_path / f"{name}.gif").read_bytes())
    assert outs[0] == outs[1]


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the key or file
# ---------------------------------------------------------------------------------------------------------------


def test_a_lora_file_of_another_rank_or_target_is_refused_naming_the_key(tmp_path):
    dit = tiny_dit()
    add_lora(dit, LoRAArgs(rank=4, alpha=4))
    save_lora(dit, str(tmp_path / "r4.safetensors"))
    for args, message in ((LoRAArgs(rank=8, alpha=4), "has rank 4; train.lora.rank=8: set train.lora.rank=4"),
                          (LoRAArgs(rank=4, alpha=2), "has alpha 4; train.lora.alpha=2"),
                          (LoRAArgs(rank=4, alpha=4, target=["blocks.*.mlp.*"]),
                           "adapts blocks.0.attn.proj, which train.lora.target does not")):
        other = tiny_dit()
        add_lora(other, args)
        with pytest.raises(SoraError, match=message):
            load_lora(other, str(tmp_path / "r4.safetensors"))
    small = tiny_dit()
    add_lora(small, LoRAArgs(rank=4, alpha=4, target=["blocks.*.mlp.*"]))
    save_lora(small, str(tmp_path / "mlp.safetensors"))
    with pytest.raises(SoraError, match="has no adapter for blocks.0.attn.proj, which train.lora.target names"):
        load_lora(dit, str(tmp_path / "mlp.safetensors"))
    wide = DiT(3, 16, DiTArgs(hidden_size=64, depth=2, num_heads=2, patch_size=[1, 2, 2]))
    add_lora(wide, LoRAArgs(rank=4, alpha=4))
    with pytest.raises(SoraError, match=r"blocks.0.attn.qkv.lora_A.weight is \[4, 32\], the DiT's is \[4, 64\]"):
        load_lora(wide, str(tmp_path / "r4.safetensors"))
    (tmp_path / "not.safetensors").write_bytes(b"garbage")
    with pytest.raises(SoraError, match="not.safetensors' is not a readable safetensors file"):
        load_lora(dit, str(tmp_path / "not.safetensors"))


def test_lora_settings_that_cannot_run_fail_at_start_in_one_line(shapes_dir, tmp_path):
    args = shrunk_overrides(shapes_dir, tmp_path / "run")
    for extra, message in (
            (["train.lora.rank=4", "train.lora.target=[blocks.*.attn.nothing]"],
             "train.lora.target: 'blocks.*.attn.nothing' matches no linear layer of the DiT"),
            (["train.lora.rank=4", "train.fp8=tensorwise"],
             "train.lora.rank=4 does not combine with train.fp8=tensorwise"),
            (["train.lora.rank=4", f"train.lora.init_from={tmp_path}/missing.safetensors"],
             "train.lora.init_from='.*missing.safetensors' is not a file"),
            (["train.lora.rank=-1"], r"train.lora.rank must be >= 0, got -1"),
            (["train.lora.rank=4", "train.lora.alpha=0"], r"train.lora.alpha must be > 0, got 0")):
        proc = train_in_process(*args, *extra)
        assert proc.returncode == 2, (extra, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        import re

        assert re.search(message, proc.stderr), (extra, proc.stderr[-2000:])
    dit = tiny_dit()
    add_lora(dit, LoRAArgs(rank=2, alpha=2))
    save_lora(dit, str(tmp_path / "r2.safetensors"))
    proc = train_in_process(*args, "train.lora.rank=4", f"train.lora.init_from={tmp_path}/r2.safetensors")
    assert proc.returncode == 2 and "has rank 2; train.lora.rank=4" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_two_process_fsdp_lora_run_stopped_and_resumed_equals_an_uninterrupted_one(shapes_dir, tmp_path):
    """2 CPU processes (gloo), train.strategy=fsdp: the frozen base and the adapter sharded together, the EMA adapter
    on its own. A run stopped at step 2 and resumed to 4 logs the uninterrupted run's losses and ends with its
    adapter files, bit for bit. The stopped run samples at the end of each part, from the gathered base with the EMA
    adapter merged (sampling in the middle of the uninterrupted run would move later steps' last bits: on one CPU
    run, 1e-8 in the adapter by step 4, from the kernels' memory layout, not from the weights, which it leaves
    unchanged)."""
    from tests.conftest import logged_losses

    common = [*LORA_RUN, "train.accelerator=cpu", "train.devices=2", "train.strategy=fsdp", "logger.wandb=disabled"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    proc = run_entry("train.py", *shrunk_overrides(shapes_dir, straight), *common, "train.max_steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {}
    for steps in (2, 4):
        proc = run_entry("train.py", *shrunk_overrides(shapes_dir, resumed), *common, f"train.max_steps={steps}",
                         "train.sample_every_n_steps=2")
        assert proc.returncode == 0, proc.stderr[-3000:]
        got.update(logged_losses(resumed))
    assert "resuming from" in proc.stderr + proc.stdout
    want = logged_losses(straight)
    assert sorted(want) == sorted(got) == [0, 1, 2, 3] and all(got[s] == want[s] for s in want), (got, want)
    for name in ("lora.safetensors", "lora_ema.safetensors"):
        a, _, _ = read_lora(str(straight / name))
        b, _, _ = read_lora(str(resumed / name))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(".lora_" in k for k in ckpt if k.startswith("model.dit."))
    for step in (2, 4):
        assert len(list((resumed / "samples" / f"step_{step:07d}").glob("*.mp4"))) > 0

    # DDP: the same arithmetic as FSDP's (each rank a whole replica), to reduction order
    ddp = tmp_path / "ddp"
    proc = run_entry("train.py", *shrunk_overrides(shapes_dir, ddp), *LORA_RUN, "train.accelerator=cpu",
                     "train.devices=2", "train.strategy=ddp", "logger.wandb=disabled", "train.max_steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(abs(logged_losses(ddp)[s] - want[s]) <= 1e-4 * abs(want[s]) for s in want)
    a, _, _ = read_lora(str(straight / "lora_ema.safetensors"))
    b, _, _ = read_lora(str(ddp / "lora_ema.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=1e-4, msg=k)


# ---------------------------------------------------------------------------------------------------------------
# Memory: the dry run under LoRA, and the fine-tuning table
# ---------------------------------------------------------------------------------------------------------------


def test_the_dry_run_counts_the_adapter_as_what_trains(shapes_dir, tmp_path):
    reports = {}
    for name, extra in (("full", []), ("lora", ["train.lora.rank=4"])):
        proc = train_in_process(*shrunk_overrides(shapes_dir, tmp_path / name), "train.dry_run=true", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports[name] = json.loads((tmp_path / name / "dry_run.json").read_text())
    full, lora = reports["full"]["params"], reports["lora"]["params"]
    linears = [(32, 96), (32, 32), (32, 32), (32, 64), (32, 32), (32, 128), (128, 32)]  # attn, cross, mlp
    assert lora["trained"] == sum(4 * (i + o) for i, o in linears)  # rank 4: A (4 x in) and B (out x 4) each
    assert lora["frozen"] == full["trained"] + full["frozen"]  # the whole base (and the word encoder) frozen
    assert reports["lora"]["buckets"][0]["peak_memory_gib"]["state"] < reports["full"]["buckets"][0][
        "peak_memory_gib"]["state"]


def test_the_finetune_memory_table_divides_state_by_gpus_and_checkpointing_cuts_activations():
    from sora.training.dry_run import finetune_memory_table, wan_sized_dit

    dit = wan_sized_dit("Wan2.1-1.3B")
    assert dit.blocks[0].mlp[0].out_features == 8960 and dit.x_embed.in_features == 16 * 4
    rows, table = finetune_memory_table(frames=5, height=64, width=64, lora_rank=16, gpus=(1, 8))
    assert table.count("\n| Wan2.1-") == 8
    by = {(r["model"], r["method"].split()[0], r["gpus"]): r for r in rows}
    for model in ("Wan2.1-1.3B", "Wan2.1-14B"):
        full1, full8, lora1 = by[model, "full", 1], by[model, "full", 8], by[model, "LoRA", 1]
        assert full8["optimizer"] * 2**30 == pytest.approx(full1["params"])  # two fp32 moments, over 8 GPUs
        assert full8["ema"] == pytest.approx(full1["ema"] / 8)
        assert lora1["trained"] < full1["trained"] / 20 and lora1["ema"] < full1["ema"] / 20
        assert full1["activations_ckpt"] < full1["activations"] and full1["peak_ckpt"] < full1["peak"]
