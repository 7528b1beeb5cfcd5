import pytest
import torch

from sora.models.conditioning import Conditioning
from sora.models.attention import backend_unavailable
from sora.models.dit import DiT
from tests.conftest import compose_config, require_xformers


def build(preset: str, in_channels=4, text_dim=32, **override):
    cfg = compose_config("train", [f"dit={preset}"]).dit
    return DiT(in_channels, text_dim, **{**dict(cfg), "patch_size": list(cfg.patch_size), **override})


def inputs(b=2, c=4, t=4, h=8, w=8, m=5, text_dim=32, device="cpu"):
    mask = torch.ones(b, m, dtype=torch.bool, device=device)
    mask[0, 3:] = False  # padded caption
    return (torch.randn(b, c, t, h, w, device=device), torch.rand(b, device=device),
            torch.randn(b, m, text_dim, device=device), mask)


def test_tiny_output_shape_and_zero_init():
    model = build("tiny")
    x, t, ctx, mask = inputs()
    out = model(x, t, Conditioning(ctx, mask))
    assert out.shape == x.shape
    assert out.abs().max() == 0  # adaLN-Zero: zeroed output layer predicts exactly 0 at init


@pytest.mark.parametrize("preset", ["S", "B", "L", "XL", "XL128", "1.6B", "3B"])
def test_presets_shapes(preset):
    # Built on the meta device: shapes and parameter counts without allocating hundreds of MB.
    with torch.device("meta"):
        model = build(preset)
        x, t, ctx, mask = inputs(device="meta")
        assert model(x, t, Conditioning(ctx, mask)).shape == x.shape
    shapes = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16), "XL128": (1152, 28, 9),
              "1.6B": (1536, 30, 12), "3B": (2048, 32, 16)}
    assert (model.final.norm.normalized_shape[0], len(model.blocks), model.blocks[0].attn.num_heads) == shapes[preset]
    params = sum(p.numel() for p in model.parameters())
    if preset in ("XL128", "1.6B", "3B"):  # the presets built for 128-wide heads
        assert model.head_dim == 128
    if preset == "XL128":  # XL's parameters: only the heads' split differs, and so the 4 QK-norms' widths a block
        with torch.device("meta"):
            xl = sum(p.numel() for p in build("XL").parameters())
        assert params == xl + 28 * 4 * (128 - 72)
    if preset == "1.6B":
        assert 1.5e9 < params < 1.7e9
    if preset == "3B":
        assert 2.7e9 < params < 3.3e9


def test_any_grid_size_one_model():
    model = build("tiny", in_channels=3)
    torch.nn.init.normal_(model.final.linear.weight)  # make the output depend on the input
    for t, h, w in [(2, 8, 8), (4, 16, 24), (6, 32, 8)]:  # the quick start patches 2x8x8
        x, tt, ctx, mask = inputs(c=3, t=t, h=h, w=w)
        assert model(x, tt, Conditioning(ctx, mask)).shape == x.shape


def test_padded_text_tokens_are_ignored():
    torch.manual_seed(0)
    model = build("tiny", in_channels=3)
    for p in model.parameters():  # leave the zero init so every path contributes
        torch.nn.init.normal_(p, std=0.05)
    x, t, ctx, mask = inputs(c=3)
    out = model(x, t, Conditioning(ctx, mask))
    ctx2 = ctx.clone()
    ctx2[0, 3:] = torch.randn_like(ctx2[0, 3:])  # change only padded tokens of sample 0
    torch.testing.assert_close(model(x, t, Conditioning(ctx2, mask)), out)
    ctx2[0, 0] += 1.0  # a real token does change the output
    assert not torch.allclose(model(x, t, Conditioning(ctx2, mask))[0], out[0])


def randomized(**kw):
    torch.manual_seed(0)
    model = DiT(3, 32, hidden_size=32, depth=2, num_heads=2, patch_size=(1, 2, 2), **kw)
    for p in model.parameters():  # leave the zero init so every path contributes
        torch.nn.init.normal_(p, std=0.05)
    return model


@pytest.mark.parametrize("layout,text", [("factorized", "cross"), ("full", "joint")])
def test_variants_shapes_and_text_padding(layout, text):
    model = randomized(attention_layout=layout, text_conditioning=text)
    x, t, ctx, mask = inputs(c=3, t=3, h=8, w=12)
    out = model(x, t, Conditioning(ctx, mask))
    assert out.shape == x.shape
    ctx2 = ctx.clone()
    ctx2[0, 3:] = torch.randn_like(ctx2[0, 3:])  # padded tokens of sample 0
    torch.testing.assert_close(model(x, t, Conditioning(ctx2, mask)), out)


def test_factorized_attention_is_spatial_then_temporal():
    """Frames exchange information only through the temporal attention: a change in frame 2 reaches frame 0."""
    model = randomized(attention_layout="factorized")
    x, t, ctx, mask = inputs(c=3, t=3, h=8, w=8)
    out = model(x, t, Conditioning(ctx, mask))
    x2 = x.clone()
    x2[:, :, 2] += 1.0
    assert not torch.allclose(model(x2, t, Conditioning(ctx, mask))[:, :, 0], out[:, :, 0])  # frames talk (temporal attention)


@pytest.mark.parametrize("layout", ["full", "factorized"])
def test_rope_theta_reaches_every_layout(layout):
    """dit.rope_theta sets the rotary frequencies in full and factorized attention alike (factorized once ignored it)."""
    x, t, ctx, mask = inputs(c=3, t=3, h=8, w=8)
    out = {}
    for theta in (10000.0, 10.0):  # the same weights (seeded), only theta differs
        model = randomized(attention_layout=layout, rope_theta=theta)
        for name, p in model.named_parameters():  # peaked attention, so where a key sits matters
            if "q_norm" in name or "k_norm" in name:
                torch.nn.init.constant_(p, 4.0)
        out[theta] = model(x, t, Conditioning(ctx, mask))
    assert (out[10000.0] - out[10.0]).abs().max() > 1e-3


def test_adaln_single_with_joint_text_is_refused_in_one_line():
    with pytest.raises(AssertionError, match="use it with text_conditioning=cross"):
        DiT(3, 32, hidden_size=32, depth=1, num_heads=2, text_conditioning="joint", modulation="single")


def test_joint_with_factorized_is_refused():
    with pytest.raises(AssertionError, match="attention_layout=full"):
        DiT(3, 32, hidden_size=32, depth=1, num_heads=2, attention_layout="factorized", text_conditioning="joint")


def check_packed_equals_alone(backend: str, device: str = "cpu", tol: float = 1e-5, autocast: bool = False,
                              modulation: str = "per_block"):
    model = randomized(attention_backend=backend, modulation=modulation).to(device).eval()
    shapes = [(2, 8, 8), (4, 4, 12), (1, 6, 6)]
    xs = [torch.randn(3, *s, device=device) for s in shapes]
    t = torch.rand(3, device=device)
    ctx = torch.randn(3, 5, 32, device=device)
    mask = torch.ones(3, 5, dtype=torch.bool, device=device)
    mask[0, 2:] = False
    mask[2, 4:] = False
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        packed = model.forward_packed(xs, t, Conditioning(ctx, mask))
        for i, x in enumerate(xs):
            alone = model(x[None], t[i : i + 1], Conditioning(ctx[i : i + 1], mask[i : i + 1]))[0]
            assert packed[i].shape == x.shape
            torch.testing.assert_close(packed[i].float(), alone.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("backend", ["sdpa", "flash", "flex", "math"])
def test_packed_clips_equal_clips_run_alone(backend):
    check_packed_equals_alone(backend)


def test_packed_clips_equal_clips_run_alone_with_adaln_single():
    check_packed_equals_alone("sdpa", modulation="single")


def test_adaln_single_shares_one_map_starts_as_identity_and_trains_every_table():
    """dit.modulation=single: XL128 loses depth x (d x 6d + 6d) parameters for one shared map; zeroed, every
    block is the identity at init, and each block's table and the shared map get gradients."""
    with torch.device("meta"):
        per_block, single = build("XL128"), build("XL128", modulation="single")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    d = 1152
    assert count(per_block) - count(single) == 28 * (d * 6 * d + 6 * d) - (d * 6 * d + 6 * d) - 28 * 6 * d
    assert 605e6 < count(single) < 615e6  # Wan at the same width, depth and heads: 607M (docs/BENCHMARKS.md)
    model = build("tiny", modulation="single")
    assert not hasattr(model.blocks[0], "adaLN_modulation") and model.adaLN_single is not None
    x, t, ctx, mask = inputs()
    assert model(x, t, Conditioning(ctx, mask)).abs().max() == 0  # zero init, as adaLN-Zero
    model = randomized(modulation="single")
    x, t, ctx, mask = inputs(c=3, text_dim=32)
    model(x, t, Conditioning(ctx, mask)).square().mean().backward()
    assert all(b.modulation_table.grad.abs().sum() > 0 for b in model.blocks)
    assert model.adaLN_single[-1].weight.grad.abs().sum() > 0


GPU_BACKENDS = ["sdpa", "cudnn", "flash", "fa4", "xformers", "flex"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def require(backend: str) -> None:
    """Skip a GPU test of a backend this machine lacks (xformers: also a wheel that loads no kernels)."""
    if backend == "xformers":
        require_xformers()
    elif problem := backend_unavailable(backend):
        pytest.skip(problem)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_packed_clips_equal_clips_run_alone_on_gpu(backend):
    """On GPU the packed path is xformers' block-diagonal bias, FlexAttention's block mask, SDPA's mask, or a pinned
    kernel per clip (FA4: one variable-length call)."""
    require(backend)
    if backend in ("cudnn", "flash", "fa4"):  # bf16 / fp16 kernels only
        check_packed_equals_alone(backend, "cuda", tol=2e-2, autocast=True)
    else:
        check_packed_equals_alone(backend, "cuda", tol=1e-4)  # fp32, but TF32-free kernels differ in summation order


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_bf16_autocast_step_on_gpu_is_close_to_fp32_and_finite(backend):
    require(backend)
    model = randomized(attention_backend=backend).cuda()
    x, t, ctx, mask = inputs(c=3, t=2, h=8, w=8, device="cuda")
    with torch.no_grad():  # the fp32 reference: the pinned kernels take no fp32, so SDPA's own choice
        model.set_attention_backend("sdpa")
        ref = model(x, t, Conditioning(ctx, mask))
        model.set_attention_backend(backend)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x, t, Conditioning(ctx, mask))
    assert out.shape == x.shape
    assert ((out.float() - ref).norm() / ref.norm()).item() < 3e-2  # bf16 operands: errors of order 1e-2
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_activation_checkpointing_changes_nothing_but_memory():
    ref = randomized()
    ckpt = randomized(checkpoint_fraction=0.5)
    assert ckpt.num_checkpointed == 1
    x, t, ctx, mask = inputs(c=3, t=2, h=8, w=8)
    for model in (ref, ckpt):
        model(x, t, Conditioning(ctx, mask)).square().mean().backward()
    torch.testing.assert_close(ref(x, t, Conditioning(ctx, mask)), ckpt(x, t, Conditioning(ctx, mask)))
    for a, b in zip(ref.parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


def test_text_padding_is_trimmed_and_an_all_real_batch_needs_no_mask():
    from sora.models.dit import trim_text_padding

    ctx = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    kept, kept_mask = trim_text_padding(ctx, mask)  # column 3 and 4 are padding in every caption
    assert kept.shape == (2, 3, 8) and kept_mask.tolist() == [[True] * 3, [True, True, False]]
    kept, kept_mask = trim_text_padding(ctx, torch.ones(2, 5, dtype=torch.bool))
    assert kept.shape == (2, 5, 8) and kept_mask is None  # no mask: SDPA may take its fused kernels


@pytest.mark.parametrize("text", ["cross", "joint"])
def test_trailing_padding_changes_nothing(text):
    """Captions padded further (a longer batch-wide length) give the same output as without that padding."""
    model = randomized(text_conditioning=text)
    x, t, ctx, _ = inputs(c=3, t=2, h=8, w=8)
    full = torch.ones(2, 5, dtype=torch.bool)
    padded_ctx = torch.cat([ctx, torch.randn(2, 3, 32)], dim=1)
    padded_mask = torch.cat([full, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(x, t, Conditioning(padded_ctx, padded_mask)), model(x, t, Conditioning(ctx, full)), atol=1e-5, rtol=1e-5)
