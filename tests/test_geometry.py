"""One latent geometry: shapes from the VAE object and the patch size, whatever the VAE's frame rule."""

import pytest
import torch

from sora.errors import SoraError
from sora.models.geometry import LatentGeometry
from sora.models.vae import CausalVAE, PixelVAE, VAEArgs


def test_of_a_causal_vae_matches_what_it_encodes():
    vae = CausalVAE(VAEArgs("causal3d", 4, 4, 8, base_channels=8, channel_mult=[1, 1, 2, 2])).eval()
    geometry = LatentGeometry.of(vae, (1, 2, 2))
    for frames, h, w in [(1, 32, 48), (5, 32, 32), (9, 16, 48)]:
        z = vae.encode(torch.randn(1, 3, frames, h, w), sample=False)
        assert geometry.latent_shape(frames, h, w) == tuple(z.shape[1:])
        assert geometry.token_grid(frames, h, w) == (z.shape[2], z.shape[3] // 2, z.shape[4] // 2)
        assert geometry.grid_of_latent(z.shape) == geometry.token_grid(frames, h, w)


def test_pixel_space_takes_any_length():
    geometry = LatentGeometry.of(PixelVAE(), (2, 8, 8))
    assert geometry.latent_shape(8, 32, 32) == (3, 8, 32, 32) and geometry.num_tokens(8, 32, 32) == 64
    assert geometry.problems(8, 32, 32) == []
    assert "patch_size[0]=2" in geometry.problems(7, 32, 32)[0]


@pytest.mark.parametrize("tc, first_alone, frames, latent", [
    (4, True, 17, 5),  # Wan, CogVideoX, Hunyuan: 1 + 4k
    (8, True, 25, 4),  # LTX-Video: 1 + 8k
    (4, False, 16, 4),  # a VAE without a causal first frame: 4k
])
def test_other_frame_rules_plug_in(tc, first_alone, frames, latent):
    geometry = LatentGeometry(16, tc, 8, first_alone, (1, 2, 2))
    assert geometry.latent_frames(frames) == latent and geometry.problems(frames, 64, 64) == []
    assert "frames" in geometry.problems(frames + 1, 64, 64)[0]


def test_a_size_that_cannot_be_cut_is_named():
    geometry = LatentGeometry(4, 4, 8, True, (1, 2, 2))
    with pytest.raises(SoraError, match=r"data.buckets: \[8, 64, 64\].*1 \+ k \* 4 frames"):
        geometry.check(8, 64, 64, "data.buckets")
    with pytest.raises(SoraError, match="height and width must divide by 8x2 and 8x2"):
        geometry.check(9, 60, 64, "height, width")


def test_latent_index_follows_the_frame_rule():
    causal = LatentGeometry(16, 4, 8, True, (1, 2, 2))
    assert causal.latent_index(9).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]  # frame 0 alone, then groups of 4
    assert LatentGeometry(16, 4, 8, False, (1, 2, 2)).latent_index(8).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert LatentGeometry(3, 1, 1, False, (1, 1, 1)).latent_index(3).tolist() == [0, 1, 2]  # pixel space
    for n in (1, 5, 9, 17):  # the last pixel frame falls in the last latent frame
        assert int(causal.latent_index(n)[-1]) + 1 == causal.latent_frames(n)
