from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf

from sora.errors import SoraError
from sora.models.attention import backend_unavailable
from sora.models.conditioning import Conditioning
from sora.models.dit import DiT, DiTArgs
from tests.conftest import ROOT, compose_config, require_xformers


def build(preset: str, in_channels=4, text_dim=32, **override):
    args = OmegaConf.to_object(compose_config("train", [f"dit={preset}"]).dit)  # a DiTArgs
    return DiT(in_channels, text_dim, replace(args, **override))


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


def test_head_mlp_predicts_zero_at_init_and_is_not_linear_in_the_tokens():
    model = build("tiny", head_mlp_width=64)
    x, t, ctx, mask = inputs()
    cond = Conditioning(ctx, mask)
    assert model(x, t, cond).abs().max() == 0  # its output layer is zeroed as the linear head's is
    torch.nn.init.normal_(model.final.linear.weight, std=0.1)
    head, norm_out = model.final, torch.randn(3, 1, model.args.hidden_size)

    def patches(tokens):  # the head alone, with zero modulation: b n hidden -> b n patch_dim
        return head.linear(head.hidden(tokens))

    assert head.hidden is not None and head.linear.in_features == 64
    assert not torch.allclose(patches(2 * norm_out) - patches(torch.zeros_like(norm_out)),
                              2 * (patches(norm_out) - patches(torch.zeros_like(norm_out))), atol=1e-4)
    assert model(x, t, cond).shape == x.shape


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
    model = DiT(3, 32, DiTArgs(hidden_size=32, depth=2, num_heads=2, patch_size=[1, 2, 2], **kw))
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
    """Frames exchange information only through the temporal attention, and positions within a frame only through
    the spatial one: a change in frame 2 reaches frame 0; with the temporal attention silenced it does not; with the
    spatial one silenced it reaches frame 0 only at the changed position (a full attention layer fails both)."""
    model = randomized(attention_layout="factorized")
    x, t, ctx, mask = inputs(c=3, t=3, h=8, w=8)
    cond = Conditioning(ctx, mask)
    out = model(x, t, cond)
    x2 = x.clone()
    x2[:, :, 2] += 1.0
    # frames talk (temporal attention)
    assert not torch.allclose(model(x2, t, cond)[:, :, 0], out[:, :, 0])

    def silenced(name):  # the model with every block's `name` attention contributing nothing
        quiet = randomized(attention_layout="factorized")
        for block in quiet.blocks:
            torch.nn.init.zeros_(getattr(block, name).proj.weight)
            torch.nn.init.zeros_(getattr(block, name).proj.bias)
        return quiet

    no_time = silenced("attn_t")
    torch.testing.assert_close(no_time(x2, t, cond)[:, :, 0], no_time(x, t, cond)[:, :, 0])
    no_space = silenced("attn")
    x3 = x.clone()
    x3[:, :, 2, :2, :2] += 1.0  # one 2 x 2 patch: token (0, 0) of frame 2
    moved = (no_space(x3, t, cond) - no_space(x, t, cond))[:, :, 0].abs()  # b c h w, frame 0
    assert moved[..., :2, :2].amax() > 1e-4  # the same position, through time
    moved[..., :2, :2] = 0
    assert moved.amax() == 0  # nowhere else


@pytest.mark.parametrize("layout", ["full", "factorized"])
def test_rope_theta_reaches_every_layout(layout):
    """dit.rope_theta sets the rotary frequencies in full and factorized attention alike (factorized once ignored
    it)."""
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
    with pytest.raises(SoraError, match="use text_conditioning=cross"):
        DiTArgs(hidden_size=32, depth=1, num_heads=2, text_conditioning="joint", modulation="single")


def test_joint_with_factorized_is_refused():
    with pytest.raises(SoraError, match="attention_layout=full"):
        DiTArgs(hidden_size=32, depth=1, num_heads=2, attention_layout="factorized", text_conditioning="joint")


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
    count = lambda m: sum(p.numel() for p in m.parameters())
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
    torch.testing.assert_close(model(x, t, Conditioning(padded_ctx, padded_mask)), model(x, t, Conditioning(ctx, full)),
                               atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


def test_dit_args_defaults_are_the_quick_starts_dit():
    """DiTArgs' defaults are what configs/train.yaml composes (dit: tiny, which states nothing of its own)."""
    assert OmegaConf.to_object(compose_config("train").dit) == DiTArgs()
    assert (DiTArgs().hidden_size, DiTArgs().depth, DiTArgs().num_heads, DiTArgs().patch_size) == (128, 4, 4, [2, 8, 8])


@pytest.mark.parametrize("kw,message", [
    (dict(depth=0), "depth must be >= 1, got 0"),
    (dict(checkpoint_fraction=1.5), "checkpoint_fraction must be in [0, 1], got 1.5"),
    (dict(patch_size=[1, 2]), "patch_size must be [pt, ph, pw]"),
    (dict(hidden_size=102), "hidden_size=102 must divide by num_heads=4"),
    (dict(hidden_size=100), "hidden_size / num_heads = 25 channels a head; 3D RoPE needs an even number"),
    (dict(attention_backend="fa3"), "attention_backend must be one of sdpa, cudnn, flash, fa4"),
])
def test_dit_args_built_in_python_are_checked_in_one_line(kw, message):
    with pytest.raises(SoraError) as e:
        DiTArgs(**kw)
    assert message in str(e.value)


def test_each_variant_is_its_block_class_and_its_modulation_module():
    from sora.models.blocks import CrossBlock, FactorizedBlock, JointBlock

    for kw, cls in [({}, CrossBlock), (dict(attention_layout="factorized"), FactorizedBlock),
                    (dict(text_conditioning="joint"), JointBlock)]:
        model = DiT(3, 8, DiTArgs(hidden_size=24, depth=2, num_heads=2, **kw))
        assert all(type(b) is cls for b in model.blocks)
        assert model.adaLN_single is None and all(not hasattr(b, "modulation_table") for b in model.blocks)
    model = DiT(3, 8, DiTArgs(hidden_size=24, depth=2, num_heads=2, attention_layout="factorized", modulation="single"))
    assert model.adaLN_single[-1].out_features == 9 * 24 and model.blocks[0].modulation_table.shape == (9 * 24,)


def test_set_attention_backend_reaches_every_attention_and_refuses_an_unknown_name():
    model = randomized(text_conditioning="joint")
    model.set_attention_backend("math")
    layers = [m for m in model.modules() if hasattr(m, "backend")]
    assert len(layers) == 2 * 2 and all(m.backend == "math" for m in layers)  # video and text attention, 2 blocks
    assert model.args.attention_backend == "math"
    with pytest.raises(SoraError, match="attention_backend must be one of"):
        model.set_attention_backend("fa3")


# ---------------------------------------------------------------------------------------------------------------
# The conditioning vectors: one row per clip, per given token frame, or per token
# ---------------------------------------------------------------------------------------------------------------


def test_given_frames_modulate_through_a_frame_view_and_equal_a_per_token_modulation():
    """With frames given, adaLN's steps are b t 1 d (a row per token frame), never b n d, and modulating through the
    frame view equals broadcasting each token's own row."""
    from sora.models.modulation import AdaLN, AdaLNConditioning
    from sora.models.norms import LayerNorm

    torch.manual_seed(0)
    b, d, (t, h, w), pt = 2, 8, (3, 2, 2), 2
    embed, layer, norm = torch.nn.Linear(1, d), AdaLN(d, 6), LayerNorm(d, elementwise_affine=False)
    torch.nn.init.normal_(layer[-1].weight)
    frame_mask = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)  # b T = t pt latent frames
    ts, frame_t = torch.tensor([0.7, 0.2]), torch.tensor([0.0, 0.05])
    adaln = AdaLNConditioning.of_batch(lambda v: embed(v[:, None]), 0.0, ts, frame_t, frame_mask, pt)
    assert adaln.index.tolist() == [[2, 0, 0], [1, 1, 3]]  # rows: c of clip 0, 1, then c_given of clip 0, 1
    sa, ff = adaln.modulations(layer, 6)
    assert sa.shift.shape == sa.gate.shape == ff.scale.shape == (b, t, 1, d)
    x, y = torch.randn(b, t * h * w, d), torch.randn(b, t * h * w, d)
    given = frame_mask[:, ::pt].repeat_interleave(h * w, dim=1)  # b n: each token's frame given?
    c, c_given = layer(embed(ts[:, None]))[:, None], layer(embed(frame_t[:, None]))[:, None]  # b 1 (6 d)
    per_token = torch.where(given[..., None], c_given, c)  # b n (6 d)
    shift, scale, gate = per_token.chunk(6, dim=-1)[:3]  # b n d each
    torch.testing.assert_close(sa.modulate(norm, x), norm(x) * (1 + scale) + shift, atol=0, rtol=0)
    torch.testing.assert_close(sa.residual(x, y), x + gate * y, atol=0, rtol=0)
    # A rank's slice of the tokens (sequence parallelism) takes a row per token, the same rows.
    half = adaln.split(lambda v, dim: v.narrow(dim, 6, 6), t * h * w)
    assert half.index.shape == (b, 6)
    torch.testing.assert_close(half.modulations(layer, 6)[0].modulate(norm, x[:, 6:]),
                               sa.modulate(norm, x)[:, 6:], atol=0, rtol=0)


def test_a_row_per_token_frame_is_the_same_mechanism():
    """The Diffusion Forcing case the conditioning object is built for: a vector per token frame (b t rows) and an
    index naming them modulate each frame's tokens by its own row."""
    from sora.models.modulation import AdaLN, AdaLNConditioning
    from sora.models.norms import LayerNorm

    torch.manual_seed(0)
    b, t, s, d = 2, 3, 4, 8
    layer, norm = AdaLN(d, 6), LayerNorm(d, elementwise_affine=False)
    torch.nn.init.normal_(layer[-1].weight)
    rows = torch.randn(b * t, d)  # one conditioning vector per token frame
    adaln = AdaLNConditioning((rows,), torch.arange(b * t).view(b, t))
    sa, _ = adaln.modulations(layer, 6)
    x = torch.randn(b, t * s, d)
    per_token = layer(rows).view(b, t, 1, -1).expand(b, t, s, -1).reshape(b, t * s, -1)  # b n (6 d)
    shift, scale = per_token.chunk(6, dim=-1)[:2]
    torch.testing.assert_close(sa.modulate(norm, x), norm(x) * (1 + scale) + shift, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints of the code before the one-class-per-variant restructure
# ---------------------------------------------------------------------------------------------------------------

# tests/data/dit_reference.pt holds, for each variant, the state dict's keys and shapes (in order) and the outputs
# on fixed inputs of the DiT as it was at commit 7d1018e (one DiTBlock with three switches), built with these
# settings and given the weights `seeded_state` makes from each key. It was written once by that commit's code.
REFERENCE = ROOT / "tests" / "data" / "dit_reference.pt"
REFERENCE_VARIANTS = {
    "full_cross_per_block": dict(),
    "full_cross_single": dict(modulation="single"),
    "factorized_cross_per_block": dict(attention_layout="factorized"),
    "factorized_cross_single": dict(attention_layout="factorized", modulation="single"),
    "full_joint_per_block": dict(text_conditioning="joint"),
    "full_cross_per_block_pt2_unpooled": dict(patch_size=[2, 2, 2], pooled_text=False),
}


def seeded_state(shapes: dict) -> dict:
    """A state dict whose every tensor is drawn from a generator seeded by its key (norm weights near 1)."""
    import zlib

    state = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
        state[name] = 1 + 0.2 * noise if "norm" in name else 0.2 * noise
    return state


def same_output(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to float rounding: on the CPU that wrote the reference (an Intel Xeon with AVX-512) the outputs are
    bit for bit the same; an AMD EPYC with AVX2 sums in another order and lands up to 1e-5 away (outputs of size
    1 to 6), so bit-for-bit equality would fail on half of our CI machines."""
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", list(REFERENCE_VARIANTS))
def test_earlier_state_dicts_load_and_give_the_earlier_outputs(variant):
    """The same keys in the same order (checkpoints and optimizer states load), and the same outputs of forward,
    forward with given frames, forward_packed and forward_packed with given frames (`same_output`)."""
    ref = torch.load(REFERENCE, weights_only=True)
    want, i = ref["variants"][variant], ref["inputs"]
    settings = dict(hidden_size=32, depth=2, num_heads=2, patch_size=[1, 2, 2], head_mlp_width=0)
    settings |= REFERENCE_VARIANTS[variant]
    model = DiT(3, 16, DiTArgs(**settings)).eval()
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == list(want["shapes"].items())
    model.load_state_dict(seeded_state(want["shapes"]), strict=True)
    cond, pack = Conditioning(i["text"], i["text_mask"]), Conditioning(i["ptext"], i["ptext_mask"])
    with torch.no_grad():
        same_output(model(i["x"], i["t"], cond), want["forward"])
        given = cond.with_frames(i["x"], i["frame_mask"], i["frame_t"])
        same_output(model(i["x"], i["t"], given), want["forward_given"])
        if "packed" not in want:  # forward_packed is for full attention with cross-attention
            return
        for out, expect in zip(model.forward_packed(i["xs"], i["pt"], pack), want["packed"], strict=True):
            same_output(out, expect)
        given = pack.with_frames(i["xs"], i["pframe_mask"], i["pframe_t"])
        for out, expect in zip(model.forward_packed(i["xs"], i["pt"], given), want["packed_given"], strict=True):
            same_output(out, expect)
