"""Latent cache: written once by the real CLI, read with no decoding, refused when other weights made it."""

import io
import json

import numpy as np
import pytest
import torch
import webdataset as wds

from sora.config import to_plain
from sora.data.latent_cache import check_cache, sample_latent
from sora.errors import SoraError
from sora.inference.bundle import ModelBundle
from sora.training.vae_task import VAETask
from tests.conftest import compose_config, run_entry, shrunk_overrides, train_in_process

SMALL_VAE = ["vae=causal3d", "vae.latent_channels=4", "vae.base_channels=8", "vae.channel_mult=[1,1,2,2]",
             "dit.patch_size=[1,1,1]", "data.num_frames=5", "data.frame_stride=1"]


def save_vae(path, seed: int):
    torch.manual_seed(seed)
    module = VAETask(compose_config("train", ["task=vae", "vae.latent_channels=4", "vae.base_channels=8",
                                                   "vae.channel_mult=[1,1,2,2]"]))
    torch.save({"state_dict": module.state_dict(), "sora_config": to_plain(module.cfg)}, path)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory, shapes_dir):
    pytest.importorskip("transformers")
    from tests.test_text import _save_tiny_t5

    root = tmp_path_factory.mktemp("cache")
    _save_tiny_t5(root / "t5")
    vae_a, vae_b = save_vae(root / "a.ckpt", 0), save_vae(root / "b.ckpt", 1)
    overrides = [*shrunk_overrides(shapes_dir, root / "hydra"), *SMALL_VAE, f"vae.ckpt={vae_a}", "text=hf",
                 f"text.path={root / 't5'}", "text.max_tokens=8", f"data.latent_cache={root / 'latents'}"]
    done = run_entry("data/cache_latents.py", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, overrides, vae_b


def test_cache_holds_every_sample_once_with_its_makers(cache, shapes_dir):
    root, _, _ = cache
    info = json.loads((root / "latents" / "cache_info.json").read_text())
    assert info["num_samples"] == 128 and info["skipped"] == {}  # 64 train combos x 2 clips
    assert info["text"]["cached"] and info["vae"]["fingerprint"] and info["latent_shapes"] == {"8x2x2x2": 128}
    sample = next(iter(wds.WebDataset(f"{root}/latents/latents-000000.tar", shardshuffle=False)))
    latent = np.load(io.BytesIO(sample["latent.npy"]), allow_pickle=False)
    assert latent.shape == (8, 2, 2, 2) and latent.dtype == np.float16  # mean and std of 4 channels, 2 x 16/8 x 16/8
    assert np.load(io.BytesIO(sample["context.npy"])).shape == (8, 24)
    # the default conditioning gives frames, so each latent frame encoded alone is cached beside the clip's
    assert info["frames_alone"] and np.load(io.BytesIO(sample["alone.npy"])).shape == latent.shape


def test_a_cache_without_frames_alone_is_refused_for_a_run_that_gives_frames(cache, tmp_path):
    root, overrides, _ = cache
    bundle = ModelBundle.build(compose_config("train", [o for o in overrides if not o.startswith("hydra.")]))
    info = json.loads((root / "latents" / "cache_info.json").read_text())
    # as conditioning=text writes
    (tmp_path / "cache_info.json").write_text(json.dumps({**info, "frames_alone": False}))
    check_cache(str(tmp_path), bundle.vae, bundle.text)  # a text-only run may use it
    with pytest.raises(SoraError, match="holds no latents of frames given alone"):
        check_cache(str(tmp_path), bundle.vae, bundle.text, frames_alone=True)


def test_cached_moments_match_the_decode_path(cache, shapes_dir):
    root, overrides, _ = cache
    cfg = compose_config("train", [o for o in overrides if not o.startswith("hydra.")])
    bundle = ModelBundle.build(cfg)
    from sora.data.stream import make_loader, strip_bookkeeping

    data = cfg.data.copy()
    data.latent_cache, data.random_start, data.random_crop = None, False, False
    data.shuffle_buffer, data.num_workers = 1, 0
    data.batch_size_per_gpu = 1
    direct, _, _ = strip_bookkeeping(next(iter(make_loader(data, seed=0))))
    data.latent_cache = str(root / "latents")
    cached, _, _ = strip_bookkeeping(next(iter(make_loader(data, seed=0))))
    assert cached["caption"] == direct["caption"]
    mean = bundle.vae.encode(direct["video"], sample=False)
    torch.testing.assert_close(cached["latent"].float().chunk(2, 1)[0], mean, atol=2e-3, rtol=2e-3)
    assert sample_latent(cached["latent"]).shape == mean.shape
    check_cache(str(root / "latents"), bundle.vae, bundle.text)  # same makers: accepted


def test_a_cache_made_by_other_weights_is_refused(cache):
    root, overrides, vae_b = cache
    base = [o for o in overrides if not o.startswith("hydra.")]
    other_vae_overrides = [o for o in base if not o.startswith("vae.ckpt")] + [f"vae.ckpt={vae_b}"]
    other_vae = ModelBundle.build(compose_config("train", other_vae_overrides))
    with pytest.raises(SoraError, match="made by another VAE"):
        check_cache(str(root / "latents"), other_vae.vae, other_vae.text)
    own_text = ModelBundle.build(compose_config("train", [o for o in base if not o.startswith("text")]))
    with pytest.raises(SoraError, match="frozen text encoder"):
        check_cache(str(root / "latents"), own_text.vae, own_text.text)


def test_train_reads_the_cache(cache, shapes_dir, tmp_path):
    root, overrides, vae_b = cache
    run = [o for o in overrides if not o.startswith("hydra.")] + [f"hydra.run.dir={tmp_path / 'run'}",
                                                                  "train.final_samples=false", "train.max_steps=2"]
    done = train_in_process(*run)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "latent-cache shard" in done.stderr + done.stdout
    refused = train_in_process(*[o for o in run if not o.startswith("vae.ckpt")], f"vae.ckpt={vae_b}",
                        f"hydra.run.dir={tmp_path / 'run2'}")
    assert refused.returncode == 2 and "made by another VAE" in refused.stderr and "Traceback" not in refused.stderr
