"""Fréchet Video Distance (Unterthiner et al. 2018) by the StyleGAN-V protocol (Skorokhodov et al. 2022, sec. 4.1).

FVD numbers in papers do not reproduce when their protocols differ: which I3D weights, how many clips, how many
frames, how clips are cut and resized, biased or unbiased covariances. This file follows StyleGAN-V's
`fvd2048_16f`, whose code the field reuses:
- features: the I3D network trained on Kinetics-400, as the TorchScript file StyleGAN-V distributes
  (`i3d_torchscript.pt`, a port of the TF-Hub model of the original FVD code), called with
  `rescale=True, resize=True, return_features=True`: uint8 values in [0, 255] as floats, `b c t h w`, which it
  rescales to [-1, 1] and resizes to 224x224 itself; the 400-d logits before the softmax are the features;
- clips: 16 consecutive frames (at the frame stride the model trained on), from frame 0; clips shorter than that
  are left out, never padded; 2048 real and 2048 generated clips (fewer real ones when the data holds fewer: the
  result states both numbers);
- the distance: ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) with unbiased covariances (np.cov) and
  scipy's sqrtm, its imaginary part dropped, as StyleGAN-V computes it.

Nothing is downloaded: the TorchScript file comes from a local path (`fvd.i3d=PATH`), and its SHA-256 goes in the
result so that two numbers can be checked to come from the same weights.
"""

import hashlib
from pathlib import Path

import numpy as np
import torch

from sora.errors import SoraError
from sora.inference.pipeline import SampleSettings, check_given_frames, check_settings, check_size

PROTOCOL = "StyleGAN-V fvd2048_16f (Skorokhodov et al. 2022): I3D TorchScript features, 16 frames from frame 0"


def check_i3d(path: str | None) -> None:
    """A one-line error naming fvd.i3d unless it is a file."""
    if not path or not Path(path).is_file():
        raise SoraError(f"fvd.i3d={path!r} is not a file: FVD needs StyleGAN-V's i3d_torchscript.pt at a local path "
                        "(docs/EVALUATION.md, \"Evaluating a checkpoint\", says where to get it)")


def fvd_settings(bundle, settings: SampleSettings, num_frames: int) -> SampleSettings:
    """The sampler settings of FVD's generated clips: exactly `num_frames` (fvd.num_frames) frames, as the real
    clips have, or a one-line error naming fvd.num_frames (or data.height / data.width) with the nearest frame
    counts the checkpoint can make at once. A clip longer than the checkpoint's window is made window by window,
    where the checkpoint can be given frames."""
    window = settings.window
    if num_frames <= window:
        check_size(bundle.geometry, num_frames, settings.height, settings.width,
                   ("fvd.num_frames", "data.height", "data.width"))
    else:
        check_given_frames(bundle, f"fvd.num_frames={num_frames} is more than its {window}-frame window, and each "
                                   "later window is given the end of the one before")
    long = settings.override(num_frames=num_frames)
    check_settings(bundle, long)
    return long


def load_i3d(path: str | None, device) -> tuple[torch.jit.ScriptModule, str]:
    """(the TorchScript detector, its file's sha256) from a local file; a one-line error naming fvd.i3d."""
    check_i3d(path)
    try:
        model = torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # TorchScript raises several types for a file that is not one
        raise SoraError(f"fvd.i3d={path!r} is not a TorchScript file: {str(e).splitlines()[0][:200]}") from None
    return model, hashlib.sha256(Path(path).read_bytes()).hexdigest()


def to_uint8_values(video: torch.Tensor) -> torch.Tensor:
    """b c t h w in [-1, 1] -> the same in [0, 255], rounded to whole grey levels as a video file holds them."""
    return ((video.float() + 1) * 127.5).round().clamp(0, 255)


@torch.no_grad()
def i3d_features(detector, video: torch.Tensor, device) -> np.ndarray:
    """b c t h w in [-1, 1] -> b x D float64 features (StyleGAN-V's detector call)."""
    x = to_uint8_values(video).to(device)
    feats = detector(x, rescale=True, resize=True, return_features=True)
    return feats.detach().double().cpu().numpy()


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, unbiased covariance) of n x D features."""
    if len(features) < 2:
        raise SoraError(f"FVD needs at least 2 clips on each side, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))."""
    import scipy.linalg

    covmean, _ = scipy.linalg.sqrtm(np.dot(sigma1, sigma2), disp=False)
    return float(np.real(np.square(mu1 - mu2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean)))
