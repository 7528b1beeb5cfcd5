"""Re-captioning: a local vision-language model writes a detailed caption of each clip from a few of its frames.

    captioner = Captioner("models/Qwen2.5-VL-7B-Instruct", device="cuda", frames_per_clip=4, batch_size=8)
    captions = captioner.caption([frames_a, frames_b])       # each uint8 t h w 3 -> one string each

Sora (Brooks et al. 2024, "re-captioning") trains on captions written by a captioner, not on alt-text; Open-Sora
1.2 and Open-Sora-Plan caption their clips with an open vision-language model the same way. Any model transformers
loads with `AutoModelForImageTextToText` and `AutoProcessor` works (Qwen2.5-VL, LLaVA, ...): the clip's frames go
in as images of one user turn, before the prompt, through the processor's own chat template. Decoding is greedy,
so a clip gets the same caption every time; batches are padded on the left, so on CPU a clip's caption in a batch
is the one it gets alone (on GPU, bf16 matmuls of another batch shape may round differently).

Weights are read from a local folder only (save_pretrained's layout: config.json, the weights, the processor's
files); nothing is downloaded. A folder of the wrong kind is one line naming it.
"""

import logging

import numpy as np

from sora.curation.local_models import greedy, load_local
from sora.devices import resolve_device
from sora.errors import SoraError

log = logging.getLogger(__name__)

DEFAULT_PROMPT = ("These are frames of one video clip, in order. Describe the video in detail in one paragraph: "
                  "the subjects and their appearance, what moves and how, the setting, the lighting, and the camera's "
                  "framing and motion. Describe only what is visible; do not mention frames or images.")

# ---------------------------------------------------------------------------------------------------------------
# Captioning
# ---------------------------------------------------------------------------------------------------------------


def pick_frames(clip: np.ndarray, count: int) -> np.ndarray:
    """`count` frames spread evenly over a t h w 3 clip, first and last included (all of them when t <= count)."""
    t = clip.shape[0]
    if t <= count:
        return clip
    return clip[np.linspace(0, t - 1, count).round().astype(int)]  # count h w 3


class Captioner:
    """A local image-text-to-text model that captions clips (uint8 t h w 3 frames) in batches, greedily."""

    def __init__(self, model_dir: str, device: str = "cpu", frames_per_clip: int = 4, max_new_tokens: int = 120,
                 batch_size: int = 4, prompt: str = DEFAULT_PROMPT, key: str = "model_dir"):
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        for name, value in (("frames_per_clip", frames_per_clip), ("max_new_tokens", max_new_tokens),
                            ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SoraError(f"captioner: {name} must be an integer >= 1, got {value!r}")
        if not str(prompt).strip():
            raise SoraError("captioner: prompt is empty: say what the caption should describe")
        self.model_dir, self.device = str(model_dir), resolve_device(device)
        self.frames_per_clip, self.max_new_tokens, self.batch_size = frames_per_clip, max_new_tokens, batch_size
        self.prompt = prompt
        self.model, self.processor = load_local(self.model_dir, AutoModelForImageTextToText, AutoProcessor,
                                                "an image-text-to-text (vision-language)",
                                                MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, key, self.device)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None or self.processor.chat_template is None and tokenizer.chat_template is None:
            raise SoraError(f"{key}={self.model_dir!r}: its processor has no tokenizer with a chat template")
        tokenizer.padding_side = "left"  # generation continues every row from its last real token
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def conversation(self, clip: np.ndarray) -> list[dict]:
        """One user turn: the clip's sampled frames as images, then the prompt."""
        from PIL import Image

        frames = pick_frames(clip, self.frames_per_clip)
        images = [{"type": "image", "image": Image.fromarray(f)} for f in frames]
        return [{"role": "user", "content": [*images, {"type": "text", "text": self.prompt}]}]

    def caption(self, clips: list[np.ndarray]) -> list[str]:
        """One caption per clip (uint8 t h w 3, t >= 1), in order, `batch_size` clips per generate call."""
        for i, clip in enumerate(clips):
            if not isinstance(clip, np.ndarray) or clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3 \
                    or clip.shape[0] < 1:
                shape = getattr(clip, "shape", None)
                raise SoraError(f"captioner: clip {i} must be uint8 frames of shape (t, h, w, 3), t >= 1; got "
                                f"{getattr(clip, 'dtype', type(clip).__name__)} {shape}")
        return [c for start in range(0, len(clips), self.batch_size)
                for c in self._batch(clips[start : start + self.batch_size])]

    def _batch(self, clips: list[np.ndarray]) -> list[str]:
        import torch

        inputs = self.processor.apply_chat_template(
            [self.conversation(c) for c in clips], add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt", processor_kwargs={"padding": True})
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **greedy(self.max_new_tokens,
                                                         self.processor.tokenizer.pad_token_id))  # b prompt+new
        new = out[:, inputs["input_ids"].shape[1] :]  # b new: the prompt is echoed first
        texts = self.processor.batch_decode(new, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]
