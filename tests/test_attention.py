"""Attention backends agree with the written-out reference, masks included; a missing one is a clear error."""

import sys

import pytest
import torch

from sora.errors import SoraError
from sora.models import attention as attention_module
from sora.models.attention import Segments, attention, backend_unavailable
from tests.conftest import compose_config, require_xformers

CPU_BACKENDS = ["sdpa", "flash", "flex", "math"]
PINNED_GPU = ["cudnn", "flash", "fa4"]  # the kernels `dit.attention_backend` can pin on a GPU


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


def packed(n_lens=(10, 5, 9), k_lens=(7, 3, 6), device="cpu"):
    """A pack of 3 clips (b = 1): block-diagonal over clips, as DiT.forward_packed builds it, and its dense twin."""
    ids = lambda lens: torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))[None].to(device)
    return (Segments(ids(n_lens), ids(k_lens), None, list(n_lens), list(k_lens)),
            Segments(ids(n_lens), ids(k_lens)))


def with_grads(backend, q, k, v, seg):
    """The output and d(sum(out * w))/d(q, k, v) for a fixed random w."""
    q, k, v = (x.detach().clone().requires_grad_(True) for x in (q, k, v))
    out = attention(q, k, v, backend, seg)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device, out.dtype)
    return (out, *torch.autograd.grad((out.float() * w.float()).sum(), (q, k, v)))


def masked_case(mask: str):
    """(q, k, v), the mask a backend gets and its dense form for the math reference: one packed row or two rows."""
    if mask == "packed":
        seg, dense = packed()
        return qkv(b=1, n=24, m=16), seg, dense
    seg = masks(2, 24, 30)[mask]
    return qkv(n=24, m=30), seg, seg


@pytest.mark.parametrize("backend", ["sdpa", "flash"])  # FlexAttention has no backward on a CPU
@pytest.mark.parametrize("mask", ["none", "padding", "segments", "both", "packed"])
def test_backends_forward_and_backward_match_the_math_reference(backend, mask):
    """Gradients too: a pinned kernel on a masked batch runs once per group of queries, and writes them back."""
    (q, k, v), seg, dense = masked_case(mask)
    for got, want in zip(with_grads(backend, q, k, v, seg), with_grads("math", q, k, v, dense)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_mask_groups_cover_each_query_once():
    seg = masks(2, 24, 30)["both"]
    groups = attention_module.mask_groups(seg, 2, 24, 30)
    assert len(groups) == 4  # 2 rows x 2 clips
    for row in range(2):
        qs = torch.cat([g.q for g in groups if g.row == row])
        assert sorted(qs.tolist()) == list(range(24))
    assert groups[1].k.tolist() == list(range(15, 25))  # row 0, clip 1: its keys less the 5 padded ones
    pack, _ = packed()
    assert [(g.q, g.k) for g in attention_module.mask_groups(pack, 1, 24, 16)] == [
        (slice(0, 10), slice(0, 7)), (slice(10, 15), slice(7, 10)), (slice(15, 24), slice(10, 16))]


def fake_flash_attn_4(monkeypatch):
    """flash_attn.cute with FA4's call signatures and (out, lse) returns, computed by the math reference: the
    layout changes and the variable-length packing around the kernel are then checked on a CPU."""
    import types

    def flash_attn_func(q, k, v):  # b n h d
        out = attention(*(x.transpose(1, 2) for x in (q, k, v)), "math").transpose(1, 2)
        return out, None

    # flash-attn-4 4.0.0b40's order (pyproject pins it): `qv` comes before the lengths, so a positional call fails.
    def flash_attn_varlen_func(q, k, v, qv=None, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                               max_seqlen_k=None):
        assert qv is None, "the offsets were passed as qv"
        cu_q, cu_k, max_q, max_k = cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k  # N h d, int32 offsets
        assert cu_q.dtype == cu_k.dtype == torch.int32 and len(cu_q) == len(cu_k)
        assert max_q == int((cu_q[1:] - cu_q[:-1]).max()) and max_k == int((cu_k[1:] - cu_k[:-1]).max())
        outs = [flash_attn_func(q[None, a:b], k[None, c:d], v[None, c:d])[0][0]
                for a, b, c, d in zip(cu_q[:-1], cu_q[1:], cu_k[:-1], cu_k[1:])]
        return torch.cat(outs), None

    cute = types.SimpleNamespace(flash_attn_func=flash_attn_func, flash_attn_varlen_func=flash_attn_varlen_func)
    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(cute=cute))
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)
    monkeypatch.setattr(attention_module, "_fa4_gpu_problem", lambda device: None)
    monkeypatch.setattr(attention_module, "_off_gpu", lambda backend, q: False)


@pytest.mark.parametrize("mask", ["none", "padding", "segments", "both", "packed"])
def test_fa4_layout_and_varlen_packing_with_a_reference_kernel(monkeypatch, mask):
    fake_flash_attn_4(monkeypatch)
    (q, k, v), seg, dense = masked_case(mask)
    for got, want in zip(with_grads("fa4", q, k, v, seg), with_grads("math", q, k, v, dense)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
@pytest.mark.parametrize("backend", ["cudnn", "fa4"])
def test_gpu_only_backends_fail_in_one_line_without_a_gpu(backend):
    from sora.config.checks import check_train_config

    q, k, v = qkv()
    gpu_only = rf"^dit.attention_backend={backend} runs on a CUDA GPU"
    with pytest.raises(SoraError, match=gpu_only + ".*attention_backend=sdpa$"):
        attention(q, k, v, backend)
    with pytest.raises(SoraError, match=gpu_only):
        check_train_config(compose_config("train", [f"dit.attention_backend={backend}"]))
    # a dry run plans only: it may name a GPU backend on a CPU machine
    check_train_config(compose_config("train", [f"dit.attention_backend={backend}", "train.dry_run=true"]))
    assert backend_unavailable("flash") is None and backend_unavailable("sdpa") is None


def test_fa4_not_installed_names_the_key_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", None)
    monkeypatch.setitem(sys.modules, "flash_attn.cute", None)
    with pytest.raises(SoraError, match=r"^dit.attention_backend=fa4 needs FlashAttention-4: "
                                        r"pip install -e '\.\[fa4\]'"):
        attention_module._fa4_module()


def test_an_unknown_backend_fails_at_composition_naming_the_key():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="dit.attention_backend=fa3"):
        compose_config("train", ["dit.attention_backend=fa3"])
    assert backend_unavailable("fa3").startswith("dit.attention_backend='fa3': choose one of sdpa, cudnn, flash, fa4")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned kernels run on CUDA")
@pytest.mark.parametrize("backend", PINNED_GPU)
@pytest.mark.parametrize("mask", ["none", "padding", "segments", "packed"])
def test_pinned_kernels_forward_and_backward_match_math_on_gpu(backend, mask):
    """bf16 at 128-wide heads (the 128-head presets), every mask the DiT makes, gradients included."""
    if problem := backend_unavailable(backend):
        pytest.skip(problem)
    if mask == "packed":
        q, k, v = qkv(b=1, h=4, n=24, m=16, d=128, device="cuda", dtype=torch.bfloat16)
        seg, dense = packed(device="cuda")
    else:
        q, k, v = qkv(h=4, n=64, m=40, d=128, device="cuda", dtype=torch.bfloat16)
        seg = dense = masks(2, 64, 40, "cuda")[mask]
    for got, want in zip(with_grads(backend, q, k, v, seg), with_grads("math", q, k, v, dense)):
        torch.testing.assert_close(got.float(), want.float(), atol=3e-2, rtol=3e-2)


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
    torch.testing.assert_close(attention(q, k, v, "xformers", seg), attention(q, k, v, "sdpa", seg), atol=2e-2,
                               rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers runs on CUDA")
def test_xformers_block_diagonal_matches_segments_on_gpu():
    require_xformers()
    q, k, v = qkv(b=1, n=64, m=64, d=64, device="cuda", dtype=torch.bfloat16)
    ids = torch.tensor([[0] * 20 + [1] * 44], device="cuda")
    packed = Segments(ids, ids, None, [20, 44], [20, 44])
    torch.testing.assert_close(attention(q, k, v, "xformers", packed), attention(q, k, v, "sdpa", Segments(ids, ids)),
                               atol=2e-2, rtol=2e-2)


def test_backends_are_one_enum_and_self_attention_runs_them_through_its_core():
    """The names of dit.attention_backend are AttentionBackend's; a member or its name picks the same kernel; and
    self-attention calls the kernel through its weightless `core`, what sequence parallelism wraps."""
    from sora.models.attention import AttentionBackend, SelfAttention
    from sora.models.rope import rope_for_grid

    assert [b.value for b in AttentionBackend] == ["sdpa", "cudnn", "flash", "fa4", "xformers", "flex", "math"]
    q, k, v = qkv()
    torch.testing.assert_close(attention(q, k, v, AttentionBackend.math), attention(q, k, v, "math"), atol=0, rtol=0)
    layer = SelfAttention(32, 2, backend=AttentionBackend.math)
    seen = []
    layer.core.register_forward_hook(lambda module, args, out: seen.append((args[3], out.shape)))
    layer(torch.randn(1, 6, 32), rope_for_grid((1, 2, 3), 16, 10000.0, torch.device("cpu")))
    assert seen == [(AttentionBackend.math, (1, 2, 6, 16))]  # b h n d
    assert not list(layer.core.parameters()) and not hasattr(layer, "sp_group")
