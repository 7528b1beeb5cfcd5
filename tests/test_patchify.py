import pytest
import torch

from sora.models.patchify import patchify, unpatchify


@pytest.mark.parametrize("patch_size", [(1, 1, 1), (1, 2, 2), (2, 4, 4), (4, 2, 8)])
def test_round_trip_is_exact(patch_size):
    x = torch.randn(2, 5, 8, 16, 24)  # b c t h w
    tokens = patchify(x, patch_size)
    pt, ph, pw = patch_size
    grid = (8 // pt, 16 // ph, 24 // pw)
    assert tokens.shape == (2, grid[0] * grid[1] * grid[2], 5 * pt * ph * pw)
    assert torch.equal(unpatchify(tokens, patch_size, grid), x)


def test_tokens_are_t_major_spacetime_patches():
    x = torch.arange(1 * 1 * 2 * 2 * 4, dtype=torch.float32).reshape(1, 1, 2, 2, 4)
    tokens = patchify(x, (1, 2, 2))  # grid (2, 1, 2): token 1 is frame 0, right half
    assert tokens.shape == (1, 4, 4)
    assert torch.equal(tokens[0, 1], x[0, 0, 0, :, 2:].reshape(-1))
    assert torch.equal(tokens[0, 2], x[0, 0, 1, :, :2].reshape(-1))


def test_indivisible_shape_names_the_problem():
    with pytest.raises(AssertionError, match="does not divide by patch_size"):
        patchify(torch.randn(1, 3, 5, 8, 8), (2, 2, 2))
