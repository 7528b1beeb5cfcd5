"""Pretrained diffusers video VAEs from a local directory (vae=diffusers vae.path=DIR): a tiny randomly initialised
model of each class, written by save_pretrained, through the frame rule, the latent normalisation, the latent
cache, DiT training and sampling; and the directories and buckets that must fail at start. Nothing downloads."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from sora.data.latent_cache import check_cache, fingerprint, sample_latent
from sora.errors import SoraError
from sora.models.diffusers_vae import CLASSES, DiffusersVAE
from sora.models.geometry import LatentGeometry
from tests.conftest import compose_config, entry_module, run_entry

# Each class at a few thousand to a few hundred thousand parameters: the real layer types (causal convs, their
# caches, the mid-block attention, LTX's patchify), so every code path of the full-size model runs.
TINY = {
    "AutoencoderKLWan": dict(
        base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.5, 2.0, 1.0], scale_factor_temporal=4,
        scale_factor_spatial=4),
    "AutoencoderKLCogVideoX": dict(
        down_block_types=["CogVideoXDownBlock3D"] * 3, up_block_types=["CogVideoXUpBlock3D"] * 3,
        block_out_channels=[8, 8, 16], latent_channels=4, layers_per_block=1, norm_num_groups=4,
        temporal_compression_ratio=4, sample_height=64, sample_width=64, scaling_factor=0.7),
    "AutoencoderKLHunyuanVideo": dict(
        latent_channels=4, down_block_types=["HunyuanVideoDownBlock3D"] * 3,
        up_block_types=["HunyuanVideoUpBlock3D"] * 3, block_out_channels=[8, 8, 16], layers_per_block=1,
        norm_num_groups=4, spatial_compression_ratio=4, temporal_compression_ratio=4, scaling_factor=0.5),
    # Its real layout: patch_size 4 and three spatio-temporal halvings, 8x32x32.
    "AutoencoderKLLTXVideo": dict(
        latent_channels=8, block_out_channels=[8, 8, 16, 16], decoder_block_out_channels=[8, 8, 16, 16],
        layers_per_block=[1, 1, 1, 1, 1], decoder_layers_per_block=[1, 1, 1, 1, 1], scaling_factor=0.8),
}
# (latent channels, temporal, spatial compression), and a clip that fits the frame rule at a small size
EXPECTED = {"AutoencoderKLWan": (4, 4, 4), "AutoencoderKLCogVideoX": (4, 4, 4), "AutoencoderKLHunyuanVideo": (4, 4, 4),
            "AutoencoderKLLTXVideo": (8, 8, 32)}
CLIP = {"AutoencoderKLLTXVideo": (9, 32)}  # frames, pixels; the others 5 frames of 16x16


def clip_size(name: str) -> tuple[int, int]:
    return CLIP.get(name, (5, 16))


def save_tiny(name: str, path: Path, seed: int = 0) -> Path:
    import diffusers

    torch.manual_seed(seed)
    model = getattr(diffusers, name)(**TINY[name])
    if name == "AutoencoderKLLTXVideo":  # its latents_mean / latents_std are buffers in the weights: not 0 and 1
        model.latents_mean.normal_()
        model.latents_std.uniform_(0.5, 2.0)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diffusers_vaes")
    return {name: save_tiny(name, root / name) for name in CLASSES}


def video(frames: int, px: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, px, px, generator=g) * 2 - 1  # b 3 t h w in [-1, 1]


# ---------------------------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSES)
def test_shapes_and_frame_rule(saved, name):
    vae = DiffusersVAE(saved[name]).eval()
    assert (vae.latent_channels, vae.temporal_compression, vae.spatial_compression) == EXPECTED[name]
    geometry = LatentGeometry.of(vae)
    assert geometry.first_frame_alone and geometry.frame_rule() == f"1 + k * {EXPECTED[name][1]} frames"
    frames, px = clip_size(name)
    for t in (1, frames):  # an image is a 1-frame clip
        with torch.no_grad():
            latent = vae.encode(video(t, px), sample=False)
            assert latent.shape == (2, *geometry.latent_shape(t, px, px))
            assert vae.decode(latent).shape == (2, 3, t, px, px)
    with pytest.raises(AssertionError, match=f"1 \\+ k \\* {EXPECTED[name][1]} frames"):
        vae.encode(video(frames + 2, px))  # 7 frames (11 for LTX): off the rule
    assert vae.last_layer().shape[0] == 3 * (16 if name == "AutoencoderKLLTXVideo" else 1)  # LTX: 3 x 4 x 4 patch


@pytest.mark.parametrize("name", CLASSES)
def test_latents_are_normalised_as_the_class_pipeline_does(saved, name):
    vae = DiffusersVAE(saved[name]).eval()
    config = json.loads((saved[name] / "config.json").read_text())
    frames, px = clip_size(name)
    x = video(frames, px)
    with torch.no_grad():
        mean, logvar = vae.posterior(x)
        latent, moments = vae.encode(x, sample=False), vae.moments(x)
        z = latent.shape[1]
        if name == "AutoencoderKLWan":  # pipeline_wan.py: (z - latents_mean) / latents_std from config.json
            m, s, k = torch.tensor(config["latents_mean"]), torch.tensor(config["latents_std"]), 1.0
        elif name == "AutoencoderKLLTXVideo":  # pipeline_ltx.py: (z - mean) * scaling_factor / std, its buffers
            m, s, k = vae.model.latents_mean, vae.model.latents_std, config["scaling_factor"]
        else:  # CogVideoX, HunyuanVideo: z * scaling_factor
            m, s, k = torch.zeros(z), torch.ones(z), config["scaling_factor"]
        m, s = m.view(1, -1, 1, 1, 1), s.view(1, -1, 1, 1, 1)
        torch.testing.assert_close(latent, (mean - m) * k / s)
        # the latent cache's format: normalised mean, then the posterior std mapped the same way
        assert moments.shape == (2, 2 * z, *latent.shape[2:])
        torch.testing.assert_close(moments[:, :z], latent)
        torch.testing.assert_close(moments[:, z:], (0.5 * logvar).exp() * k / s)
        assert sample_latent(moments).shape == latent.shape
        # decode undoes the normalisation: the same video as the network's own latent decoded
        torch.testing.assert_close(vae.decode(latent), vae.decode_raw(mean), atol=1e-5, rtol=1e-4)


def test_cogvideox_decodes_an_even_number_of_latent_frames_to_the_frame_rule(saved):
    vae = DiffusersVAE(saved["AutoencoderKLCogVideoX"]).eval()
    z = torch.randn(1, 4, 2, 4, 4)
    with torch.no_grad():
        assert vae.model.decode(z).sample.shape[2] == 8  # diffusers' own: 2 latents -> 8 frames, off 1 + 4k
        assert vae.decode_raw(z).shape == (1, 3, 5, 16, 16)
        odd = torch.randn(1, 4, 3, 4, 4)
        torch.testing.assert_close(vae.decode_raw(odd), vae.model.decode(odd).sample)  # its own clips: untouched


def test_ltx_decoder_with_timestep_conditioning_decodes_at_the_pipelines_timestep(tmp_path):
    """LTX-Video 0.9.1+ decoders take a denoising timestep: a clean latent is decoded at 0, as LTXPipeline does."""
    import diffusers

    torch.manual_seed(0)
    # 0.9.1's decoder layout (residual upsampling by depth-to-space), shrunk
    diffusers.AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=[8, 8, 16, 16], layers_per_block=[1] * 5,
        decoder_block_out_channels=[8, 16, 32], decoder_layers_per_block=[1] * 4,
        decoder_spatio_temporal_scaling=[True] * 3, upsample_residual=[True] * 3, upsample_factor=[2] * 3,
        decoder_inject_noise=[False] * 4, timestep_conditioning=True).save_pretrained(tmp_path)
    vae = DiffusersVAE(tmp_path).eval()
    with torch.no_grad():
        latent = vae.encode(video(9, 32, batch=1), sample=False)
        decoded, raw = vae.decode(latent), vae.denormalise(latent)
        assert decoded.shape == (1, 3, 9, 32, 32)
        torch.testing.assert_close(decoded, vae.model.decode(raw, torch.tensor([0.0])).sample)
        assert not torch.allclose(decoded, vae.model.decode(raw, torch.tensor([0.5])).sample)  # it is conditioned


@pytest.mark.parametrize("name", CLASSES)
def test_built_on_meta_it_reads_no_weights_and_takes_a_checkpoints(saved, name, tmp_path):
    """ModelBundle.assemble builds the VAE on the meta device and assigns the checkpoint's tensors: the directory's
    weights are not read (here there are none), and the result is the loaded model."""
    loaded = DiffusersVAE(saved[name]).eval()
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(saved[name] / "config.json", config_only)
    with torch.device("meta"):
        vae = DiffusersVAE(config_only)
    assert all(t.is_meta for t in [*vae.parameters(), *vae.buffers()])
    vae.load_state_dict(loaded.state_dict(), assign=True)
    assert not any(t.is_meta for t in [*vae.parameters(), *vae.buffers()])
    frames, px = clip_size(name)
    x = video(frames, px, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(vae.eval().encode(x, sample=False), loaded.encode(x, sample=False))
    assert fingerprint(vae) == fingerprint(loaded)


def test_a_latent_cache_made_by_other_weights_of_the_same_class_is_refused(saved, tmp_path):
    from sora.models.text import build_text_encoder

    name = "AutoencoderKLHunyuanVideo"
    vae, other = DiffusersVAE(saved[name]), DiffusersVAE(save_tiny(name, tmp_path / "other", seed=1))
    text = build_text_encoder(compose_config("train").text)
    info = {"vae": {"fingerprint": fingerprint(vae), "kind": "diffusers", "ckpt": None, "path": str(saved[name])},
            "text": {"cached": False}, "frames_alone": True}
    (tmp_path / "cache_info.json").write_text(json.dumps(info))
    check_cache(str(tmp_path), vae, text)
    with pytest.raises(SoraError, match=f"made by another VAE \\(diffusers, path={saved[name]}\\)"):
        check_cache(str(tmp_path), other, text)


# ---------------------------------------------------------------------------------------------------------------
# Tiles and chunks
# ---------------------------------------------------------------------------------------------------------------


def test_tiling_and_chunking_follow_the_config(saved):
    path = saved["AutoencoderKLHunyuanVideo"]
    default = DiffusersVAE(path).model
    assert default.use_tiling and default.tile_sample_min_height == 256  # null: the class's own tiles
    assert not DiffusersVAE(path, tile_px=0).model.use_tiling
    tiled = DiffusersVAE(path, tile_px=16, tile_overlap_px=8, chunk_frames=8).eval()
    m = tiled.model
    assert (m.tile_sample_min_height, m.tile_sample_stride_width) == (16, 8)
    assert m.use_framewise_encoding and (m.tile_sample_min_num_frames, m.tile_sample_stride_num_frames) == (8, 4)
    x = video(9, 32, batch=1)  # 2 x 2 tiles, 2 chunks
    with torch.no_grad():
        latent = tiled.encode(x, sample=False)
        assert latent.shape == (1, 4, 3, 8, 8) and tiled.decode(latent).shape == x.shape
    assert not DiffusersVAE(path, chunk_frames=0).model.use_framewise_decoding
    cog = DiffusersVAE(saved["AutoencoderKLCogVideoX"], tile_px=16, tile_overlap_px=8).model
    assert cog.tile_sample_min_width == 16 and cog.tile_overlap_factor_width == 0.5  # its overlap is a fraction
    ltx = DiffusersVAE(saved["AutoencoderKLLTXVideo"], tile_px=64, tile_overlap_px=32, chunk_frames=16).model
    assert ltx.tile_sample_stride_height == 32 and ltx.tile_sample_stride_num_frames == 8


@pytest.mark.parametrize("kwargs, key", [
    (dict(tile_px=18, tile_overlap_px=8), "vae.tile_px=18"),  # not a multiple of the 4x compression
    (dict(tile_px=16, tile_overlap_px=16), "vae.tile_px=16"),  # no stride left
    (dict(chunk_frames=6), "vae.chunk_frames=6"),  # not a multiple of 4
    (dict(chunk_frames=4), "vae.chunk_frames=4"),  # one chunk's worth of overlap and nothing else
])
def test_tiles_and_chunks_that_do_not_fit_fail_in_one_line(saved, kwargs, key):
    with pytest.raises(SoraError, match=key.replace(".", r"\.")) as e:
        DiffusersVAE(saved["AutoencoderKLHunyuanVideo"], **kwargs)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# Directories that fail at start
# ---------------------------------------------------------------------------------------------------------------


def _damaged(saved, tmp_path, what: str) -> Path:
    out = tmp_path / what
    out.mkdir()
    source = saved["AutoencoderKLHunyuanVideo"]
    config = json.loads((source / "config.json").read_text())
    weights = (source / "diffusion_pytorch_model.safetensors").read_bytes()
    if what == "unknown_class":
        config["_class_name"] = "AutoencoderKL"
    if what == "other_shapes":
        config["latent_channels"] = 8
    if what == "pipeline":  # a whole pipeline's folder: its VAE is under vae/
        shutil.copytree(source, out / "vae")
        return out
    if what != "no_config":
        (out / "config.json").write_text(json.dumps(config))
    if what == "truncated":
        weights = weights[: len(weights) // 2]
    if what not in ("no_weights", "no_config"):
        (out / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    return out


@pytest.mark.parametrize("what, message", [
    ("missing", "is not a directory"),
    ("no_config", "has no config.json"),
    ("pipeline", "point vae.path at its vae/ folder"),
    ("unknown_class", "_class_name is 'AutoencoderKL'; vae=diffusers loads AutoencoderKLWan, AutoencoderKLCogVideoX"),
    ("no_weights", "has config.json but no weights (diffusion_pytorch_model.safetensors or"),
    ("other_shapes", "its weights do not load into AutoencoderKLHunyuanVideo (size mismatch for"),
    ("truncated", "its weights do not load into AutoencoderKLHunyuanVideo"),
])
def test_a_bad_directory_fails_in_one_line_naming_vae_path(saved, tmp_path, what, message):
    path = tmp_path / "none" if what == "missing" else _damaged(saved, tmp_path, what)
    with pytest.raises(SoraError) as e:
        DiffusersVAE(path)
    assert str(e.value).startswith(f"vae.path={str(path)!r}") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_vae_path_must_be_given():
    from sora.config import check_train_config

    with pytest.raises(SoraError, match="vae=diffusers needs vae.path"):
        check_train_config(compose_config("train", ["vae=diffusers"]))


def test_train_py_refuses_a_bucket_off_the_frame_rule_and_a_directory_without_weights(saved, shards, tmp_path):
    """At start, in one line, through the real entry point: 5 frames do not cut into LTX-Video's 1 + 8k."""
    data = [f"data.shards={shards}/shard-*.tar", "data.moving_shapes=null"]
    ltx = saved["AutoencoderKLLTXVideo"]
    proc = run_entry("train.py", f"hydra.run.dir={tmp_path / 'run'}", *data, "vae=diffusers", f"vae.path={ltx}",
                     "data.num_frames=5", "data.frame_stride=1", "dit.patch_size=[1,1,1]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error == ["error: data.num_frames, data.height, data.width: [5, 32, 32] (frames, height, width): the VAE "
                     "takes 1 + k * 8 frames (temporal compression 8), not 5"], proc.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    train_py = entry_module("train")
    cfg = compose_config("train", [*data, "vae=diffusers", f"vae.path={_damaged(saved, tmp_path, 'no_weights')}"])
    with pytest.raises(SoraError, match="has config.json but no weights"):
        train_py.train(cfg, tmp_path / "run2")


# ---------------------------------------------------------------------------------------------------------------
# Shards -> latent cache -> DiT training -> sample.py, on each class
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Four captioned 9-frame clips of 32x32, written by the real shard writer."""
    from sora.data.shard_writer import scan_folder, write_shards
    from tests.media import moving_square, write_video

    src = tmp_path_factory.mktemp("clips")
    for i in range(4):
        write_video(src / f"clip{i}.mp4", moving_square(9 + i, 32, 32))
        (src / f"clip{i}.txt").write_text(f"a red square moving right {i}")
    out = tmp_path_factory.mktemp("shards")
    sources, skipped = scan_folder(str(src))
    write_shards(sources, str(out), samples_per_shard=8, workers=1, skipped=skipped)
    return out


@pytest.mark.parametrize("name", CLASSES)
def test_shards_to_latent_cache_to_dit_to_sample_py(saved, shards, name, tmp_path, caplog):
    from sora.data.latent_cache import write_latent_cache
    from sora.data.video_io import read_video
    from sora.diffusion.frame_modes import gives_frames
    from sora.inference.bundle import vae_from_config
    from sora.models.text import build_text_encoder

    frames, px = clip_size(name)
    overrides = [
        f"data.shards={shards}/shard-*.tar", "data.moving_shapes=null", "data.eval_prompts=null",
        f"data.eval_shards={shards}/shard-*.tar", "val.num_clips=2",  # the validation loss through this VAE too
        "data.train_prompts=null", f"data.num_frames={frames}", "data.frame_stride=1", f"data.height={px}",
        f"data.width={px}", "data.batch_size_per_gpu=2", "data.num_workers=0", "data.shuffle_buffer=4",
        f"data.latent_cache={tmp_path / 'latents'}", "vae=diffusers", f"vae.path={saved[name]}",
        "dit.patch_size=[1,1,1]", "dit.hidden_size=32", "dit.depth=1", "dit.num_heads=2", "text.width=16",
        "text.num_heads=2", "train.max_steps=2", "train.max_minutes=null", "train.sample_every_n_steps=0",
        "train.final_samples=false", "logger.wandb=disabled"]
    cfg = compose_config("train", overrides)
    # data/cache_latents.py's steps: the VAE as train.py builds it, every sample encoded once
    vae, cfg_used = vae_from_config(cfg)
    info = write_latent_cache(cfg_used, vae, build_text_encoder(cfg.text), LatentGeometry.of(vae, [1, 1, 1]),
                              cfg.data.latent_cache, frames_alone=gives_frames(cfg.conditioning.modes))
    latent_shape = LatentGeometry.of(vae).latent_shape(frames, px, px)
    assert info["num_samples"] == 4 and info["vae"]["kind"] == "diffusers" and info["vae"]["path"] == str(saved[name])
    assert info["latent_shapes"] == {"x".join(map(str, (2 * latent_shape[0], *latent_shape[1:]))): 4}

    caplog.set_level(logging.INFO, logger="sora.train")
    results = entry_module("train").train(cfg, tmp_path / "run")  # checks the cache's fingerprint, trains on it
    assert results["steps"] == 2 and "1 latent-cache shard(s)" in caplog.text
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["sora_config"]["vae"]["path"] == str(saved[name])

    out = tmp_path / "sample.mp4"
    entry_module("sample").sample(compose_config("sample", [f"ckpt={ckpt}", "prompt=a red square moving right",
                                                      f"out={out}", "steps=2", "seed=0"]))
    assert read_video(out)[0].shape == (frames, px, px, 3)
