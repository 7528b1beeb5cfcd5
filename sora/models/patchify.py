"""Spacetime patches: a video latent `b c t h w` <-> a token sequence `b (t h w) (pt ph pw c)`, exactly invertible."""

import torch
from einops import rearrange


def check_patchable(shape: tuple[int, ...], patch_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """The token grid (t, h, w) of a `b c t h w` shape; asserts every axis divides by its patch size."""
    assert len(shape) == 5, f"want b c t h w, got shape {tuple(shape)}"
    pt, ph, pw = patch_size
    _, _, t, h, w = shape
    assert t % pt == 0 and h % ph == 0 and w % pw == 0, (
        f"latent t h w = {t} {h} {w} does not divide by patch_size {tuple(patch_size)}")
    return t // pt, h // ph, w // pw


def patchify(x: torch.Tensor, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """b c t h w -> b n d, with n = (t/pt)(h/ph)(w/pw) tokens in t-major order and d = pt*ph*pw*c."""
    check_patchable(x.shape, patch_size)
    pt, ph, pw = patch_size
    return rearrange(x, "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)


def unpatchify(tokens: torch.Tensor, patch_size: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """b n d -> b c t h w, the exact inverse of `patchify` for a token grid (t, h, w)."""
    pt, ph, pw = patch_size
    t, h, w = grid
    assert tokens.shape[1] == t * h * w, f"{tokens.shape[1]} tokens do not fill the grid {grid}"
    return rearrange(tokens, "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)
