"""The score stage: each clip's motion, sharpness, text coverage and (given a CLIP and LAION's MLP) aesthetic score,
from a few frames sampled evenly over it. Scores go into the record's `scores` and travel into each shard sample's
json (docs/CURATION.md lists each, its scale and a threshold to start from).

- motion: mean optical-flow magnitude (OpenCV's DIS, Kroeger et al. 2016) between each sampled frame and the next,
  in pixels per frame at 256 pixels on the longer side: ~0 for a still shot, the static clips Open-Sora drops.
- sharpness: variance of the Laplacian of the grey frame at 512 pixels on the longer side (Pech-Pacheco et al.
  2000); low means blurred or out of focus.
- text: the fraction of the frame that RapidOCR's text detector (PP-OCR DBNet, ONNX; its package ships the models)
  covers with boxes its recogniser reads as text, averaged over frames: captions, subtitles, credits, screens.
- aesthetic: LAION's aesthetic MLP over CLIP image embeddings, averaged over frames (clip_models.py).
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

from sora.curation.clip_models import AestheticMLP, ClipImageEmbedder, check_clip_dir, load_aesthetic_mlp
from sora.curation.media import map_clip_frames, sample_indices
from sora.errors import SoraError
from sora.settings import Settings, setting

SCORERS = ("motion", "sharpness", "text", "aesthetic")
MOTION_SIDE, SHARPNESS_SIDE = 256, 512


@dataclass
class ScoreArgs(Settings):
    scores: list[str] = setting(factory=lambda: ["motion", "sharpness", "text"], choices=lambda: SCORERS, each=True)
    frames: int = setting(4, ge=1, le=64)  # frames sampled per clip (motion: each and the frame after it)
    max_side: int = setting(640, ge=64)  # frames are read at most this big (longer side) for text and CLIP
    clip_dir: str | None = None  # a transformers CLIPModel folder (aesthetic)
    aesthetic_mlp: str | None = None  # LAION's MLP weights, .pth or .safetensors (aesthetic)

    def check(self, at: str = "") -> None:
        if not self.scores:
            raise SoraError(f"{at}scores is empty: name at least one of {', '.join(SCORERS)}")
        if "aesthetic" in self.scores and not (self.clip_dir and self.aesthetic_mlp):
            raise SoraError(f"{at}scores includes aesthetic: give {at}clip_dir (a CLIPModel folder) and "
                            f"{at}aesthetic_mlp (LAION's MLP weights)")


def check_models(args: ScoreArgs) -> None:
    """The model files a run will load, checked before it starts (config and weights' shapes, not the CLIP)."""
    if "aesthetic" in args.scores:
        load_aesthetic_mlp(args.aesthetic_mlp, check_clip_dir(args.clip_dir))


# ---------------------------------------------------------------------------------------------------------------
# Scores of frames
# ---------------------------------------------------------------------------------------------------------------


def gray(frame: np.ndarray, side: int) -> np.ndarray:
    """uint8 h w 3 -> uint8 h' w' grey, scaled so that its longer side is `side`."""
    h, w = frame.shape[:2]
    s = side / max(h, w)
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def motion_score(pairs: np.ndarray) -> float:
    """uint8 k 2 h w 3 (each sampled frame and the next) -> mean flow magnitude, pixels per frame at 256 px."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    mags = []
    for a, b in pairs:
        flow = dis.calc(gray(a, MOTION_SIDE), gray(b, MOTION_SIDE), None)  # h w 2
        mags.append(float(np.linalg.norm(flow, axis=-1).mean()))
    return float(np.mean(mags))


def sharpness_score(frames: np.ndarray) -> float:
    """uint8 k h w 3 -> mean variance of the Laplacian at 512 px (low: blurred)."""
    return float(np.mean([cv2.Laplacian(gray(f, SHARPNESS_SIDE), cv2.CV_64F).var() for f in frames]))


class TextDetector:
    """RapidOCR's detector, its boxes confirmed by its recogniser: the fraction of a frame inside text boxes.

    The detector alone (DBNet) marks textured regions as text (grass in Big Buck Bunny covered 40% of a frame), so a
    box counts only when the recogniser reads at least two characters in it with RapidOCR's own confidence threshold
    (Global.text_score, 0.5); reading the few boxes found costs little beside detecting them.
    """

    def __init__(self, max_side: int = 640):
        try:
            from rapidocr import RapidOCR
        except ImportError as e:  # rapidocr, or the onnxruntime it runs on
            raise SoraError(f"the text score needs rapidocr and onnxruntime (pip install '.[curate]'): {e}") from None
        # RapidOCR's default scales a frame's shorter side up to 736 px: 3-4 s a frame on a CPU, and it reads a
        # small frame's texture as text. Its longer side at most max_side instead (text in video is large).
        self.engine = RapidOCR(params={"Global.use_cls": False, "Global.log_level": "error",
                                       "Det.limit_type": "max", "Det.limit_side_len": max_side})

    def coverage(self, frame: np.ndarray) -> float:
        """uint8 h w 3 (RGB) -> fraction of its area covered by text boxes read as text (their union)."""
        out = self.engine(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), use_det=True, use_cls=False, use_rec=True)
        boxes, texts = getattr(out, "boxes", None), getattr(out, "txts", None)
        if boxes is None or texts is None:
            return 0.0
        read = [b for b, t in zip(boxes, texts) if len(t.strip()) >= 2]  # low-confidence reads are already gone
        if not read:
            return 0.0
        mask = np.zeros(frame.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(b).astype(np.int32) for b in read], 1)
        return float(mask.mean())


# ---------------------------------------------------------------------------------------------------------------
# The stage's work on one source
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Scorer:
    """Scores the clips of one source (read in one pass); models are loaded once per worker by `setup`."""

    args: ScoreArgs
    text: TextDetector | None = field(default=None, repr=False)
    clip: ClipImageEmbedder | None = field(default=None, repr=False)
    mlp: AestheticMLP | None = field(default=None, repr=False)

    def setup(self, device: str) -> None:
        if "text" in self.args.scores:
            self.text = TextDetector(self.args.max_side)
        if "aesthetic" in self.args.scores:
            self.clip = ClipImageEmbedder(self.args.clip_dir, device)
            self.mlp = load_aesthetic_mlp(self.args.aesthetic_mlp, check_clip_dir(self.args.clip_dir)).to(device)

    def _indices(self, start: int, end: int) -> list[int]:
        """The sampled frames, each followed by the next (the motion pair): 2k indices."""
        picks = sample_indices(start, end - 1, self.args.frames) if end - start > 1 else [start, start]
        return [i for p in picks for i in (p, min(p + 1, end - 1))]

    def scores(self, frames: np.ndarray) -> dict:
        """uint8 2k h w 3 (pairs) -> {score: value}."""
        pairs = frames.reshape(-1, 2, *frames.shape[1:])  # k 2 h w 3
        firsts, out = pairs[:, 0], {}
        if "motion" in self.args.scores:
            out["motion"] = round(motion_score(pairs), 4)
        if "sharpness" in self.args.scores:
            out["sharpness"] = round(sharpness_score(firsts), 2)
        if "text" in self.args.scores:
            out["text"] = round(float(np.mean([self.text.coverage(f) for f in firsts])), 5)
        if "aesthetic" in self.args.scores:
            import torch

            with torch.no_grad():
                emb = self.clip.embed(firsts).to(next(self.mlp.parameters()).device)  # k d
                out["aesthetic"] = round(float(self.mlp(emb).mean()), 4)
        return out

    def run(self, source: str, records: list[dict]) -> list[dict]:
        return map_clip_frames(source, records, self._indices, self.args.max_side,
                               lambda r, frames: {**r, "scores": {**r.get("scores", {}), **self.scores(frames)}})
