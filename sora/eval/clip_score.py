"""CLIP score and CLIPSIM of generated videos against their prompts, with a CLIP from a local directory.

CLIPSIM (Wu et al. 2021, GODIVA; as NÜWA and Make-A-Video report it) is the cosine similarity of CLIP's image
embedding of each frame and its text embedding of the prompt, averaged over frames and videos. CLIP score
(Hessel et al. 2021, as torchmetrics computes it) is 100 * max(cosine, 0), averaged the same way. Both depend on
which CLIP is used, so the result names the directory it came from.

The model is a `transformers` CLIPModel and its tokenizer, written by `save_pretrained` to a local directory
(`clip.path=DIR`); nothing is downloaded. Frames are prepared as CLIP's image processor does (bicubic resize of
the shorter side, centre crop, CLIP's mean and std), in torch, from the processor config in the directory when
there is one, else from the vision config's image size and OpenAI's constants.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from sora.errors import SoraError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPScorer:
    def __init__(self, path: str | None, device):
        if not path or not Path(path).is_dir():
            raise SoraError(f"clip.path={path!r} is not a directory: CLIP score needs a transformers CLIPModel and "
                            "its tokenizer saved with save_pretrained() at a local path")
        try:
            import transformers

            self.model = transformers.CLIPModel.from_pretrained(path, local_files_only=True).eval().to(device)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise SoraError(f"clip.path={path!r}: not a CLIPModel with its tokenizer "
                            f"({str(e).splitlines()[0][:200]})") from None
        self.path, self.device = str(path), device
        size = self.model.config.vision_config.image_size
        self.size, self.mean, self.std = size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        processor = Path(path) / "preprocessor_config.json"
        if processor.is_file():
            p = json.loads(processor.read_text())
            crop = p.get("crop_size", size)
            self.size = crop.get("height", size) if isinstance(crop, dict) else int(crop)
            self.mean, self.std = tuple(p.get("image_mean", self.mean)), tuple(p.get("image_std", self.std))

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """n 3 h w in [-1, 1] -> n 3 S S, CLIP's input."""
        x = (frames.float() + 1) / 2
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        x = F.interpolate(x, size=(max(self.size, round(h * scale)), max(self.size, round(w * scale))), mode="bicubic",
                          antialias=True, align_corners=False).clamp(0, 1)
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]  # n 3 S S
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def cosines(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """b 3 t h w videos in [-1, 1] and their prompts -> b t cosine similarities of each frame to its prompt."""
        b, t = videos.shape[0], videos.shape[2]
        frames = rearrange(videos, "b c t h w -> (b t) c h w")
        image = self.model.get_image_features(pixel_values=self._pixels(frames).to(self.device))
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        text = self.model.get_text_features(**tokens)
        image, text = (getattr(v, "pooler_output", v) for v in (image, text))  # tensors, or outputs holding them
        image = rearrange(F.normalize(image.float(), dim=-1), "(b t) d -> b t d", b=b, t=t)
        return torch.einsum("btd,bd->bt", image, F.normalize(text.float(), dim=-1))  # b t


def summarize(cos: torch.Tensor, path: str) -> dict:
    """CLIPSIM and CLIP score from all videos' b t cosines."""
    return {"clipsim": float(cos.mean()), "clip_score": float(100 * cos.clamp(min=0).mean()),
            "num_videos": cos.shape[0], "frames_per_video": cos.shape[1], "model": path}
