"""Size/duration buckets: assignment, per-bucket batch sizes, mixed image/video batches, and the DiT on each shape."""

import pytest
import torch

from sora.config import check_against_vae, check_train_config
from sora.data.buckets import Bucket, BucketSet
from sora.data.decode import BadSample
from sora.data.stream import make_loader, strip_bookkeeping
from sora.errors import SoraError
from sora.models.conditioning import Conditioning
from sora.models.dit import DiT, DiTArgs
from sora.models.geometry import LatentGeometry
from sora.models.vae import build_vae
from tests.conftest import compose_config, logged_losses, run_entry, shrunk_overrides, train_in_process

BUCKETS = [[1, 32, 32], [1, 24, 40], [9, 32, 32], [9, 24, 40], [9, 40, 24], [5, 24, 40]]
BASE = ["vae=causal3d", "dit.patch_size=[1,1,1]"]
LATENT = LatentGeometry(4, 4, 8, True, (1, 1, 1))  # the causal 4x8x8 VAE


def bucket_set(*overrides):
    cfg = compose_config("train", ["vae=causal3d", "vae.spatial_compression=8", "vae.temporal_compression=4",
                                   f"data.buckets={BUCKETS}", "data.tokens_per_batch=240", "dit.patch_size=[1,1,1]",
                                   *overrides])
    geometry = LatentGeometry.of(build_vae(cfg.vae), cfg.dit.patch_size)
    return BucketSet.from_config(cfg.data, geometry), cfg, geometry


def test_assignment_keeps_aspect_then_length_then_size():
    bs, _, _ = bucket_set()
    pick = lambda *a: bs.buckets[bs.assign(*a, frame_stride=1)]
    assert pick(100, 720, 1280, False) == Bucket(9, 24, 40)  # wide video -> the wide, longest bucket
    assert pick(100, 1280, 720, False) == Bucket(9, 40, 24)  # portrait
    assert pick(100, 500, 510, False) == Bucket(9, 32, 32)  # near square
    assert pick(6, 720, 1280, False) == Bucket(5, 24, 40)  # too short for 9 frames: the 5-frame bucket
    assert pick(1, 300, 500, True) == Bucket(1, 24, 40)  # images only go to 1-frame buckets
    with pytest.raises(BadSample, match="no bucket") as e:
        pick(3, 720, 1280, False)  # shorter than every video bucket
    assert e.value.reason == "too_short" and "the shortest needs 5 (5 at data.frame_stride=1)" in e.value.detail
    with pytest.raises(BadSample, match="no bucket") as e:
        BucketSet([Bucket(9, 32, 32)], [2]).assign(1, 32, 32, True, 1)  # an image, no 1-frame bucket
    assert e.value.reason == "no_bucket"


def test_batch_size_keeps_tokens_per_batch_near_the_target():
    bs, cfg, geometry = bucket_set()
    for b, size in zip(bs.buckets, bs.batch_sizes):
        tokens = torch.tensor(geometry.token_grid(b.num_frames, b.height, b.width)).prod().item()
        assert size == max(1, 240 // tokens)
        assert size * tokens <= 240 < (size + 1) * tokens
    assert bs.batch_sizes[0] > bs.batch_sizes[2]  # images batch more than 9-frame clips


def test_buckets_the_vae_cannot_cut_fail_at_start():
    with pytest.raises(SoraError, match=r"data.buckets: \[8, 32, 32\].*temporal compression 4"):
        check_against_vae(compose_config("train", [*BASE, "data.buckets=[[8,32,32]]"]), LATENT)
    with pytest.raises(SoraError, match="divide by 8x1"):
        check_against_vae(compose_config("train", [*BASE, "data.buckets=[[9,30,32]]"]), LATENT)
    with pytest.raises(SoraError, match="each bucket is"):
        check_train_config(compose_config("train", [*BASE, "data.buckets=[[9,32]]"]))


def test_the_dit_takes_every_bucket_shape():
    bs, cfg, geometry = bucket_set()
    dit = DiT(geometry.latent_channels, 16, DiTArgs(hidden_size=32, depth=1, num_heads=2, patch_size=[1, 1, 1]))
    for b in bs.buckets:
        z = torch.randn(2, *geometry.latent_shape(b.num_frames, b.height, b.width))
        out = dit(z, torch.rand(2), Conditioning(torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)))
        assert out.shape == z.shape


def test_loader_batches_one_bucket_each_and_mixes_images_at_the_ratio(mixed_shards):
    cfg = compose_config("train", [f"data.shards={mixed_shards}/shard-*.tar", "data.num_workers=0",
                                   "data.buckets=[[1,16,16],[1,16,24],[4,16,16],[4,16,24]]", "data.frame_stride=1",
                                   "data.batch_size_per_gpu=2", "data.image_batch_ratio=0.5",
                                   "data.shuffle_buffer=4"]).data
    kinds, shapes = [], set()
    for _, raw in zip(range(24), make_loader(cfg, seed=0)):
        batch, _, _ = strip_bookkeeping(raw)
        b, c, t, h, w = batch["video"].shape
        shapes.add((t, h, w))
        kinds.append(t == 1)
    assert shapes <= {(1, 16, 16), (1, 16, 24), (4, 16, 16), (4, 16, 24)} and len(shapes) >= 3
    assert 0.35 <= sum(kinds) / len(kinds) <= 0.65


PACK_BUCKETS = "data.buckets=[[1,16,16],[1,16,24],[5,16,16],[5,16,24]]"  # 4, 6, 8 and 12 tokens a clip
PACK = ["vae=causal3d", "vae.spatial_compression=8", "vae.temporal_compression=4", "dit.patch_size=[1,1,1]",
        PACK_BUCKETS, "data.tokens_per_batch=24", "data.packing=true", "data.frame_stride=1", "data.num_workers=0",
        "data.shuffle_buffer=4"]


def test_packing_mixes_shapes_within_the_token_budget_and_keeps_every_clip(mixed_shards):
    cfg = compose_config("train", [f"data.shards={mixed_shards}/shard-*.tar", *PACK])
    bs = BucketSet.from_config(cfg.data, LatentGeometry.of(build_vae(cfg.vae), cfg.dit.patch_size))
    tokens_of = {(b.num_frames, b.height, b.width): n for b, n in zip(bs.buckets, bs.tokens)}
    captions, mixed = [], 0
    for raw in make_loader(cfg.data, seed=0, buckets=bs):
        batch, position, _ = strip_bookkeeping(raw)
        if position["epoch"] > 0:
            break
        shapes = [tuple(v.shape[1:]) for v in batch["video"]]  # each clip c t h w, its own shape
        assert sum(tokens_of[s] for s in shapes) <= 24, shapes
        mixed += len(set(shapes)) > 1
        captions += batch["caption"]
    assert len(captions) == len(set(captions)) == 24  # the whole epoch, each clip once
    assert mixed > 0


@pytest.mark.parametrize("strategy", ["single", "fsdp"])
def test_train_py_trains_on_packed_batches(mixed_shards, shapes_dir, tmp_path, strategy):
    """One process, and FSDP on 2 (where forward_packed must gather the sharded embeddings as forward does)."""
    parallel = ["train.devices=2", "train.strategy=fsdp"] if strategy == "fsdp" else ["train.devices=1"]
    run = (lambda *a: run_entry("train.py", *a)) if strategy == "fsdp" else train_in_process  # 2 devices: 2 processes
    proc = run(*shrunk_overrides(shapes_dir, tmp_path), f"data.shards={mixed_shards}/shard-*.tar",
                     *PACK, *parallel, "train.accelerator=cpu", "data.eval_shards=null", "train.max_steps=3",
                     "train.sample_every_n_steps=0", "train.final_samples=false", "logger.wandb=disabled",
                     "train.log_every_n_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = logged_losses(tmp_path)
    assert sorted(losses) == [0, 1, 2] and all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_packed_stream_resumes_exactly(mixed_shards):
    """A pack's position (its members, the shuffle buffer, the RNG) restores the stream mid-epoch."""
    from sora.data.stream import ClipStream, expand_shards

    cfg = compose_config("train", [f"data.shards={mixed_shards}/shard-*.tar", *PACK])
    bs = BucketSet.from_config(cfg.data, LatentGeometry.of(build_vae(cfg.vae), cfg.dit.patch_size))
    shards = expand_shards(cfg.data.shards)
    full = [b for _, b in zip(range(16), ClipStream(shards, cfg.data, bs, seed=1))]  # crosses an epoch
    cut = 5
    resumed = [b for _, b in zip(range(16 - cut), ClipStream(shards, cfg.data, bs, seed=1,
                                                             state={0: full[cut - 1]["_position"]}))]
    for a, b in zip(full[cut:], resumed):
        assert a["caption"] == b["caption"]
        assert all(torch.equal(x, y) for x, y in zip(a["video"], b["video"]))
    assert full[-1]["_position"]["epoch"] >= 1


@pytest.mark.parametrize("setting,message", [("dit.text_conditioning=joint",
                                              "data.packing=true needs dit.attention_layout"),
                                             ("data.tokens_per_batch=null", "set data.tokens_per_batch")])
def test_packing_settings_it_cannot_serve_fail_at_start(mixed_shards, shapes_dir, tmp_path, setting, message):
    proc = train_in_process(*shrunk_overrides(shapes_dir, tmp_path), f"data.shards={mixed_shards}/shard-*.tar", *PACK,
                            setting, "train.accelerator=cpu", "train.devices=1")
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
