import pytest
import torch

from sora.models.vae import CausalVAE, PixelVAE


def small_vae(**kw):
    args = dict(latent_channels=4, temporal_compression=4, spatial_compression=8, base_channels=8,
                channel_mult=(1, 2, 2, 2), num_res_blocks=1)
    return CausalVAE(**{**args, **kw}).eval()


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
