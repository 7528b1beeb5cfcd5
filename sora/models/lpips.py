"""LPIPS, the learned perceptual distance (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as
a Perceptual Metric"), VGG16 variant, in plain torch: nothing is downloaded and torchvision is never imported.

    d(x, y) = sum_l mean_hw( w_l . (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)^2 )

f_l are VGG16's relu1_2 .. relu5_3 activations (unit-normalised over channels), w_l >= 0 the linear heads that
Zhang et al. fitted to human judgements. Two weight files, both local:
- the backbone: torchvision's `vgg16(weights="IMAGENET1K_V1").features` state dict (`0.weight`, `0.bias`,
  `2.weight`, ...; keys prefixed `features.` as in a whole vgg16 state dict work too), .pth or .safetensors.
  Convert it once on a machine with internet (docs/VAE.md, "LPIPS weights").
- the heads: the `lpips` package's shipped `weights/v0.1/vgg.pth` (`lin{k}.model.1.weight`), found without
  importing lpips (its import pulls torchvision). `pip install lpips` would also pull torchvision (lpips 0.1.4
  requires torchvision>=0.2.1, which pins its own torch), so install it with `pip install lpips==0.1.4 --no-deps`;
  it only has to provide its files. Or give the heads file's path.

`LPIPS.from_files(backbone)` builds the frozen network; `video_lpips` applies it frame by frame to `b c t h w`.
"""

import importlib.util
import os
import random
from typing import Optional

import torch
import torch.nn as nn
from einops import rearrange

from sora.errors import SoraError

# ---------------------------------------------------------------------------------------------------------------
# The VGG16 trunk, in torchvision's layout
# ---------------------------------------------------------------------------------------------------------------

# torchvision's VGG16 "D" configuration (Simonyan & Zisserman 2015): conv widths, "M" = 2x2 max pool. Each conv
# is followed by a ReLU, so module indices run conv 0, relu 1, conv 2, relu 3, pool 4, ... as in its state dict.
# The last pool (index 30) has no weights and LPIPS does not use it, so the stack stops at relu5_3 (index 29).
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: lpips' vgg16 slice ends
TAP_CHANNELS = (64, 128, 256, 512, 512)

# lpips' ScalingLayer: ImageNet's mean and std re-expressed for inputs in [-1, 1] (shift = 2 mean - 1,
# scale = 2 std), the input scaling its v0.1 heads were fitted with.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def vgg16_features() -> nn.Sequential:
    """VGG16's `features` up to relu5_3, with torchvision's module indices (so its state dict loads directly)."""
    layers, c_in = [], 3
    for width in VGG16_LAYOUT:
        if width == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            # not in-place (torchvision's are): the tapped activations must survive for the backward pass
            layers += [nn.Conv2d(c_in, width, kernel_size=3, padding=1), nn.ReLU()]
            c_in = width
    return nn.Sequential(*layers)


def normalize_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """b c h w -> b c h w, unit length over channels at each pixel (lpips' normalize_tensor, same eps)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


# ---------------------------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------------------------


class LPIPS(nn.Module):
    """Frozen LPIPS-VGG16: `forward(x, y)` with images `b 3 h w` in [-1, 1] -> per-sample distance `b`.

    `LPIPS()` is untrained (random trunk, random non-negative heads); `LPIPS.from_files` loads the real weights.
    """

    def __init__(self):
        super().__init__()
        self.features = vgg16_features()
        # lpips' NetLinLayer: a 1x1 conv to one channel, no bias (its Dropout is inactive in eval)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in TAP_CHANNELS)
        with torch.no_grad():
            for head in self.heads:
                head.weight.abs_()  # the fitted heads are non-negative, so a distance is >= 0
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        """Always in eval mode: a loss network, never trained (Lightning calls .train() on every submodule)."""
        return super().train(False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """b 3 h w in [-1, 1] -> the 5 channel-normalised activations relu1_2 .. relu5_3."""
        h = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)  # b c h w (halved by each pool)
            if i in TAPS:
                out.append(normalize_channels(h))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """b 3 h w, b 3 h w (in [-1, 1]) -> b: the LPIPS distance of each pair."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS takes two b 3 h w images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        fx = self.taps(x)
        # the target usually needs no gradient: don't keep its activations for backward
        with torch.set_grad_enabled(torch.is_grad_enabled() and y.requires_grad):
            fy = self.taps(y)
        dist = 0
        for head, a, b in zip(self.heads, fx, fy):
            dist = dist + head((a - b).pow(2)).mean(dim=(1, 2, 3))  # b 1 h w -> b (spatial mean)
        return dist

    # -- loading --------------------------------------------------------------------------------------------------

    @classmethod
    def from_files(cls, backbone: str, heads: Optional[str] = None, key: str = "task.lpips_backbone") -> "LPIPS":
        """The frozen network from a VGG16 `features` state dict and lpips' heads: from `heads`, else from the
        backbone file itself when it holds them (`features.*` beside `lin{k}.model.1.weight`: a whole LPIPS in one
        file), else the lpips package's."""
        net = cls()
        raw = _read(backbone, key)
        _load_into(net.features, _features_state(raw), backbone, key, "a torchvision VGG16 `features` state dict")
        if heads is None and "lin0.model.1.weight" in raw:
            heads = backbone
        if heads is None:
            heads = shipped_heads()
            if heads is None:
                raise SoraError(f"{key}: LPIPS needs its linear heads: `pip install lpips==0.1.4 --no-deps` "
                                "(it ships them in weights/v0.1/vgg.pth) or give the heads file's path")
        state = raw if heads == backbone else _read(heads, f"{key} (heads)")
        state = {f"{i}.weight": state.get(f"lin{i}.model.1.weight") for i in range(len(TAP_CHANNELS))}
        missing = [f"lin{k[0]}.model.1.weight" for k, v in state.items() if v is None]
        if missing:
            raise SoraError(f"{key}: LPIPS heads file {heads!r} lacks {', '.join(missing)} (not lpips' vgg.pth)")
        for i, c in enumerate(TAP_CHANNELS):
            if state[f"{i}.weight"].shape != (1, c, 1, 1):
                raise SoraError(f"{key}: LPIPS heads file {heads!r}: lin{i}.model.1.weight has shape "
                                f"{tuple(state[f'{i}.weight'].shape)}, expected (1, {c}, 1, 1)")
        if any(bool((v < 0).any()) for v in state.values()):
            raise SoraError(f"{key}: LPIPS heads file {heads!r} has negative weights (not lpips' fitted heads)")
        _load_into(net.heads, state, heads, f"{key} (heads)", "lpips' VGG heads (lin{k}.model.1.weight)")
        return net.requires_grad_(False).eval()


def shipped_heads() -> Optional[str]:
    """The lpips package's VGG heads file, found without importing lpips (its import needs torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "weights", "v0.1", "vgg.pth")
        if os.path.isfile(path):
            return path
    return None


def _read(path: str, key: str) -> dict:
    """A state dict from .safetensors or a torch file (weights_only: loading cannot run code)."""
    if not os.path.isfile(str(path)):
        raise SoraError(f"{key}: {path!r} is not a file")
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: torch, pickle and safetensors each raise their own
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise SoraError(f"{key}: cannot read {path!r} as weights ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise SoraError(f"{key}: {path!r} is not a state dict (a mapping of names to tensors)")
    return state


def _features_state(state: dict) -> dict:
    """Accept `features` alone (`0.weight`) or a whole vgg16 state dict (`features.0.weight`, `classifier...`)."""
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return {k: v for k, v in state.items() if not k.startswith("lin")}  # a whole-LPIPS file's heads are read apart


def _load_into(module: nn.Module, state: dict, path: str, key: str, what: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"missing {', '.join(missing[:4])}" if missing else f"unexpected {', '.join(unexpected[:4])}"
        raise SoraError(f"{key}: {path!r} is not {what} ({detail})")
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise SoraError(f"{key}: {path!r} is not {what} ({k} has shape {tuple(state[k].shape)}, "
                            f"expected {tuple(v.shape)})")
    module.load_state_dict({k: v.float() for k, v in state.items()})


# ---------------------------------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------------------------------


def video_lpips(net: LPIPS, x: torch.Tensor, y: torch.Tensor, max_frames: Optional[int] = None,
                rng: Optional[random.Random] = None) -> torch.Tensor:
    """Mean LPIPS over the frames of two `b c t h w` videos in [-1, 1] -> scalar.

    LPIPS is an image metric, so frames are compared one by one (as Open-Sora-Plan's and WF-VAE's video VAE losses
    do). `max_frames` bounds the cost: that many frames, the same random ones for every clip, stand for the rest
    (an unbiased estimate of the all-frames mean).
    """
    t = x.shape[2]
    if max_frames is not None and t > max_frames:
        frames = sorted((rng or random).sample(range(t), max_frames))
        x, y = x[:, :, frames], y[:, :, frames]  # b c max_frames h w
    x = rearrange(x, "b c t h w -> (b t) c h w")
    y = rearrange(y, "b c t h w -> (b t) c h w")
    return net(x, y).mean()
