"""CLIP image embeddings and LAION's aesthetic predictor, both from local files (nothing is downloaded).

The aesthetic score is LAION's "improved aesthetic predictor" (Schuhmann, LAION-5B, 2022; the one Open-Sora 1.2
and Open-Sora-Plan filter with): an MLP 768-1024-128-64-16-1 over the L2-normalised CLIP ViT-L/14 image embedding,
trained to predict the 1-10 ratings of SAC, LAION-Logos and AVA (`sac+logos+ava1-l14-linearMSE.pth`). Any CLIP
works whose projection size matches the MLP's input; the score only means the 1-10 scale with the ViT-L/14 it was
trained on.
"""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sora.errors import SoraError
from sora.models.clip_image import ClipPreprocess


def check_clip_dir(path: str | None, key: str = "--clip-dir") -> int:
    """The projection size of the CLIPModel saved at `path`; SoraError naming `key` for a missing folder or a folder
    holding another kind of model. Reads config.json only: cheap enough to check before a run starts."""
    config = Path(path or "") / "config.json"
    if not path or not Path(path).is_dir():
        raise SoraError(f"{key}={path!r} is not a folder: give a transformers CLIPModel saved with save_pretrained()")
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError):
        raise SoraError(f"{key}={path!r} has no readable config.json: not a transformers model folder") from None
    if cfg.get("model_type") != "clip":
        raise SoraError(f"{key}={path!r} holds a {cfg.get('model_type')!r} model, not a CLIPModel (model_type 'clip')")
    return int(cfg.get("projection_dim", 512))


class ClipImageEmbedder:
    """uint8 frames -> L2-normalised CLIP image embeddings, preprocessed as CLIP's image processor does (bicubic
    resize of the shorter side, centre crop, its mean and std; from preprocessor_config.json when there is one)."""

    def __init__(self, path: str, device: str = "cpu"):
        check_clip_dir(path)
        import transformers

        try:
            self.model = transformers.CLIPModel.from_pretrained(path, local_files_only=True).eval().to(device)
        except (OSError, ValueError, KeyError) as e:
            raise SoraError(f"--clip-dir={path!r}: not a CLIPModel ({str(e).splitlines()[0][:200]})") from None
        self.device, self.preprocess = device, ClipPreprocess.of(self.model, path)

    def _pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 n h w 3 -> n 3 S S, CLIP's input."""
        return self.preprocess(rearrange(torch.from_numpy(frames).float() / 255, "n h w c -> n c h w"))

    @torch.no_grad()
    def embed(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 n h w 3 -> n d, unit length (float32, on the CPU)."""
        out = self.model.get_image_features(pixel_values=self._pixels(frames).to(self.device))
        out = getattr(out, "pooler_output", out)  # a tensor, or an output holding it (transformers 5)
        return F.normalize(out.float(), dim=-1).cpu()


# ---------------------------------------------------------------------------------------------------------------
# LAION's aesthetic MLP
# ---------------------------------------------------------------------------------------------------------------


class AestheticMLP(nn.Module):
    """LAION's improved aesthetic predictor; its layer indices are the released state dict's keys (layers.N.*)."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """n d unit-length CLIP image embeddings -> n scores."""
        return self.layers(embedding).squeeze(-1)


def load_aesthetic_mlp(path: str | None, input_size: int, key: str = "--aesthetic-mlp") -> AestheticMLP:
    """The MLP's weights from a .pth (a state dict, read with weights_only) or .safetensors file; SoraError naming
    `key` for a missing file, a file of other weights, or an input size other than the CLIP's projection size."""
    if not path or not Path(path).is_file():
        raise SoraError(f"{key}={path!r} is not a file: give LAION's sac+logos+ava1-l14-linearMSE.pth (or its "
                        ".safetensors)")
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load's errors for a file that is not a state dict vary by version
        raise SoraError(f"{key}={path!r}: not a weights file ({str(e).splitlines()[0][:160]})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    first = state.get("layers.0.weight") if isinstance(state, dict) else None
    if first is None or first.ndim != 2:
        raise SoraError(f"{key}={path!r}: not LAION's aesthetic MLP (no layers.0.weight)")
    if first.shape[1] != input_size:
        raise SoraError(f"{key}={path!r} takes {first.shape[1]}-d embeddings but the CLIP gives {input_size}-d: use "
                        "the CLIP it was trained on (ViT-L/14 for LAION's weights)")
    mlp = AestheticMLP(input_size)
    try:
        mlp.load_state_dict(state)
    except RuntimeError as e:
        raise SoraError(f"{key}={path!r}: not LAION's aesthetic MLP ({str(e).splitlines()[0][:160]})") from None
    return mlp.eval()
