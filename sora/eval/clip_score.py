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

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from sora.errors import SoraError
from sora.models.clip_image import ClipPreprocess


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
        self.preprocess = ClipPreprocess.of(self.model, path)

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """n 3 h w in [-1, 1] -> n 3 S S, CLIP's input."""
        return self.preprocess((frames.float() + 1) / 2)

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
