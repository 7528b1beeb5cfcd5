"""CLIP's image preprocessing in torch, shared by the CLIP score (sora/eval) and curation's embeddings.

As CLIP's image processor does it: bicubic resize of the shorter side, centre crop, CLIP's mean and std, read from
the folder's preprocessor_config.json when there is one, else the vision config's image size and OpenAI's constants.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipPreprocess:
    size: int  # the square side CLIP takes
    mean: tuple
    std: tuple

    @classmethod
    def of(cls, model, path: str | Path) -> "ClipPreprocess":
        """From a loaded CLIPModel and its folder."""
        size = model.config.vision_config.image_size
        out = cls(size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        processor = Path(path) / "preprocessor_config.json"
        if processor.is_file():
            p = json.loads(processor.read_text())
            crop = p.get("crop_size", size)
            out.size = crop.get("height", size) if isinstance(crop, dict) else int(crop)
            out.mean, out.std = tuple(p.get("image_mean", out.mean)), tuple(p.get("image_std", out.std))
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """n 3 h w in [0, 1] -> n 3 S S, CLIP's input."""
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        x = F.interpolate(x, size=(max(self.size, round(h * scale)), max(self.size, round(w * scale))), mode="bicubic",
                          antialias=True, align_corners=False).clamp(0, 1)
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]  # n 3 S S
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std
