"""train.fp8: torchao's float8 training of the DiT's block linears; without torchao or an FP8 GPU, one line."""

import sys

import pytest
import torch

from sora.config.checks import check_train_config
from sora.errors import SoraError
from sora.models import fp8
from sora.models.dit import DiT, DiTArgs
from tests.conftest import compose_config


def test_an_unknown_recipe_names_the_key():
    with pytest.raises(SoraError, match=r"^train.fp8 must be one of rowwise, tensorwise, got fp4$"):
        check_train_config(compose_config("train", ["train.fp8=fp4"]))


def test_without_torchao_the_key_and_the_extra_are_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setitem(sys.modules, "torchao.float8", None)
    with pytest.raises(SoraError, match=r"^train.fp8=rowwise needs torchao: pip install -e '\.\[fp8\]'$"):
        check_train_config(compose_config("train", ["train.fp8=rowwise"]))
    with pytest.raises(SoraError, match="train.fp8=tensorwise needs torchao"):
        dit = DiT(3, 16, DiTArgs(hidden_size=32, depth=1, num_heads=2, patch_size=[1, 2, 2]))
        fp8.convert_to_fp8(dit, "tensorwise")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_without_a_gpu_the_key_is_named(monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "torchao", types.ModuleType("torchao"))  # installed or not: the GPU is missing
    monkeypatch.setitem(sys.modules, "torchao.float8", types.ModuleType("torchao.float8"))
    with pytest.raises(SoraError,
                       match=r"^train.fp8=tensorwise runs on a CUDA GPU with FP8 tensor cores.*train.fp8=null$"):
        check_train_config(compose_config("train", ["train.fp8=tensorwise"]))
    check_train_config(compose_config("train", ["train.fp8=tensorwise", "train.dry_run=true"]))  # a plan runs anywhere
    with pytest.raises(SoraError, match="task=vae takes train.fp8=null"):
        check_train_config(compose_config("train", ["task=vae", "train.fp8=tensorwise"]))


def test_only_the_blocks_matmuls_are_chosen():
    dit = DiT(3, 16, DiTArgs(hidden_size=64, depth=2, num_heads=2, patch_size=[1, 2, 2]))
    chosen = sorted(name for name, m in dit.named_modules() if fp8.fp8_linear(m, name))
    # qkv, proj, cross q, proj, two MLP layers; not adaLN, the text's kv, embeddings, output
    assert len(chosen) == 2 * 6
    assert all(name.startswith("blocks.") and "adaLN" not in name and "cross.kv" not in name for name in chosen)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FP8 matmuls run on CUDA")
@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_fp8_step_is_close_to_bf16(recipe):
    if problem := fp8.fp8_unavailable(recipe):
        pytest.skip(problem)
    from sora.models.conditioning import Conditioning

    torch.manual_seed(0)
    ref = DiT(16, 64, DiTArgs(hidden_size=256, depth=2, num_heads=2, patch_size=[1, 2, 2])).cuda()
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.05)
    model = DiT(16, 64, DiTArgs(hidden_size=256, depth=2, num_heads=2, patch_size=[1, 2, 2])).cuda()
    model.load_state_dict(ref.state_dict())
    assert fp8.convert_to_fp8(model, recipe) == 12
    assert model.state_dict().keys() == ref.state_dict().keys()  # checkpoints and the EMA see the same weights
    # 3 clips of 3x5x7 tokens (315 rows) and 7 text tokens: no multiple of 16 anywhere, as native sizes give;
    # an H200 run of train.fp8 stopped in the backward on 3 x 8 text rows before the padding.
    x, t = torch.randn(3, 16, 3, 10, 14, device="cuda"), torch.rand(3, device="cuda")
    cond = Conditioning(torch.randn(3, 7, 64, device="cuda"), torch.ones(3, 7, dtype=torch.bool, device="cuda"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        want, got = ref(x, t, cond), model(x, t, cond)
    assert ((got.float() - want.float()).norm() / want.float().norm()).item() < 0.1
    got.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
