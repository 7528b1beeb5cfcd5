"""The caption stage: each kept clip's frames -> a detailed caption by a local vision-language model (the
`Captioner` of sora/curation/captioner.py), batched across clips, resumable like every stage.

The stage reads `frames` frames spread evenly over each clip (uint8 t h w 3, at most `max_side` pixels on the
longer side) and calls `Captioner(model_dir, device=..., frames_per_clip=frames, batch_size=batch_size,
key="--model-dir").caption(clips) -> captions`, one call per task of at least `batch_size` clips. A test or
another engine passes its own object with a `caption(clips)` method in place of the model.
"""

from dataclasses import dataclass, field

from sora.curation.media import clip_frames, sample_indices
from sora.data.decode import BadSample
from sora.errors import SoraError
from sora.settings import Settings, setting


@dataclass
class CaptionArgs(Settings):
    model_dir: str | None = None  # a transformers image-text-to-text model folder (e.g. Qwen2.5-VL-7B-Instruct)
    frames: int = setting(4, ge=1, le=64)  # frames per clip given to the model
    batch_size: int = setting(8, ge=1)  # clips per generate call (and per task)
    max_side: int = setting(448, ge=32)  # frames are read at most this big (the processor resizes them anyway)


def check_model_dir(path: str, key: str = "--model-dir") -> None:
    """SoraError naming `key` unless `path` is a transformers folder of an image-text-to-text model: checked from
    config.json before a run starts its workers (the Captioner checks again, and loads it)."""
    import json
    from pathlib import Path

    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if not path or not Path(path).is_dir():
        raise SoraError(f"{key}={path!r} is not a folder: give an image-text-to-text model saved with save_pretrained")
    try:
        kind = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        raise SoraError(f"{key}={path!r} has no readable config.json: not a transformers model folder") from None
    if kind not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise SoraError(f"{key}={path!r} holds a {kind!r} model, not an image-text-to-text (vision-language) model")


@dataclass
class CaptionWorker:
    """Captions the clips of a task: their frames read source by source, then one `caption` call for all."""

    args: CaptionArgs
    captioner: object | None = field(default=None, repr=False)

    def setup(self, device: str) -> None:
        if self.captioner is None:
            from sora.curation.captioner import Captioner  # the model's code loads only when a stage captions

            self.captioner = Captioner(self.args.model_dir, device=device, frames_per_clip=self.args.frames,
                                       batch_size=self.args.batch_size, key="--model-dir")

    def run_task(self, task: list[tuple[str, list[dict]]]) -> list[dict]:
        out, waiting = [], []  # waiting: (index in out, frames) of the clips to caption
        for source, records in task:
            clips = [(r["start"], r["end"]) for r in records]
            try:
                frames = clip_frames(source, clips, lambda s, e: sample_indices(s, e, self.args.frames),
                                     self.args.max_side)
            except BadSample as e:
                out += [{**r, "skipped": e.reason, "detail": e.detail} for r in records]
                continue
            for r, c in zip(records, clips):
                if c in frames:
                    waiting.append((len(out), frames[c]))  # k h w 3
                    out.append(r)
                else:
                    out.append({**r, "skipped": "unreadable", "detail": "the file ends before the clip does"})
        if waiting:
            captions = self.captioner.caption([f for _, f in waiting])
            for (i, _), caption in zip(waiting, captions, strict=True):
                out[i] = {**out[i], "caption": caption.strip()} if caption and caption.strip() else \
                    {**out[i], "skipped": "no_caption", "detail": "the model wrote an empty caption"}
        return out
