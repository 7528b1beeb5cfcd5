import pytest
import torch

from sora.models.vae import CausalVAE, PixelVAE, VAEArgs


def small_vae(**kw):
    args = dict(latent_channels=4, temporal_compression=4, spatial_compression=8, base_channels=8,
                channel_mult=(1, 2, 2, 2), num_res_blocks=1)
    return CausalVAE(VAEArgs(kind="causal3d", **{**args, **kw})).eval()


@pytest.mark.parametrize("num_frames", [1, 5, 9])
def test_shapes_4x8x8(num_frames):
    vae = small_vae()
    video = torch.randn(2, 3, num_frames, 32, 48)
    z = vae.encode(video)
    assert z.shape == (2, 4, 1 + (num_frames - 1) // 4, 4, 6)
    assert vae.decode(z).shape == video.shape


def test_other_compressions():
    vae = small_vae(temporal_compression=2, spatial_compression=4, channel_mult=(1, 2, 2))
    assert vae.encode(torch.randn(1, 3, 7, 16, 16)).shape == (1, 4, 4, 4, 4)


def test_latent_frames_do_not_see_the_future():
    torch.manual_seed(0)
    vae = small_vae()
    video = torch.randn(1, 3, 9, 16, 16)
    later = video.clone()
    later[:, :, 5:] = torch.randn_like(later[:, :, 5:])  # change input frames 5..8
    z, z_later = vae.encode(video, sample=False), vae.encode(later, sample=False)
    # latent frame j sees input frames <= 4j: frames 0 and 1 are unchanged, frame 2 changes
    torch.testing.assert_close(z[:, :, :2], z_later[:, :, :2])
    assert not torch.allclose(z[:, :, 2], z_later[:, :, 2])
    # and the decoder is causal too: output frames 0..4 come from latent frames 0..1 only
    out, out_later = vae.decode(z), vae.decode(z_later)
    torch.testing.assert_close(out[:, :, :5], out_later[:, :, :5])


def test_image_is_a_one_frame_video():
    vae = small_vae()
    video = torch.randn(1, 3, 5, 16, 16)
    torch.testing.assert_close(vae.encode(video[:, :, :1], sample=False), vae.encode(video, sample=False)[:, :, :1])


def test_bad_frame_count_is_named():
    with pytest.raises(AssertionError, match="takes 1 \\+ k \\* 4 frames"):
        small_vae().encode(torch.randn(1, 3, 8, 16, 16))


def test_pixel_vae_is_identity():
    x = torch.randn(1, 3, 3, 8, 8)
    vae = PixelVAE()
    assert vae.encode(x) is x and vae.decode(x) is x


# ---------------------------------------------------------------------------------------------------------------
# DC-AE shortcuts, causal chunks, tiles, and the memory plan
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shortcuts", [False, True])
def test_chunked_encode_and_decode_equal_the_whole_clip(shortcuts):
    torch.manual_seed(0)
    vae = small_vae(shortcuts=shortcuts)
    video = torch.randn(1, 3, 17, 32, 40)
    with torch.no_grad():
        whole = vae.encode(video, sample=False)
        recon = vae.decode(whole)
        for chunk in (4, 8, 12):
            vae.chunk_frames = chunk
            torch.testing.assert_close(vae.encode(video, sample=False), whole, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(vae.decode(whole), recon, atol=1e-5, rtol=1e-5)
    assert vae.plan(17, 32, 40).chunk_frames == 12


def test_shortcuts_keep_shapes_and_causality():
    torch.manual_seed(0)
    vae = small_vae(shortcuts=True, spatial_compression=16, channel_mult=(1, 2, 4, 4, 4))
    video = torch.randn(1, 3, 9, 32, 32)
    z = vae.encode(video, sample=False)
    assert z.shape == (1, 4, 3, 2, 2) and vae.decode(z).shape == video.shape
    later = video.clone()
    later[:, :, 5:] += 1.0
    torch.testing.assert_close(vae.encode(later, sample=False)[:, :, :2], z[:, :, :2])
    # the shortcut is a path of its own: with the conv zeroed, a downsample passes each channel's 2x2 means of
    # the two frames it folds (the first frame paired with itself) as two channels
    from einops import rearrange

    from sora.models.vae import Downsample

    down = Downsample(4, 8, temporal=True, shortcut=True)
    torch.nn.init.zeros_(down.conv.conv.weight), torch.nn.init.zeros_(down.conv.conv.bias)
    x = torch.randn(1, 4, 5, 8, 8)
    paired = torch.cat([x[:, :, :1], x], 2)  # 1 4 6 8 8
    want = rearrange(paired, "b c (t pt) (h ph) (w pw) -> b (c pt) t h w (ph pw)", pt=2, ph=2, pw=2).mean(-1)
    torch.testing.assert_close(down(x), want)


def test_tiles_blend_back_exactly_for_local_maps():
    from sora.models.vae_tiling import tiled

    x = torch.randn(2, 3, 5, 40, 56)
    torch.testing.assert_close(tiled(lambda v: 2 * v, x, 16, 8, 1.0), 2 * x)  # overlap-weighted mean of equal values
    pool = lambda v: torch.nn.functional.avg_pool3d(v, (1, 8, 8))
    torch.testing.assert_close(tiled(pool, x, 16, 8, 1 / 8), pool(x))
    up = lambda v: v.repeat_interleave(8, -1).repeat_interleave(8, -2)
    z = pool(x)
    torch.testing.assert_close(tiled(up, z, 2, 1, 8), up(z))


def test_tiled_vae_keeps_shapes_and_a_tile_as_large_as_the_frame_is_exact():
    torch.manual_seed(0)
    vae = small_vae()
    video = torch.randn(1, 3, 5, 64, 96)
    with torch.no_grad():
        whole = vae.encode(video, sample=False)
        recon = vae.decode(whole)
        vae.tile_px, vae.tile_overlap_px = 96, 16
        torch.testing.assert_close(vae.encode(video, sample=False), whole)
        # 3 x 5 tiles; how close they come to the whole frame is measured on a trained VAE (bench/vae.py)
        vae.tile_px = 32
        tiles, tiled_recon = vae.encode(video, sample=False), vae.decode(whole)
    assert tiles.shape == whole.shape and tiled_recon.shape == recon.shape
    assert torch.isfinite(tiles).all() and not torch.equal(tiles, whole)


def test_plan_from_memory_budget():
    from sora.models.vae_tiling import plan

    args = dict(bytes_per_voxel=100.0, temporal_compression=4, spatial_compression=8, overlap_px=32)
    assert plan(17, 64, 64, budget_bytes=1e9, chunk_frames=None, tile_px=None, **args).chunk_frames == 0
    p = plan(65, 64, 64, budget_bytes=100 * 18 * 64 * 64, chunk_frames=None, tile_px=None, **args)
    assert (p.chunk_frames, p.tile_px) == (16, 0)  # 16 + 2 carried frames fit, 20 + 2 do not
    p = plan(65, 1080, 1920, budget_bytes=100 * 6 * 256 * 256, chunk_frames=None, tile_px=None, **args)
    assert p.chunk_frames == 4 and p.tile_px == 256
    assert plan(65, 64, 64, budget_bytes=1.0, chunk_frames=0, tile_px=0, **args).chunk_frames == 0  # set: kept
