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
  that gives a target PSNR. Over half the cells are a fixed sync pattern; the others carry a 16-bit payload and
  a CRC-8. Informed embedding (ISS, Malvar & Florencio 2003) spends part of the budget cancelling the content's
  own fold, the detector's main noise.
- **Crop** (without a resize) shifts the tiling: the detector tries every cyclic shift at once (FFT
  cross-correlation of the folded tile) and the four half-cell phases. **Downscale** changes the tile's size in
  pixels: the detector tries tile sizes on a log grid. **Frame rate** drops or repeats copies of the same
  pattern, and **H.264** keeps it because a cell is several pixels: the detector averages frames, which also
  averages moving content away. **Brightness** gain scales signal and noise alike in the statistic below.
- **Detection.** Mean luma over frames -> resampled at two samples a cell -> whitened: minus the mean of the 8
  neighbouring cells, over the local mean magnitude of that residual, clipped at 3 (a prediction-error filter,
  so that smooth content and edges do not swamp the mark; against a plain local-mean filter it took 32 272x320
  bikes clips from 25% to 94% detection after a CRF 28 re-encode, the same marks at 40 dB) -> folded into one
  tile (averaging every tile the frame holds) -> z = sum_k s_k f_k / sqrt(sum_k f_k^2) over the sync cells, at
  every phase and shift. Without the mark the key's signs s_k are independent of the content, so by Hoeffding
  P(z > tau) <= exp(-tau^2 / 2) for one (size, phase, shift) whatever the video; over all G tried the
  false-positive rate is at most G exp(-tau^2 / 2), and `confidence` is one minus that bound.
"""

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

# ---------------------------------------------------------------------------------------------------------------
# The key: the tile's sync cells, payload cells and signs
# ---------------------------------------------------------------------------------------------------------------

TILE = 24  # cells a tile side: 576 cells, 336 of them sync (z at most sqrt(336) = 18)
PAYLOAD_BITS = 16  # 10 cells a coded bit: 32 bits (6 cells each) read wrong too often at the z real clips give
CRC_BITS = 8
SYNC_CELLS = 336
CELL_PX = 4  # pixels a cell at embedding: 2 after a halving, still above H.264's finest detail
MIN_CELL_PX, MAX_CELL_PX = 1.25, 8.0  # cell sizes the detector searches (a tile of 30 to 192 pixels)
MIN_TILES = 2.25  # a frame's shorter side holds at least this many tiles: smaller frames get smaller cells...
MIN_EMBED_CELL_PX = 2.5  # ...down to this, which a halving leaves within the search
SCALE_STEP = 1.015  # ratio between tried cell sizes: at most 0.75% off, a third of a cell over two tiles
THRESHOLD_Z = 6.5  # G <= 125 sizes x 4 PHASES x 576 shifts: a false-positive bound of 2e-4 a video (7e-6 at 7)
INFORMED = 0.5  # the share of the content's fold that embedding cancels (ISS's lambda)
MIN_MARK_SHARE = 0.4  # of the energy budget, kept for the keyed pattern whatever the cancelling would take
PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))  # half-cell offsets of the grid the detector tries (a crop between cells)
DEFAULT_KEY = 0x50A4  # the public default key; a deployment that wants a private mark sets its own
METHOD = "sora-tiled-spread-spectrum-v2"  # what a manifest names the mark by
# The smallest frame (shorter side) the mark is embedded in. Measured with `bench/provenance_watermark.py
# --frame-sizes 32,48,64,72,80,88,96,112,128,144 --clips 32` (one thread, 2026-12-05; the log is
# docs/results/cpu-2026-12-05/provenance_frame_sizes.log): on 32 moving-shapes clips of 8 frames at each square
# size (what the built-in dataset's models make), found after a CRF 28 re-encode in 0% at 32 and 48 px (a 2.5-pixel
# cell's tile is 60 pixels: a frame that small holds under one tile to fold), 75-81% at 64-80 px, 97% at 88 px and
# 100% at 96, 112, 128 and 144 px; unattacked in 100% from 64 px; no false positive on the unmarked clips at any
# size (largest z 5.6 against 6.5), PSNR >= 40.0 dB. Smaller cells do not rescue 32 px: 1.25-pixel cells were found
# in 7 of 8 clips unattacked and 0 of 8 after CRF 28 (a throwaway script). Camera footage needs larger frames still:
# resized to 128 px, 22% after CRF 28 (the same log; docs/BENCHMARKS.md has full-size clips).
MIN_FRAME_PX = 96
TOO_SMALL = f"frames under {MIN_FRAME_PX} px"  # why a video carries no mark, as its manifest and `verify` say it


def fits(height: int, width: int) -> bool:
    """Whether frames of this size get the mark (their shorter side is at least MIN_FRAME_PX)."""
    return min(height, width) >= MIN_FRAME_PX


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


def pattern(height: int, width: int, tile: np.ndarray, cell_px: float) -> np.ndarray:
    """(K, K) cell values -> h w: the tile repeated from the top-left corner, bilinear between cell centres."""

    def coords(n):  # pixel centres in cell units, and the two cells each lies between
        p = (np.arange(n) + 0.5) / cell_px - 0.5
        lo = np.floor(p).astype(int)
        return lo % TILE, (lo + 1) % TILE, p - lo

    y0, y1, fy = coords(height)
    x0, x1, fx = coords(width)
    top = tile[y0][:, x0] * (1 - fx) + tile[y0][:, x1] * fx  # h w
    bottom = tile[y1][:, x0] * (1 - fx) + tile[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return psnr_of_mse(float(mse))


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of uint8 frames from their mean squared difference (a sum of squared integer differences over
    their count is exact, so frames read a window at a time give the PSNR of all of them at once)."""
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def embed_cell_px(height: int, width: int) -> float:
    """CELL_PX, or less for frames whose shorter side holds fewer than MIN_TILES tiles of it (the fold averages
    tiles: on a 144-pixel frame, 2.5-pixel cells were read after every attack where 4-pixel ones were not)."""
    return float(np.clip(min(height, width) / (MIN_TILES * TILE), MIN_EMBED_CELL_PX, CELL_PX))


def embed(frames: np.ndarray, payload: int, psnr_target_db: float = 40.0, key: Key | None = None,
          cell_px: float | None = None, informed: float = INFORMED) -> np.ndarray:
    """uint8 t h w 3 -> the frames with the pattern added to R, G and B, at the strength of the target PSNR.

    Informed embedding (ISS, Malvar & Florencio 2003): the detector's statistic is a sum over the folded tile, and
    the content's own fold is its main noise. We know that fold here, so part of the budget subtracts `informed`
    of it (at most 1 - MIN_MARK_SHARE of the energy), and the rest is the keyed pattern.
    """
    change = plan(mean_luma(frames), lambda c: psnr_db(frames, add_change(frames, c)), payload, psnr_target_db, key,
                  cell_px, informed)
    return add_change(frames, change)


def add_change(frames: np.ndarray, change: np.ndarray) -> np.ndarray:
    """uint8 t h w 3 frames plus an h w change on R, G and B alike, rounded and clipped to uint8."""
    x = torch.from_numpy(frames).float()
    return (x + torch.from_numpy(change).float()[None, :, :, None]).round().clamp(0, 255).to(torch.uint8).numpy()


def plan(img: torch.Tensor, psnr_of, payload: int, psnr_target_db: float = 40.0, key: Key | None = None,
         cell_px: float | None = None, informed: float = INFORMED) -> np.ndarray:
    """The h w change `embed` adds to every frame, from the frames' mean luma (1 1 h w, `mean_luma`) and
    psnr_of(change) -> the PSNR the frames would have with it: all the frames are needed only through these two,
    so a long video can be marked from a file read a window at a time (sora/provenance/stamp.py)."""
    key = key or Key.make()
    h, w = img.shape[-2:]
    cell_px = cell_px or embed_cell_px(h, w)
    tile = key.tile(payload)
    mark = pattern(h, w, tile, cell_px)  # h w, the keyed +-1 cells
    amplitude = 255.0 * 10 ** (-psnr_target_db / 20)  # the RMS change that gives the target PSNR
    host = cells(fold(img, cell_px))  # K K: the content's fold, as the detector sees it
    with_mark = cells(fold(img + amplitude * torch.from_numpy(mark).float()[None, None], cell_px))
    gain = float(((with_mark - host) * tile).mean()) / amplitude  # the detector's response to one grey level
    cancel = informed * pattern(h, w, (host - host.mean()) / max(gain, 1e-6), cell_px)  # h w
    budget = h * w * amplitude**2 * 10 ** (-0.01)  # aimed 0.1 dB above the target, rounding's margin
    spent = float((cancel**2).sum())
    if spent > (1 - MIN_MARK_SHARE) * budget:
        cancel *= np.sqrt((1 - MIN_MARK_SHARE) * budget / spent)

    uu, uv, vv = float((mark**2).sum()), float((mark * cancel).sum()), float((cancel**2).sum())
    best = None
    for _ in range(8):  # clipping at 0 and 255 removes part of the change: raise the strength to meet the target
        # amplitude a of the mark such that |a mark - cancel|^2 = budget
        a = (uv + np.sqrt(max(uv**2 - uu * (vv - budget), 0.0))) / uu
        got = psnr_of(a * mark - cancel)
        if got >= psnr_target_db and (best is None or got < best[0]):
            best = (got, a * mark - cancel)  # never more visible than asked: the strongest change that meets it
        if 0 <= got - psnr_target_db < 0.3:
            break
        budget *= min(10 ** ((got - psnr_target_db - 0.1) / 10), 4.0)
    change = a * mark - cancel
    while best is None:  # rounding alone misses the target (a tiny budget): halve the change until it meets it
        change = change / 2
        if (got := psnr_of(change)) >= psnr_target_db:
            best = (got, change)
    return best[1]


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
    """uint8 t h w 3 -> 1 1 h w float: the frames' mean over time and over R, G, B (`luma_of_sum`: summed exactly,
    so a video read a window at a time has the same mean)."""
    return luma_of_sum(luma_sum(frames), frames.shape[0])


def luma_sum(frames: np.ndarray) -> torch.Tensor:
    """uint8 t h w 3 -> h w int64: the sum over time and R, G, B (exact: sums of several windows add up)."""
    return torch.from_numpy(frames).sum(dim=(0, 3), dtype=torch.int64)


def luma_of_sum(total: torch.Tensor, num_frames: int) -> torch.Tensor:
    """An h w `luma_sum` of num_frames frames -> 1 1 h w float32: their mean luma."""
    return (total.double() / (3 * num_frames)).float()[None, None]  # 1 1 h w


def cell_sizes(height: int, width: int) -> np.ndarray:
    """Cell sizes to try: a log grid, up to where one tile still fits the frame's shorter side."""
    top = min(MAX_CELL_PX, min(height, width) / (TILE / 2))  # half a tile each way is still enough to fold
    n = max(1, int(np.floor(np.log(top / MIN_CELL_PX) / np.log(SCALE_STEP))) + 1)
    return MIN_CELL_PX * SCALE_STEP ** np.arange(n)


_NEIGHBOURS = torch.tensor([[1.0, 1, 1], [1, 0, 1], [1, 1, 1]])[None, None] / 8  # 1 1 3 3


def fold(img: torch.Tensor, cell_px: float) -> torch.Tensor:
    """1 1 h w luma -> 2K 2K: resampled to two samples a cell, whitened, every tile the frame holds averaged.

    Whitening: each sample minus the mean of its 8 neighbours one cell away (content is smooth at that scale, the
    keyed cells are independent), divided by the local mean magnitude of that residual and clipped at 3: a flat
    region's cells count as much as a textured one's, and edges cannot swamp the sum.
    """
    h, w = img.shape[-2:]
    hs, ws = max(2 * TILE, round(2 * h / cell_px)), max(2 * TILE, round(2 * w / cell_px))
    x = F.interpolate(img, size=(hs, ws), mode="bilinear", antialias=True, align_corners=False)  # 1 1 hs ws
    x = x - F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), _NEIGHBOURS, dilation=2)  # 1 1 hs ws
    scale = F.avg_pool2d(x.abs(), 7, stride=1, padding=3, count_include_pad=False) + 1e-3  # 3.5 cells around
    x = (x / scale).clamp(-3.0, 3.0)
    k2 = 2 * TILE
    ph, pw = -hs % k2, -ws % k2
    x = F.pad(x, (0, pw, 0, ph))[0, 0]  # H W, multiples of 2K
    ones = F.pad(torch.ones(hs, ws), (0, pw, 0, ph))
    tiles = x.reshape(-1, k2, x.shape[1] // k2, k2).sum(dim=(0, 2))  # 2K 2K
    count = ones.reshape(-1, k2, ones.shape[1] // k2, k2).sum(dim=(0, 2))
    return tiles / count


def cells(f2: torch.Tensor, dy: int = 0, dx: int = 0) -> np.ndarray:
    """2K 2K fold -> K K: each cell the sum of its 2 x 2 samples, the grid starting half-cell step (dy, dx) in."""
    f = torch.roll(f2, shifts=(-dy, -dx), dims=(0, 1)).double()
    return rearrange(f, "(i a) (j b) -> i j (a b)", a=2, b=2).sum(-1).numpy()  # K K


def detect(frames: np.ndarray, key: Key | None = None, threshold_z: float = THRESHOLD_Z) -> Detection:
    """Search tile sizes, half-cell phases and shifts for the sync pattern; decode the payload where it is strongest."""
    key = key or Key.make()
    img = mean_luma(frames)
    h, w = img.shape[-2:]
    sync_f = torch.fft.fft2(torch.from_numpy(np.where(key.is_sync, key.sign, 0.0)))
    mask_f = torch.fft.fft2(torch.from_numpy(key.is_sync.astype(np.float64)))
    best = (-np.inf, None, None, None)
    sizes = cell_sizes(h, w)
    for cell in sizes:
        f2 = fold(img, float(cell))
        for phase in PHASES:
            f = torch.from_numpy(cells(f2, *phase))  # K K
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
    bound = len(sizes) * len(PHASES) * TILE * TILE * np.exp(-z_best**2 / 2)
    return Detection(found, payload if (found and crc_ok) else None, float(max(0.0, 1 - bound)) if found else 0.0,
                     z_best, cell, bits)
