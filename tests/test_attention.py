"""Attention backends agree with the written-out reference, masks included; a missing one is a clear error."""

import sys

import pytest
import torch

from sora.models.attention import Segments, attention
from sora.errors import SoraError
from tests.conftest import require_xformers

CPU_BACKENDS = ["sdpa", "flex", "math"]


def qkv(b=2, h=2, n=24, m=24, d=16, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, L, d, generator=g).to(device, dtype) for L in (n, m, m)]


def masks(b, n, m, device="cpu"):
    ids_q = torch.tensor([[0] * (n // 3) + [1] * (n - n // 3)] * b, device=device)
    ids_k = torch.tensor([[0] * (m // 2) + [1] * (m - m // 2)] * b, device=device)
    valid = torch.ones(b, m, dtype=torch.bool, device=device)
    valid[0, -5:] = False
    return {"none": None, "padding": Segments(k_valid=valid), "segments": Segments(ids_q, ids_k),
            "both": Segments(ids_q, ids_k, valid)}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mask", ["none", "padding", "segments", "both"])
def test_backends_match_the_math_reference(backend, mask):
    q, k, v = qkv(n=24, m=30)
    seg = masks(2, 24, 30)[mask]
    torch.testing.assert_close(attention(q, k, v, backend, seg), attention(q, k, v, "math", seg), atol=1e-5, rtol=1e-5)


def test_masked_keys_do_not_matter():
    q, k, v = qkv(n=24, m=30)
    seg = masks(2, 24, 30)["padding"]
    out = attention(q, k, v, "sdpa", seg)
    v2 = v.clone()
    v2[0, :, -5:] += 100.0
    torch.testing.assert_close(attention(q, k, v2, "sdpa", seg), out)


def test_a_missing_backend_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "xformers", None)
    monkeypatch.setitem(sys.modules, "xformers.ops", None)
    q, k, v = qkv()
    with pytest.raises(SoraError, match=r"xformers extra.*\.\[xformers\]"):
        attention(q, k, v, "xformers")
    with pytest.raises(SoraError, match="choose one of"):
        attention(q, k, v, "fast")


def test_an_xformers_without_kernels_is_a_clear_error(monkeypatch):
    """An xformers wheel built for another torch imports fine but runs nothing (seen on the lent H100)."""
    import types

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("No operator found for `memory_efficient_attention_forward` with inputs:")

    ops = types.SimpleNamespace(memory_efficient_attention=no_kernel)
    monkeypatch.setitem(sys.modules, "xformers", types.SimpleNamespace(ops=ops))
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    q, k, v = qkv()
    with pytest.raises(SoraError, match=r"no kernel for these inputs on torch .*attention_backend=sdpa"):
        attention(q, k, v, "xformers")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers runs on CUDA")
@pytest.mark.parametrize("mask", ["none", "padding"])
def test_xformers_matches_sdpa_on_gpu(mask):
    require_xformers()
    q, k, v = qkv(n=64, m=40, d=64, device="cuda", dtype=torch.bfloat16)
    seg = masks(2, 64, 40, "cuda")[mask]
    torch.testing.assert_close(attention(q, k, v, "xformers", seg), attention(q, k, v, "sdpa", seg), atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers runs on CUDA")
def test_xformers_block_diagonal_matches_segments_on_gpu():
    require_xformers()
    q, k, v = qkv(b=1, n=64, m=64, d=64, device="cuda", dtype=torch.bfloat16)
    ids = torch.tensor([[0] * 20 + [1] * 44], device="cuda")
    packed = Segments(ids, ids, None, [20, 44], [20, 44])
    torch.testing.assert_close(attention(q, k, v, "xformers", packed), attention(q, k, v, "sdpa", Segments(ids, ids)),
                               atol=2e-2, rtol=2e-2)
