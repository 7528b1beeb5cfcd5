"""Report what a video says about itself: its C2PA manifest and its invisible watermark.

    python -m sora.provenance verify FILE [FILE ...] [--json]

Per file: the manifest (valid / tampered / absent / unsupported: a format that cannot carry one, and its claims)
and the watermark (found or not, payload, confidence). A valid manifest that says no watermark was embedded (frames
too small to hold one) is believed: the watermark reads "not embedded (frames under N px)" and the detector does not
run; without a valid manifest the detector always runs. Works on any video, ours or not (mp4, GIF, WebM, ...).
Exit status 1 when any manifest is tampered, 2 when a file is not a readable video (one line each), else 0.
"""

import json
import sys
from pathlib import Path

import av
import numpy as np

from sora.errors import ArgumentParser, SoraError, exit_on_user_error
from sora.provenance import manifest, watermark

MAX_FRAMES = 64  # the detector averages frames: more than this adds time, not evidence


def verify_file(path) -> dict:
    """{"file", "manifest", "claims", "watermark": {"found", "payload", "confidence"} or "not embedded (...)"};
    SoraError if not a video."""
    path = Path(path)
    if not path.is_file():
        raise SoraError("no such file" if not path.is_dir() else "a folder")
    frames = first_frames(path)
    data = path.read_bytes()
    report = read_manifest(data)
    claims = report.claims
    if claims is not None and report.failures:
        claims = {**claims, "failures": report.failures}
    mark = ((claims or {}).get("generation") or {}).get("watermark") or {}
    if report.status == "valid" and mark.get("embedded") is False:  # signed: the frames were too small to hold it
        return {"file": str(path), "manifest": report.status, "claims": claims,
                "watermark": f"not embedded ({mark.get('reason', 'no reason given')})"}
    found = watermark.detect(frames)
    return {"file": str(path), "manifest": report.status, "claims": claims, "watermark": found.as_dict()}


# Leading bytes of the containers whose manifests we read, and their MIME types.
_MAGIC = ((4, b"ftyp", "video/mp4"), (0, b"GIF87a", "image/gif"), (0, b"GIF89a", "image/gif"),
          (0, b"\x1aE\xdf\xa3", "video/webm"))


def read_manifest(data: bytes) -> manifest.ManifestReport:
    """The manifest of a file's bytes, by its container: read where C2PA can carry one, "unsupported" where the
    format cannot (WebM), "absent" for a container we do not read."""
    mime = next((m for at, magic, m in _MAGIC if data[at : at + len(magic)] == magic), None)
    if mime is None:
        return manifest.ManifestReport("absent")
    if not manifest.can_sign(mime):
        return manifest.ManifestReport("unsupported")
    return manifest.read_manifest(data, mime)


def first_frames(path: Path, limit: int = MAX_FRAMES) -> np.ndarray:
    """The first `limit` frames as uint8 t h w 3; SoraError (one line) for anything that is not a video."""
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == limit:
                    break
    except (av.FFmpegError, IndexError, ValueError, OSError) as e:
        raise SoraError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if not frames:
        raise SoraError("no video frames")
    return np.stack(frames)


def describe(r: dict) -> str:
    """One human-readable line."""
    c = r["claims"] or {}
    m = r["manifest"]
    if m == "valid":
        who = c.get("signer") or "unknown signer"
        trust = "trusted" if c.get("trusted") else ("an untrusted development key" if c.get("development_key")
                                                     else "untrusted certificate")
        gen = c.get("generation") or {}
        model = (gen.get("model") or {}).get("sha256", "")
        src = (c.get("digital_source_type") or "").rsplit("/", 1)[-1]
        m = f"manifest valid: {c.get('generator')}, {src}, model {model[:16]}, signed by '{who}' ({trust})"
    elif m == "tampered":
        m = f"manifest TAMPERED ({', '.join(c.get('failures', [])) or 'signature or hash does not hold'})"
    elif m == "unsupported":
        m = f"no manifest (c2pa-python {manifest.c2pa_version()} cannot put one in this format)"
    else:
        m = "manifest absent"
    w = r["watermark"]
    if isinstance(w, str):
        w = f"watermark {w}"
    else:
        w = (f"watermark found, payload {w['payload'] or '(unreadable)'}, confidence {w['confidence']:.6f}"
             if w["found"] else "watermark not found")
    return f"{r['file']}: {m}; {w}"



@exit_on_user_error
def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m sora.provenance verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    args = parser.parse_args(argv)
    status = 0
    for f in args.files:
        try:
            r = verify_file(f)
        except SoraError as e:
            print(f"{f}: not a readable video ({str(e).splitlines()[0]})", file=sys.stderr, flush=True)
            status = max(status, 2)
            continue
        print(json.dumps(r) if args.json else describe(r), flush=True)
        if r["manifest"] == "tampered":
            status = max(status, 1)
    return status
