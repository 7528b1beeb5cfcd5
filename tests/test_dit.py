import pytest
import torch

from sora.dit import DiT
from tests.conftest import compose_config


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
    out = model(x, t, ctx, mask)
    assert out.shape == x.shape
    assert out.abs().max() == 0  # adaLN-Zero: zeroed output layer predicts exactly 0 at init


@pytest.mark.parametrize("preset", ["S", "B", "L", "XL"])
def test_paper_presets_shapes(preset):
    # Built on the meta device: shapes and parameter counts without allocating hundreds of MB.
    with torch.device("meta"):
        model = build(preset)
        x, t, ctx, mask = inputs(device="meta")
        assert model(x, t, ctx, mask).shape == x.shape
    widths = {"S": (384, 12), "B": (768, 12), "L": (1024, 24), "XL": (1152, 28)}
    assert (model.final.norm.normalized_shape[0], len(model.blocks)) == widths[preset]


def test_any_grid_size_one_model():
    model = build("tiny", in_channels=3)
    torch.nn.init.normal_(model.final.linear.weight)  # make the output depend on the input
    for t, h, w in [(2, 8, 8), (4, 16, 24), (6, 32, 8)]:  # the quick start patches 2x8x8
        x, tt, ctx, mask = inputs(c=3, t=t, h=h, w=w)
        assert model(x, tt, ctx, mask).shape == x.shape


def test_padded_text_tokens_are_ignored():
    torch.manual_seed(0)
    model = build("tiny", in_channels=3)
    for p in model.parameters():  # leave the zero init so every path contributes
        torch.nn.init.normal_(p, std=0.05)
    x, t, ctx, mask = inputs(c=3)
    out = model(x, t, ctx, mask)
    ctx2 = ctx.clone()
    ctx2[0, 3:] = torch.randn_like(ctx2[0, 3:])  # change only padded tokens of sample 0
    torch.testing.assert_close(model(x, t, ctx2, mask), out)
    ctx2[0, 0] += 1.0  # a real token does change the output
    assert not torch.allclose(model(x, t, ctx2, mask)[0], out[0])
