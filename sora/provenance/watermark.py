"""An invisible watermark in the pixels of every frame: a keyed, tiled spread-spectrum pattern.

    marked = embed(frames, payload)     # uint8 t h w 3 -> uint8 t h w 3, the same pattern in every frame
    result = detect(frames)             # Detection(found, payload, confidence, z, ...)

Why a method of our own rather than `invisible-watermark` (DWT-DCT, DWT-DCT-SVD, RivaGAN): its DWT-DCT methods
write each bit into 4x4 block coefficients at fixed pixel positions, so a resize or a crop moves every block
(its README lists both as unsupported), and RivaGAN needs onnx weights and works on 256x256 crops. Learned
watermarks (VideoSeal) need weights we cannot ship. This one follows the periodic watermarks of Kutter (1998)
and Kalker et al. (1999), with the payload as spread-spectrum chips (Cox et al. 1997):

- **Pattern.** A K x K tile of keyed random +-1 cells, repeated over the frame, bilinearly interpolated at
  `cell_px` pixels a cell, the same in every frame, added to R, G and B alike (a luma change) at the strength
  that gives a target PSNR. Half the cells are a fixed sync pattern; the others carry a 16-bit payload and a CRC-8.
- **Crop** (without a resize) shifts the tiling: the detector tries every cyclic shift at once (FFT
  cross-correlation of the folded tile). **Downscale** changes the tile's size in pixels: the detector tries
  tile sizes on a log grid. **Frame rate** drops or repeats copies of the same pattern, and **H.264** keeps
  it because a cell is several pixels: the detector averages frames, which also averages moving content away.
  **Brightness** gain scales signal and noise alike in the self-normalised statistic below.
- **Detection.** Mean luma over frames -> resized so that a cell is one pixel -> minus its local mean (the
  content's coarse structure, which would swamp the mark), clipped at 1.5 robust std (edges) -> folded into
  one K x K tile (averaging every tile the frame holds) -> z = sum_k s_k f_k / sqrt(sum_k f_k^2) over the sync
  cells, at every shift. Without the mark the key's signs s_k are independent of the content, so by Hoeffding P(z > tau) <= exp(-tau^2 / 2) for one
  (size, shift) whatever the video; over all G tried the false-positive rate is at most G exp(-tau^2 / 2),
  and `confidence` is one minus that bound.
"""

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------------------
# The key: the tile's sync cells, payload cells and signs
# ---------------------------------------------------------------------------------------------------------------

TILE = 24  # cells a tile side: 576 cells, 336 of them sync (z at most sqrt(336) = 18)
PAYLOAD_BITS = 16  # 10 cells a coded bit: 32 bits (6 cells each) read wrong too often at the z real clips give
CRC_BITS = 8
SYNC_CELLS = 336
CELL_PX = 4  # pixels a cell at embedding: 2 after a halving, still above H.264's finest detail
MIN_CELL_PX, MAX_CELL_PX = 1.0, 8.0  # cell sizes the detector searches (a tile of 24 to 192 pixels)
SCALE_STEP = 1.015  # ratio between tried cell sizes: at most 0.75% off, a third of a cell over two tiles
THRESHOLD_Z = 6.5  # with G ~ 140 sizes x 576 shifts: a false-positive bound of 5e-5 a video (1.6e-6 at 7)
DEFAULT_KEY = 0x50A4  # the public default key; a deployment that wants a private mark sets its own


@dataclass(frozen=True)
class Key:
    """The keyed tile: each cell's chip sign, whether it is a sync cell, and which coded bit it carries."""

    sign: np.ndarray  # (K, K) +-1
    is_sync: np.ndarray  # (K, K) bool
    bit: np.ndarray  # (K, K) coded bit of a payload cell (-1 for sync)

    @classmethod
    def make(cls, seed: int = DEFAULT_KEY) -> "Key":
        rng = np.random.default_rng(seed)
        n, coded = TILE * TILE, PAYLOAD_BITS + CRC_BITS
        order = rng.permutation(n)
        is_sync = np.zeros(n, bool)
        is_sync[order[:SYNC_CELLS]] = True
        bit = np.full(n, -1)
        bit[order[SYNC_CELLS:]] = np.arange(n - SYNC_CELLS) % coded
        sign = rng.choice(np.array([-1.0, 1.0]), size=n)
        return cls(sign.reshape(TILE, TILE), is_sync.reshape(TILE, TILE), bit.reshape(TILE, TILE))

    def tile(self, payload: int) -> np.ndarray:
        """(K, K) +-1 cell values for a payload."""
        bits = payload_bits(payload)
        return self.sign * np.where(self.is_sync, 1.0, bits[np.maximum(self.bit, 0)])


# ---------------------------------------------------------------------------------------------------------------
# Payload bits
# ---------------------------------------------------------------------------------------------------------------


def payload_bits(payload: int) -> np.ndarray:
    """16-bit payload -> 24 coded bits (+-1): the payload and a CRC-8 (the low byte of its CRC-32), MSB first."""
    payload &= (1 << PAYLOAD_BITS) - 1
    crc = zlib.crc32(payload.to_bytes(4, "big")) & ((1 << CRC_BITS) - 1)
    word = (payload << CRC_BITS) | crc
    return np.array([(word >> (PAYLOAD_BITS + CRC_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS + CRC_BITS)],
                    dtype=np.float64) * 2 - 1


def bits_payload(bits: np.ndarray) -> tuple[int, bool]:
    """Coded bits (+-1) -> (payload, whether its CRC matches)."""
    word = 0
    for b in bits:
        word = (word << 1) | int(b > 0)
    payload = word >> CRC_BITS
    return payload, bool(np.array_equal(payload_bits(payload), np.where(np.asarray(bits) > 0, 1.0, -1.0)))


# ---------------------------------------------------------------------------------------------------------------
# Embedding
# ---------------------------------------------------------------------------------------------------------------


def pattern(height: int, width: int, payload: int, key: Key, cell_px: float = CELL_PX) -> np.ndarray:
    """The h w pattern (RMS 1): the tile repeated from the top-left corner, bilinear between cell centres."""
    tile = key.tile(payload)

    def coords(n):  # pixel centres in cell units, and the two cells each lies between
        p = (np.arange(n) + 0.5) / cell_px - 0.5
        lo = np.floor(p).astype(int)
        return lo % TILE, (lo + 1) % TILE, p - lo

    y0, y1, fy = coords(height)
    x0, x1, fx = coords(width)
    top = tile[y0][:, x0] * (1 - fx) + tile[y0][:, x1] * fx  # h w
    bottom = tile[y1][:, x0] * (1 - fx) + tile[y1][:, x1] * fx
    w = top * (1 - fy[:, None]) + bottom * fy[:, None]
    return w / np.sqrt(np.mean(w**2))


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def embed_cell_px(height: int, width: int) -> float:
    """CELL_PX, or less for frames too small to hold one tile of it (down to one pixel)."""
    return float(np.clip(min(height, width) / TILE, MIN_CELL_PX, CELL_PX))


def embed(frames: np.ndarray, payload: int, psnr_target_db: float = 42.0, key: Key | None = None,
          cell_px: float | None = None) -> np.ndarray:
    """uint8 t h w 3 -> the frames with the pattern added to R, G and B, at the strength of the target PSNR."""
    key = key or Key.make()
    t, h, w, _ = frames.shape
    cell_px = cell_px or embed_cell_px(h, w)
    wm = torch.from_numpy(pattern(h, w, payload, key, cell_px)).float()[None, :, :, None]  # 1 h w 1
    x = torch.from_numpy(frames).float()
    amplitude = 255.0 * 10 ** (-psnr_target_db / 20)  # the RMS change that gives the target PSNR
    for _ in range(3):  # clipping at 0 and 255 removes part of the change: raise the strength to meet the target
        out = (x + amplitude * wm).round().clamp(0, 255).to(torch.uint8).numpy()
        got = psnr_db(frames, out)
        if abs(got - psnr_target_db) < 0.25:
            break
        amplitude *= min(10 ** ((got - psnr_target_db) / 20), 2.0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Detection:
    found: bool
    payload: int | None  # the decoded payload, when found and its CRC matches
    confidence: float  # 1 - the false-positive bound at this z (0 when not found)
    z: float  # the sync statistic at the best tile size and shift
    cell_px: float  # the cell size it was found at
    bits: np.ndarray  # the 24 coded bits as read (+-1)

    def as_dict(self) -> dict:
        return {"found": self.found, "payload": None if self.payload is None else f"{self.payload:04x}",
                "confidence": round(self.confidence, 6)}


def mean_luma(frames: np.ndarray) -> torch.Tensor:
    """uint8 t h w 3 -> 1 1 h w float: the frames' mean over time and over R, G, B."""
    return torch.from_numpy(frames).float().mean(dim=(0, 3))[None, None]  # 1 1 h w


def cell_sizes(height: int, width: int) -> np.ndarray:
    """Cell sizes to try: a log grid, up to where one tile still fits the frame's shorter side."""
    top = min(MAX_CELL_PX, min(height, width) / (TILE / 2))  # half a tile each way is still enough to fold
    n = max(1, int(np.floor(np.log(top / MIN_CELL_PX) / np.log(SCALE_STEP))) + 1)
    return MIN_CELL_PX * SCALE_STEP ** np.arange(n)


def fold(img: torch.Tensor, cell_px: float) -> torch.Tensor:
    """1 1 h w luma -> K K: resized to one pixel a cell, minus its local mean, tiles averaged (with their count)."""
    h, w = img.shape[-2:]
    hc, wc = max(TILE, round(h / cell_px)), max(TILE, round(w / cell_px))
    x = F.interpolate(img, size=(hc, wc), mode="bilinear", antialias=True, align_corners=False)  # 1 1 hc wc
    x = x - F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)  # the content's coarse structure out
    mad = x.abs().median() * 1.4826 + 1e-6  # the residual's robust std
    x = x.clamp(-1.5 * mad, 1.5 * mad)  # edges leave heavy tails that would swamp the mark (a Huber-like clip)
    ph, pw = -hc % TILE, -wc % TILE
    x = F.pad(x, (0, pw, 0, ph))[0, 0]  # H W, multiples of K
    ones = F.pad(torch.ones(hc, wc), (0, pw, 0, ph))
    tiles = x.reshape(-1, TILE, x.shape[1] // TILE, TILE).sum(dim=(0, 2))  # K K
    count = ones.reshape(-1, TILE, ones.shape[1] // TILE, TILE).sum(dim=(0, 2))
    return tiles / count


def detect(frames: np.ndarray, key: Key | None = None, threshold_z: float = THRESHOLD_Z) -> Detection:
    """Search tile sizes and shifts for the sync pattern; decode the payload where it is strongest."""
    key = key or Key.make()
    img = mean_luma(frames)
    h, w = img.shape[-2:]
    sync = torch.from_numpy(np.where(key.is_sync, key.sign, 0.0))
    sync_f = torch.fft.fft2(sync)
    mask_f = torch.fft.fft2(torch.from_numpy(key.is_sync.astype(np.float64)))
    best = (-np.inf, None, None)
    sizes = cell_sizes(h, w)
    for cell in sizes:
        f = fold(img, float(cell)).double()  # K K
        # Cyclic cross-correlation at every shift (dy, dx): the tile read from f starting at (dy, dx).
        num = torch.fft.ifft2(torch.fft.fft2(f) * sync_f.conj()).real
        den = torch.fft.ifft2(torch.fft.fft2(f**2) * mask_f.conj()).real.clamp_min(1e-12).sqrt()
        z = num / den
        k = int(torch.argmax(z))
        if z.flatten()[k] > best[0]:
            best = (float(z.flatten()[k]), float(cell), (k // TILE, k % TILE), f)
    z_best, cell, (dy, dx), f = best
    aligned = torch.roll(f, shifts=(-dy, -dx), dims=(0, 1)).numpy()  # tile cell (i, j) at [i, j]
    soft = np.zeros(PAYLOAD_BITS + CRC_BITS)
    payload_cells = ~key.is_sync
    np.add.at(soft, key.bit[payload_cells], (aligned * key.sign)[payload_cells])
    bits = np.where(soft >= 0, 1.0, -1.0)
    payload, crc_ok = bits_payload(bits)
    found = z_best >= threshold_z
    bound = len(sizes) * TILE * TILE * np.exp(-z_best**2 / 2)
    return Detection(found, payload if (found and crc_ok) else None, float(max(0.0, 1 - bound)) if found else 0.0,
                     z_best, cell, bits)
