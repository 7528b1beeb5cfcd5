"""Provenance: a signed manifest verifies, a changed byte is tampering, a stripped one is absent while the
watermark stays, a non-video gets one line, and the watermark survives what videos meet on the way to a viewer."""

import json
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from sora.data.moving_shapes import render_clip
from sora.data.video_io import encode_mp4, read_video
from sora.errors import SoraError
from sora.provenance import certs, verify, watermark
from sora.provenance.stamp import Generation, Provenance, payload_of, write_generated

GEN = Generation("ab" * 32, "ema", {"steps": 2, "sampler": "euler"}, 7, "a red square moving right")


def clip(seed: int, t: int = 8, h: int = 128, w: int = 160) -> torch.Tensor:
    """A still scene: a gradient, a square and a little noise (c t h w in [-1, 1]). Moving, textured footage is
    harder for the detector: bench/provenance_watermark.py measures it on real clips (docs/BENCHMARKS.md)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    colour = torch.rand(3, 1, 1, generator=g) * 0.6 - 0.3
    video = (0.4 * (yy * colour[0] + xx * colour[1]) + colour[2]).expand(3, t, h, w).clone()
    video[:, :, 40:80, 30:70] = torch.rand(3, 1, 1, generator=g)[:, None]
    return (video + 0.02 * torch.randn(video.shape, generator=g)).clamp(-1, 1)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SORA_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture
def signed(home):
    return write_generated(home / "x.mp4", clip(0), 8, Provenance(), GEN)


def test_a_signed_file_verifies_with_its_claims_and_watermark(signed, home):
    r = verify.verify_file(signed)
    assert set(r) == {"file", "manifest", "claims", "watermark"}
    assert set(r["watermark"]) == {"found", "payload", "confidence"}
    assert r["manifest"] == "valid"
    c = r["claims"]
    assert c["digital_source_type"].endswith("/trainedAlgorithmicMedia") and c["generator"].startswith("sora ")
    assert c["generation"]["model"]["sha256"] == GEN.model_sha256 and "prompt" not in c["generation"]
    assert c["development_key"] and not c["trusted"]  # the local key made under SORA_HOME, trusted by no one
    assert (home / "home" / "c2pa" / "chain.pem").is_file()
    assert r["watermark"]["found"] and r["watermark"]["payload"] == c["generation"]["watermark"]["payload"]
    assert int(r["watermark"]["payload"], 16) >> 8 == int(GEN.model_sha256[:2], 16)


def test_flipping_one_byte_of_video_data_is_tampering(signed, capsys):
    data = bytearray(signed.read_bytes())
    data[data.find(b"mdat") + 64] ^= 0x01
    signed.write_bytes(bytes(data))
    assert verify.main([str(signed), "--json"]) == 1
    r = json.loads(capsys.readouterr().out)
    assert r["manifest"] == "tampered" and "assertion.bmffHash.mismatch" in r["claims"]["failures"]


def test_a_stripped_manifest_reads_absent_and_the_watermark_is_still_found(signed, tmp_path):
    stripped = tmp_path / "stripped.mp4"  # a remux (ffmpeg -c copy) keeps the frames and drops the uuid box
    with av.open(str(signed)) as src, av.open(str(stripped), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    r = verify.verify_file(stripped)
    assert r["manifest"] == "absent" and r["claims"] is None
    assert r["watermark"]["found"]


def test_verify_on_a_non_video_prints_one_line(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    assert verify.main([str(text)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{text}: not a readable video")


def test_an_unmarked_video_has_no_manifest_and_no_watermark(tmp_path):
    path = tmp_path / "plain.mp4"
    path.write_bytes(encode_mp4(((clip(1).permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy(), 8))
    r = verify.verify_file(path)
    assert r["manifest"] == "absent" and not r["watermark"]["found"] and r["watermark"]["confidence"] == 0


@pytest.mark.parametrize("name, manifest_status", [("x.gif", "valid"), ("x.webm", "unsupported")])
def test_gif_is_signed_and_webm_carries_the_watermark_alone(home, name, manifest_status):
    path = write_generated(home / name, clip(4), 8, Provenance(), GEN)
    r = verify.verify_file(path)
    assert r["manifest"] == manifest_status and r["watermark"]["found"]
    if manifest_status == "valid":
        assert r["watermark"]["payload"] == r["claims"]["generation"]["watermark"]["payload"]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01  # a byte of the frames or of the manifest: either way the signature fails
        path.write_bytes(bytes(data))
        assert verify.verify_file(path)["manifest"] == "tampered"
    else:
        assert r["claims"] is None and "cannot put one in this format" in verify.describe(r)


def test_an_unknown_extension_is_refused_before_anything_is_written(home):
    with pytest.raises(SoraError, match=r"path='.*x.avi': a video file ends in .mp4, .webm, .gif"):
        write_generated(home / "x.avi", clip(4), 8, Provenance(), GEN)
    assert not (home / "x.avi").exists()


def test_small_frames_carry_no_watermark_and_their_manifest_says_why(home, capsys):
    path = write_generated(home / "small.mp4", clip(6, h=32, w=32), 8, Provenance(), GEN)
    r = verify.verify_file(path)
    assert r["manifest"] == "valid" and r["watermark"] == f"not embedded (frames under {watermark.MIN_FRAME_PX} px)"
    assert r["claims"]["generation"]["watermark"] == {"embedded": False, "reason": watermark.TOO_SMALL,
                                                      "min_frame_px": watermark.MIN_FRAME_PX}
    assert verify.describe(r).endswith(f"; watermark not embedded (frames under {watermark.MIN_FRAME_PX} px)")
    # the unmarked frames are exactly the video's: nothing was added
    frames, _ = read_video(path)
    plain = write_generated(home / "plain.mp4", clip(6, h=32, w=32), 8, Provenance(c2pa=False, watermark=False), GEN)
    assert np.array_equal(frames, read_video(plain)[0])


def test_switches_turn_each_mark_off(home):
    path = write_generated(home / "y.mp4", clip(2), 8, Provenance(c2pa=False), GEN)
    r = verify.verify_file(path)
    assert r["manifest"] == "absent" and r["watermark"]["found"]
    path = write_generated(home / "z.mp4", clip(2), 8, Provenance(watermark=False), GEN)
    r = verify.verify_file(path)
    assert r["manifest"] == "valid" and not r["watermark"]["found"] and "watermark" not in r["claims"]["generation"]


def test_a_configured_certificate_is_used(home, tmp_path):
    ident = certs.development_identity(tmp_path / "elsewhere")  # stands in for a CA-issued certificate
    cert, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.write_bytes(ident.chain_pem)
    key.write_bytes(ident.key_pem)
    path = write_generated(home / "c.mp4", clip(3), 8, Provenance(cert=str(cert), key=str(key)), GEN)
    assert verify.verify_file(path)["manifest"] == "valid"
    assert not (home / "home" / "c2pa").exists()  # no development key made when one is configured
    with pytest.raises(SoraError, match="C2PA signing failed"):
        key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        write_generated(home / "d.mp4", clip(3), 8, Provenance(cert=str(cert), key=str(key)), GEN)


# ---------------------------------------------------------------------------------------------------------------
# The watermark alone
# ---------------------------------------------------------------------------------------------------------------


def roundtrip(frames, fps=8, crf=18):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.mp4"
        path.write_bytes(encode_mp4(frames, fps, crf=crf))
        out, _ = read_video(path)
    return out[:, : frames.shape[1], : frames.shape[2]]


def half(f):
    x = torch.nn.functional.interpolate(torch.from_numpy(f).permute(0, 3, 1, 2).float(), scale_factor=0.5, mode="area")
    return x.round().byte().permute(0, 2, 3, 1).numpy()


ATTACKS = {
    "h264_crf28": lambda f: roundtrip(f, crf=28),
    "half_size": lambda f: roundtrip(half(f)),
    "crop_10pct_each_side": lambda f: roundtrip(f[:, 13:-13, 16:-16]),
    "brightness_+20": lambda f: roundtrip(np.clip(f * 1.2, 0, 255).astype(np.uint8)),
    "brightness_-20": lambda f: roundtrip((f * 0.8).astype(np.uint8)),
    "frame_rate_x0.6": lambda f: roundtrip(f[np.round(np.arange(0, len(f), 1 / 0.6)).astype(int).clip(0, len(f) - 1)]),
}


def still_scene(seed: int) -> np.ndarray:
    return ((clip(seed).permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()  # t h w 3


def moving_shape(seed: int) -> np.ndarray:
    """What the built-in dataset's models make: one saturated shape moving on black (mostly pixels at 0, which
    clip half the pattern away), at 128x128, the smallest size the mark is built for."""
    return render_clip("red" if seed % 2 else "cyan", "circle", "left", np.random.default_rng(seed), 8, 128)


@pytest.mark.parametrize("content", [still_scene, moving_shape], ids=["still_scene", "moving_shape"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_watermark_survives(attack, content):
    for seed in (10, 11):
        frames = content(seed)  # t h w 3
        payload = payload_of(GEN.model_sha256, seed)
        marked = watermark.embed(frames, payload)
        assert watermark.psnr_db(frames, marked) >= 40
        got = watermark.detect(ATTACKS[attack](roundtrip(marked)))
        assert got.found, (seed, got.z)
        # The payload is read at the sync's alignment; a bit error leaves it unread (CRC), never wrong.
        assert got.payload in (payload, None) and np.mean(got.bits == watermark.payload_bits(payload)) >= 0.8
        assert not watermark.detect(ATTACKS[attack](roundtrip(frames))).found


def test_payload_bits_round_trip_and_the_crc_catches_an_error():
    bits = watermark.payload_bits(0xBEEF)
    assert watermark.bits_payload(bits) == (0xBEEF, True)
    bits[3] *= -1
    assert not watermark.bits_payload(bits)[1]


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, overrides, message", [
    ("sample", ["ckpt=x", "prompt=p", "out=x.mp4", "provenance.cert=/no/cert.pem"],
     "provenance.cert and provenance.key"),
    ("sample", ["ckpt=x", "prompt=p", "out=x.mp4", "provenance.cert=/no/c.pem", "provenance.key=/no/k.pem"],
     "provenance.cert='/no/c.pem' is not a file"),
    ("train", ["provenance.watermark_psnr_db=20"], "provenance.watermark_psnr_db must be in [30, 60], got 20"),
])
def test_bad_provenance_settings_fail_in_one_line(name, overrides, message):
    from sora.config import check_sample_config, check_train_config
    from tests.conftest import compose_config

    cfg = compose_config(name, overrides)
    assert cfg.provenance.c2pa and cfg.provenance.watermark  # on by default
    with pytest.raises(SoraError, match=message.replace("[", r"\[").replace("]", r"\]")):
        (check_sample_config if name == "sample" else check_train_config)(cfg)


def test_the_model_fingerprint_covers_every_tensor_and_changes_with_any_weight():
    from sora.provenance.stamp import model_fingerprint

    tensors = {"dit.w": torch.ones(2, 3), "vae.scale": torch.tensor(0.5),
               "text.e": torch.zeros(0, 4, dtype=torch.bfloat16)}
    base = model_fingerprint(tensors)
    assert base == model_fingerprint(dict(reversed(tensors.items())))  # order-free
    assert base != model_fingerprint({**tensors, "vae.scale": torch.tensor(0.25)})  # a 0-dim tensor counts


def test_fold_and_cells_shapes():
    img = torch.rand(1, 1, 100, 130) * 255
    f2 = watermark.fold(img, 2.0)
    assert f2.shape == (2 * watermark.TILE, 2 * watermark.TILE)
    assert watermark.cells(f2, 1, 0).shape == (watermark.TILE, watermark.TILE)
    # cells() at phase (0, 0) sums each cell's 2 x 2 samples
    assert np.allclose(watermark.cells(f2)[0, 0], float(f2[:2, :2].sum()))
    assert watermark.embed_cell_px(1080, 1920) == watermark.CELL_PX
    assert watermark.embed_cell_px(144, 176) < watermark.CELL_PX  # small frames: smaller cells, more tiles


def test_a_crop_off_the_cell_grid_is_found_by_the_half_cell_phases():
    frames = ((clip(12).permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()  # t h w 3
    marked = watermark.embed(frames, 0x1234)
    cell = watermark.embed_cell_px(*frames.shape[1:3])
    off = round(cell / 2)  # half a cell off the embedding grid, both ways
    got = watermark.detect(roundtrip(marked[:, off + 8 :, off + 8 :]))
    assert got.found and got.payload == 0x1234, got.z
