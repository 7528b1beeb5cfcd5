"""Bounded memory for long and large videos: causal chunks in time, overlapping tiles in space.

A causal VAE's latent frame j depends only on frames <= j * temporal_compression, so a clip can be encoded chunk
by chunk (the first frame, then `chunk_frames` at a time) if every causal convolution carries the frames it still
needs from the previous chunk: a feature cache, as Wan-VAE encodes (Wan et al. 2025, sec. 3.1). The result equals
the whole clip's to float tolerance, and memory no longer grows with length. Large frames are cut into tiles that
overlap by `overlap` pixels, each encoded (or decoded) alone, and blended with linear ramps across the overlap (as
diffusers' `enable_tiling` and HunyuanVideo's VAE do): memory then no longer grows with size. Tiles are not exact
(each tile's convolutions see zero padding at its borders, and its norms see only the tile); the blend hides the
seams.

`plan(...)` chooses both from an activation-memory budget when the config leaves them unset.
"""

from dataclasses import dataclass
from typing import Callable

import torch

# ---------------------------------------------------------------------------------------------------------------
# Tiles in space
# ---------------------------------------------------------------------------------------------------------------


def _starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every `stride`, the last one flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(length: int, overlap: int, before: bool, after: bool, device) -> torch.Tensor:
    """Blend weights along one axis of a tile: rising over the overlap it shares with the tile before, falling
    over the one with the tile after, 1 elsewhere; never 0, so every position has weight."""
    w = torch.ones(length, device=device)
    if overlap > 0:
        ramp = torch.arange(1, overlap + 1, device=device, dtype=torch.float32) / (overlap + 1)  # overlap
        n = min(overlap, length)
        if before:
            w[:n] = torch.minimum(w[:n], ramp[:n])
        if after:
            w[length - n:] = torch.minimum(w[length - n:], ramp[:n].flip(0))
    return w


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
          scale: float) -> torch.Tensor:
    """fn applied to overlapping spatial tiles of x (b c t h w), the outputs blended: b c' t' (h*scale) (w*scale).

    `tile` and `overlap` are in x's pixels; `scale` is fn's spatial factor (1/8 for an 8x encoder, 8 for its
    decoder), and tile * scale and overlap * scale must be whole numbers.
    """
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    stride = tile - overlap
    assert stride > 0, f"tile {tile} must exceed its overlap {overlap}"
    ys, xs = _starts(h, tile, stride), _starts(w, tile, stride)
    out = weight = None
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            part = fn(x[..., y0:y0 + tile, x0:x0 + tile])  # b c' t' th tw
            if out is None:
                b, c, t = part.shape[:3]
                out = part.new_zeros(b, c, t, round(h * scale), round(w * scale))
                weight = part.new_zeros(1, 1, 1, round(h * scale), round(w * scale))
            th, tw = part.shape[-2:]
            oy, ox, ov = round(y0 * scale), round(x0 * scale), round(overlap * scale)
            wy = _ramp(th, ov, i > 0, i < len(ys) - 1, x.device)  # th
            wx = _ramp(tw, ov, j > 0, j < len(xs) - 1, x.device)  # tw
            w2 = (wy[:, None] * wx[None, :]).to(part.dtype)  # th tw
            out[..., oy:oy + th, ox:ox + tw] += part * w2
            weight[..., oy:oy + th, ox:ox + tw] += w2
    return out / weight


# ---------------------------------------------------------------------------------------------------------------
# Choosing chunks and tiles from a memory budget
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    chunk_frames: int  # pixel frames a chunk after the first; 0: the whole clip at once
    tile_px: int  # 0: no tiles
    overlap_px: int


def plan(num_frames: int, height: int, width: int, bytes_per_voxel: float, budget_bytes: float,
         temporal_compression: int, spatial_compression: int, chunk_frames: int | None, tile_px: int | None,
         overlap_px: int) -> Plan:
    """Chunks and tiles for one encode or decode of a (num_frames, height, width) clip, in pixels.

    `bytes_per_voxel` is the activation memory the network holds at once per pixel-space voxel (t * h * w), so a
    (t, h, w) piece needs about bytes_per_voxel * t * h * w. A value the config sets is kept; a null one is the
    largest that fits the budget: the whole clip, else the longest chunk, else tiles too.
    """
    tc, sc = temporal_compression, spatial_compression
    overlap = overlap_px // sc * sc  # tile edges on the latent grid
    fits = lambda t, h, w: bytes_per_voxel * t * h * w <= budget_bytes
    if chunk_frames is None:
        if fits(num_frames, height, width):
            chunk_frames = 0
        else:
            chunk_frames = tc
            longest = (num_frames - 1) // tc * tc
            for frames in range(longest, tc - 1, -tc):  # the longest chunk that fits
                if fits(frames + 2, height, width):  # + the frames a chunk carries over
                    chunk_frames = frames
                    break
    if tile_px is None:
        t = chunk_frames + 2 if chunk_frames else num_frames
        tile_px = 0
        if not fits(t, height, width):
            side = max(int((budget_bytes / (bytes_per_voxel * t)) ** 0.5) // sc * sc, overlap + sc, 2 * sc)
            tile_px = side if side < max(height, width) else 0
    tile_px = tile_px // sc * sc
    if tile_px and tile_px <= overlap:
        overlap = max(0, (tile_px // 2) // sc * sc)
    return Plan(int(chunk_frames), int(tile_px), int(overlap))
