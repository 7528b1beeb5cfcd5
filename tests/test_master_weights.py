"""train.param_dtype=bf16: bf16 block linears, fp32 master weights in AdamW, in checkpoints and on resume."""

import io

import pytest
import torch
import torch.nn as nn

from sora.errors import SoraError
from sora.models.dit import DiT, DiTArgs
from sora.training.master_weights import MasterWeightAdamW, lower_block_linears
from tests.conftest import logged_losses, shrunk_overrides, train_in_process
from tests.test_resilience import EXACT

BF16 = ["train.param_dtype=bf16", "train.precision=bf16-mixed"]


def ones_linear() -> nn.Linear:
    lin = nn.Linear(4, 4).to(torch.bfloat16)
    nn.init.ones_(lin.weight), nn.init.ones_(lin.bias)
    return lin


def test_updates_below_bf16_spacing_accumulate_in_the_masters():
    """100 steps of 1e-4 move a weight of 1.0 to 0.99: plain AdamW on bf16 weights rounds every step away."""
    ours, plain = ones_linear(), ones_linear()
    opt = MasterWeightAdamW(ours.parameters(), lr=1e-4, weight_decay=0.0)
    ref = torch.optim.AdamW(plain.parameters(), lr=1e-4, weight_decay=0.0)
    for _ in range(100):
        for model, o in ((ours, opt), (plain, ref)):
            for p in model.parameters():
                p.grad = torch.ones_like(p)  # Adam's step is then lr: the moments' ratio is 1
            o.step()
            o.zero_grad()
    assert torch.equal(plain.weight, torch.ones_like(plain.weight))  # 1e-4 < half of bf16's spacing below 1.0
    masters = opt.full_precision()
    assert all(m.dtype == torch.float32 for m in masters)
    torch.testing.assert_close(masters[0], torch.full((4, 4), 0.99), atol=1e-5, rtol=0)
    assert torch.equal(ours.weight, masters[0].to(torch.bfloat16))  # the module holds the rounded master
    assert all(p.grad is None for p in ours.parameters()) and all(m.grad is None for m in masters)


def test_a_dropped_gradient_leaves_its_master_and_fp32_parameters_are_their_own_master():
    lin, norm = ones_linear(), nn.LayerNorm(4)
    opt = MasterWeightAdamW([*lin.parameters(), *norm.parameters()], lr=0.1)
    assert opt.masters[2] is norm.weight and opt.masters[0] is not lin.weight
    lin.weight.grad, lin.bias.grad = None, torch.ones(4, dtype=torch.bfloat16)  # the non-finite guard dropped one
    norm.weight.grad = torch.ones(4)
    opt.step()
    assert torch.equal(opt.masters[0], torch.ones(4, 4)) and not torch.equal(opt.masters[1], torch.ones(4))
    assert not torch.equal(norm.weight, torch.ones(4))


def test_the_state_dict_carries_the_masters_through_a_weights_only_load():
    lin = ones_linear()
    opt = MasterWeightAdamW(lin.parameters(), lr=1e-4)
    for _ in range(3):
        lin.weight.grad, lin.bias.grad = torch.ones_like(lin.weight), torch.ones_like(lin.bias)
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)

    other = ones_linear()
    nn.init.zeros_(other.weight)  # a fresh module: the masters, not its weights, are the truth
    fresh = MasterWeightAdamW(other.parameters(), lr=1e-4)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.masters, opt.masters))
    assert torch.equal(other.weight, opt.masters[0].to(torch.bfloat16))
    assert fresh.state[fresh.masters[0]]["exp_avg"].dtype == torch.float32

    state.pop("master_weights")  # an fp32 run's checkpoint: the restored module weights become the masters
    fresh.load_state_dict(state)
    assert torch.equal(fresh.masters[0], other.weight.float())

    mismatch = MasterWeightAdamW([*ones_linear().parameters(), nn.Parameter(torch.ones(2, dtype=torch.bfloat16))],
                                 lr=1e-4)
    with pytest.raises(SoraError, match="train.param_dtype"):
        mismatch.load_state_dict({**opt.state_dict(), "param_groups": mismatch.state_dict()["param_groups"]})


def test_only_the_blocks_linears_are_lowered():
    dit = DiT(3, 16, DiTArgs(hidden_size=32, depth=2, num_heads=2, patch_size=[1, 2, 2]))
    assert lower_block_linears(dit, torch.bfloat16) == 2 * 8  # qkv, proj, cross q/kv/proj, two MLP layers, adaLN
    low = {name for name, p in dit.named_parameters() if p.dtype == torch.bfloat16}
    assert low and all(name.startswith("blocks.") for name in low)
    assert dit.final.linear.weight.dtype == torch.float32 and dit.x_embed.weight.dtype == torch.float32


def test_train_py_with_bf16_params_resumes_to_the_uninterrupted_run(shapes_dir, tmp_path):
    """Checkpoints hold bf16 block linears, fp32 masters and an fp32 EMA; resuming restores the masters exactly."""
    run, straight = tmp_path / "resumed", tmp_path / "straight"
    first = train_in_process(*shrunk_overrides(shapes_dir, run), *EXACT, *BF16, "train.max_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    weights, opt = ckpt["state_dict"], ckpt["optimizer_states"][0]
    low = [k for k, v in weights.items() if v.dtype == torch.bfloat16]
    assert low and all(k.startswith("model.dit.blocks.") for k in low)
    assert len(opt["master_weights"]) == len(low)
    assert all(m.dtype == torch.float32 for m in opt["master_weights"].values())
    assert all(v.dtype == torch.float32 for k, v in weights.items() if k.startswith("ema.") and v.is_floating_point())

    resumed = train_in_process(*shrunk_overrides(shapes_dir, run), *EXACT, *BF16, "train.max_steps=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = train_in_process(*shrunk_overrides(shapes_dir, straight), *EXACT, *BF16, "train.max_steps=4")
    assert whole.returncode == 0, whole.stderr[-3000:]
    got, want = logged_losses(run), logged_losses(straight)
    assert sorted(want) == [0, 1, 2, 3]
    for step in (2, 3):  # after the resume: the same masters, moments, data and noise
        assert got[step] == pytest.approx(want[step], rel=1e-5), step


@pytest.mark.parametrize("overrides, message", [
    (["train.param_dtype=bf16", "train.strategy=fsdp", "train.precision=bf16-mixed"],
     "does not combine with train.strategy=fsdp"),
    (["train.param_dtype=bf16", "train.precision=32-true"], "needs train.precision=bf16-mixed"),
    (["train.param_dtype=fp16"], "train.param_dtype must be one of"),
])
def test_bad_param_dtype_settings_fail_in_one_line(overrides, message, tmp_path):
    done = train_in_process(f"hydra.run.dir={tmp_path}", *overrides)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
