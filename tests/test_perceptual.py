"""LPIPS (sora/models/lpips.py) on a random VGG16 trunk and random heads saved to a temp dir (no real weights)."""

import importlib.util
import random
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from sora.errors import SoraError
from sora.models import lpips as lpips_module
from sora.models.lpips import LPIPS, video_lpips

SIZE = 32  # pixels: relu5_3 is 2x2


def random_backbone() -> dict:
    """A VGG16 `features` state dict in torchvision's layout, He-initialised so deep activations keep their scale."""
    torch.manual_seed(0)
    state = {}
    for k, v in lpips_module.vgg16_features().state_dict().items():
        std = (2 / v[0].numel()) ** 0.5 if k.endswith("weight") else 0.1  # He et al. 2015 for the weights
        state[k] = torch.randn_like(v) * std
    return state


def random_heads() -> dict:
    """Stand-ins for lpips' weights/v0.1/vgg.pth: its keys and shapes, non-negative values."""
    torch.manual_seed(1)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) / c for i, c in enumerate((64, 128, 256, 512, 512))}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lpips")
    backbone, heads = random_backbone(), random_heads()
    torch.save(backbone, root / "vgg16_features.pth")
    torch.save({f"features.{k}": v for k, v in backbone.items()} | {"classifier.0.weight": torch.zeros(2, 2)},
               root / "vgg16_full.pth")
    save_file(backbone, str(root / "vgg16_features.safetensors"))
    torch.save(heads, root / "vgg.pth")
    return types.SimpleNamespace(root=root, backbone=backbone, heads=heads, pth=str(root / "vgg16_features.pth"),
                                 full=str(root / "vgg16_full.pth"), st=str(root / "vgg16_features.safetensors"),
                                 heads_path=str(root / "vgg.pth"))


@pytest.fixture(scope="module")
def net(files):
    return LPIPS.from_files(files.pth, files.heads_path)


def images(seed, b=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, SIZE, SIZE, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------------------------
# The formula, computed by hand
# ---------------------------------------------------------------------------------------------------------------


def lpips_by_hand(backbone: dict, heads: dict, x, y):
    """Zhang et al. 2018, eq. 1, with explicit ops on the raw state dicts (VGG16 "D" indices as in torchvision)."""

    def taps(img):
        h = (img - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(
            1, 3, 1, 1)
        out, i = [], 0
        for block in (2, 2, 3, 3, 3):  # convs per block; each block ends at the ReLU that LPIPS taps
            if i:
                h = F.max_pool2d(h, 2)
                i += 1
            for _ in range(block):
                h = F.relu(F.conv2d(h, backbone[f"{i}.weight"], backbone[f"{i}.bias"], padding=1))
                i += 2
            out.append(h)
        assert i - 1 == 29  # relu5_3's index in torchvision's vgg16().features
        return out

    total = torch.zeros(x.shape[0])
    for k, (a, b) in enumerate(zip(taps(x), taps(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads[f"lin{k}.model.1.weight"].view(1, -1, 1, 1)
        total += ((a - b) ** 2 * w).sum(1).mean(dim=(1, 2))
    return total


def test_matches_the_formula_by_hand(net, files):
    x, y = images(0), images(1)
    d = net(x, y)
    assert d.shape == (3,)
    torch.testing.assert_close(d, lpips_by_hand(files.backbone, files.heads, x, y), rtol=1e-4, atol=1e-6)


def test_all_three_backbone_layouts_load_the_same(net, files):
    x, y = images(2), images(3)
    for path in (files.full, files.st):
        torch.testing.assert_close(LPIPS.from_files(path, files.heads_path)(x, y), net(x, y))


# ---------------------------------------------------------------------------------------------------------------
# Properties of a distance, and of a loss
# ---------------------------------------------------------------------------------------------------------------


def test_zero_on_equal_inputs_and_symmetric(net):
    x, y = images(4), images(5)
    assert net(x, x).abs().max() < 1e-6
    torch.testing.assert_close(net(x, y), net(y, x))
    assert (net(x, y) > 0).all()


def test_grows_with_noise(net):
    x = images(6)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    d = [net(x, (x + s * noise).clamp(-1, 1)) for s in (0.02, 0.1, 0.3, 1.0)]
    for smaller, larger in zip(d, d[1:]):
        assert (smaller < larger).all()


def test_frozen_but_gradient_reaches_the_input(net):
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training  # Lightning's .train() on the task must not switch it
    x, y = images(8).requires_grad_(), images(9)
    net(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_video_lpips_folds_time(net):
    g = torch.Generator().manual_seed(10)
    x, y = (torch.rand(2, 3, 5, SIZE, SIZE, generator=g) * 2 - 1 for _ in range(2))
    per_frame = torch.stack([net(x[:, :, i], y[:, :, i]) for i in range(5)])  # t b
    torch.testing.assert_close(video_lpips(net, x, y), per_frame.mean())
    # a subset of frames: the mean over those frames only, the same ones for every clip
    rng = random.Random(0)
    frames = sorted(random.Random(0).sample(range(5), 2))
    torch.testing.assert_close(video_lpips(net, x, y, max_frames=2, rng=rng), per_frame[frames].mean())
    assert video_lpips(net, x[:, :, :1], y[:, :, :1], max_frames=2).shape == ()  # an image: t = 1


# ---------------------------------------------------------------------------------------------------------------
# Bad files fail in one line naming the file and the key
# ---------------------------------------------------------------------------------------------------------------


def test_bad_backbone_files_are_named(files, tmp_path):
    def fails(path, match, heads=files.heads_path):
        with pytest.raises(SoraError, match=match) as e:
            LPIPS.from_files(str(path), heads, key="task.lpips_backbone")
        assert "\n" not in str(e.value) and str(e.value).startswith("task.lpips_backbone")
        return str(e.value)

    assert "nope.pth" in fails(tmp_path / "nope.pth", "is not a file")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    fails(tmp_path / "junk.pth", "cannot read .*junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    fails(tmp_path / "junk.safetensors", "cannot read .*junk.safetensors")
    torch.save({k: v for k, v in files.backbone.items() if k != "28.bias"}, tmp_path / "short.pth")
    fails(tmp_path / "short.pth", "short.pth.*missing 28.bias")
    torch.save(files.backbone | {"0.weight": torch.zeros(64, 3, 5, 5)}, tmp_path / "shape.pth")
    fails(tmp_path / "shape.pth", r"0.weight has shape \(64, 3, 5, 5\)")
    torch.save(files.backbone | {"30.weight": torch.zeros(1)}, tmp_path / "extra.pth")  # e.g. vgg16_bn, vgg19
    fails(tmp_path / "extra.pth", "unexpected 30.weight")
    torch.save([1, 2], tmp_path / "list.pth")
    fails(tmp_path / "list.pth", "not a state dict")


def test_bad_heads_files_are_named(files, tmp_path, monkeypatch):
    torch.save({k: v for k, v in files.heads.items() if k != "lin3.model.1.weight"}, tmp_path / "h.pth")
    with pytest.raises(SoraError, match="h.pth.* lacks lin3.model.1.weight"):
        LPIPS.from_files(files.pth, str(tmp_path / "h.pth"))
    torch.save(files.heads | {"lin0.model.1.weight": -files.heads["lin0.model.1.weight"]}, tmp_path / "neg.pth")
    with pytest.raises(SoraError, match="negative"):
        LPIPS.from_files(files.pth, str(tmp_path / "neg.pth"))
    torch.save(files.heads | {"lin4.model.1.weight": torch.ones(1, 256, 1, 1)}, tmp_path / "narrow.pth")
    with pytest.raises(SoraError, match=r"narrow.pth.*lin4.model.1.weight has shape \(1, 256, 1, 1\)"):
        LPIPS.from_files(files.pth, str(tmp_path / "narrow.pth"))
    # no lpips package and no heads path: say how to get them
    monkeypatch.setattr(lpips_module, "shipped_heads", lambda: None)
    with pytest.raises(SoraError, match="task.lpips_backbone: .*pip install lpips==0.1.4 --no-deps"):
        LPIPS.from_files(files.pth)


# ---------------------------------------------------------------------------------------------------------------
# Against the lpips package itself, where it is installed (`pip install lpips==0.1.4 --no-deps`)
# ---------------------------------------------------------------------------------------------------------------

needs_lpips = pytest.mark.skipif(importlib.util.find_spec("lpips") is None,
                                 reason="the lpips package is not installed (pip install lpips==0.1.4 --no-deps)")


@needs_lpips
def test_shipped_heads_load(files):
    path = lpips_module.shipped_heads()
    assert path is not None and path.endswith("vgg.pth")
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    net = LPIPS.from_files(files.pth)  # the default heads: the package's
    for k, head in enumerate(net.heads):
        torch.testing.assert_close(head.weight, shipped[f"lin{k}.model.1.weight"])


@needs_lpips
def test_matches_the_lpips_package(files, monkeypatch):
    """lpips' own forward, its VGG16 trunk swapped for ours: torchvision (which it imports) is replaced by a shim
    whose vgg16() returns our `features` stack, so scaling, normalisation, heads and averaging are lpips' code."""
    ours = LPIPS.from_files(files.pth)
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.vgg16 = lambda pretrained=True, **_: types.SimpleNamespace(features=ours.features)
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
    before = set(sys.modules)
    try:
        import lpips

        reference = lpips.LPIPS(net="vgg", version="0.1", verbose=False)
        x, y = images(11), images(12)
        with torch.no_grad():
            expected = reference(x, y).flatten()
            got = ours(x, y)
    finally:
        for name in set(sys.modules) - before:  # don't leave the shimmed lpips importable
            del sys.modules[name]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
