"""Video autoencoders behind one interface: `encode(video) -> latent`, `decode(latent) -> video`, both `b c t h w`.

Every VAE also says how it compresses: `latent_channels`, `temporal_compression`, `spatial_compression` and
`first_frame_alone` (its frame rule). `sora.models.geometry.LatentGeometry` derives every shape from those.

PixelVAE is the identity (for ablations and tiny runs). CausalVAE is a 3D convolutional KL autoencoder whose
convolutions only look back in time, so latent frame j depends on input frames <= j * temporal_compression and
the first frame is encoded alone: an image is a 1-frame video (as in MAGVIT-v2, Yu et al. 2023, and the
causal VAEs of CogVideoX and Open-Sora-Plan). Clips have 1 + k * temporal_compression frames.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from sora.errors import SoraError
from sora.models.geometry import LatentGeometry
from sora.models.vae_tiling import plan, tiled
from sora.settings import Settings, setting

# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


class VAEKind(str, Enum):
    pixel = "pixel"  # identity: the DiT works on pixels
    causal3d = "causal3d"  # causal 3D convolutional KL autoencoder
    diffusers = "diffusers"  # a diffusers video VAE (Wan, CogVideoX, HunyuanVideo, LTX-Video) from a local directory


@dataclass
class VAEArgs(Settings):
    """`vae.*`: CausalVAE's architecture (kind=causal3d), a trained one's checkpoint (`ckpt`, read by
    sora.inference.checkpoint.load_vae; its architecture then comes from the checkpoint), or a pretrained diffusers
    VAE's folder (kind=diffusers, `path`). The last four keys bound encode/decode memory for every kind
    (sora/models/vae_tiling.py). The quick start trains in pixel space (kind=pixel)."""

    kind: VAEKind = VAEKind.pixel
    latent_channels: int = setting(3, ge=1)
    temporal_compression: int = setting(1, ge=1)  # a power of 2, at most spatial_compression
    spatial_compression: int = setting(1, ge=1)  # a power of 2
    base_channels: int = setting(64, ge=1)
    channel_mult: List[int] = setting(factory=lambda: [1, 2, 4, 4], ge=1, each=True)  # log2(spatial) + 1 levels
    num_res_blocks: int = setting(1, ge=1)
    # Residual space-to-channel shortcuts around every down- and upsampling (DC-AE, Chen et al. 2024): what lets a
    # high-compression autoencoder train as well as a shallow one.
    shortcuts: bool = False
    ckpt: Optional[str] = None
    # kind=diffusers: a directory written by diffusers' save_pretrained (config.json + weights).
    path: Optional[str] = None
    # Causal chunked encode/decode: pixel frames a chunk after the first frame (a multiple of temporal_compression;
    # the result equals the whole clip's). null: chosen from memory_budget_gb; 0: the whole clip at once.
    chunk_frames: Optional[int] = setting(None, ge=0)
    # Spatial tiles of tile_px pixels overlapping by tile_overlap_px, blended linearly. null: chosen from
    # memory_budget_gb; 0: never tiled.
    tile_px: Optional[int] = setting(None, ge=0)
    tile_overlap_px: int = setting(32, ge=0)
    # Activation memory one encode or decode may use when chunk_frames / tile_px are null.
    memory_budget_gb: float = setting(2.0, gt=0)

    def check(self, at: str = "") -> None:
        if self.kind == VAEKind.diffusers and not self.path:  # what is in the directory is checked when it is read
            raise SoraError(f"vae=diffusers needs {at}path: a local directory written by diffusers' save_pretrained")
        if self.kind != VAEKind.causal3d or self.ckpt:  # a checkpoint brings its own (already checked) architecture
            return
        for key in ("temporal_compression", "spatial_compression"):
            value = getattr(self, key)
            if value & (value - 1):
                raise SoraError(f"{at}{key} must be a power of 2, got {value}")
        if self.temporal_compression > self.spatial_compression:
            raise SoraError(f"{at}temporal_compression={self.temporal_compression} may not exceed "
                            f"{at}spatial_compression={self.spatial_compression}")
        levels = self.spatial_compression.bit_length() - 1  # one downsampling per factor of 2
        if len(self.channel_mult) != levels + 1:
            raise SoraError(f"{at}channel_mult needs log2({at}spatial_compression) + 1 = {levels + 1} entries, "
                            f"got {list(self.channel_mult)}")
        if self.shortcuts:  # each shortcut folds space (x4, or x8 with time) into the next level's channels, evenly
            chans = [self.base_channels * m for m in self.channel_mult]
            for a, b in zip(chans, chans[1:]):
                if (4 * a) % b or (4 * b) % a:
                    raise SoraError(f"{at}shortcuts=true folds each level's channels 4x (8x with time) into the "
                                    f"next: {a} -> {b} channels in {at}channel_mult={list(self.channel_mult)} "
                                    "do not divide")

# ---------------------------------------------------------------------------------------------------------------
# Pixel space
# ---------------------------------------------------------------------------------------------------------------


class PixelVAE(nn.Module):
    """The identity: latents are pixels in [-1, 1]."""

    latent_channels, temporal_compression, spatial_compression, first_frame_alone = 3, 1, 1, False

    def encode(self, video: torch.Tensor, sample: bool = True) -> torch.Tensor:
        return video

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def moments(self, video: torch.Tensor) -> torch.Tensor:
        """b 3 t h w -> b 6 t h w: the latent and a zero std (the latent cache's format, see
        sora/data/latent_cache.py)."""
        return torch.cat([video, torch.zeros_like(video)], dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Causal building blocks
# ---------------------------------------------------------------------------------------------------------------


class CausalConv3d(nn.Module):
    """3D convolution padded only at the start of time (by repeating the first frame): no look-ahead.

    Streaming (sora/models/vae_tiling.py): while `streaming`, each call is the next chunk of one clip, and the
    input frames the next chunk's first outputs still need are carried over (the feature cache), so chunk by chunk
    gives what the whole clip gives.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride=(1, 1, 1)):
        super().__init__()
        self.time_pad, self.time_stride = kernel - 1, stride[0]
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2))
        self.streaming, self.carry = False, None

    def forward(self, x):
        if self.streaming and self.carry is not None:
            x = torch.cat([self.carry, x], dim=2)  # b c (carried + t) h w
        else:
            first = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)  # b c pad h w
            x = torch.cat([first, x], dim=2)  # b c (pad + t) h w
        if self.streaming:  # keep the frames from the first one no output of this chunk has started at
            outputs = (x.shape[2] - self.time_pad - 1) // self.time_stride + 1
            self.carry = x[:, :, outputs * self.time_stride:].clone()  # clone: do not hold the whole chunk
        return self.conv(x)


class FrameNorm(nn.GroupNorm):
    """GroupNorm over each frame alone: normalising across time would leak the future into the past."""

    def forward(self, x):
        b = x.shape[0]
        x = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b c t h w", b=b)


def _norm(channels: int) -> FrameNorm:
    return FrameNorm(min(32, channels // 4) if channels >= 8 else 1, channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(_norm(c_in), nn.SiLU(), CausalConv3d(c_in, c_out), _norm(c_out), nn.SiLU(),
                                  CausalConv3d(c_out, c_out))
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class _FirstChunk(nn.Module):
    """A layer that treats a clip's first frame apart: `first_done` says, while streaming, that it was seen."""

    streaming, first_done = False, False

    def starts_clip(self) -> bool:
        return not (self.streaming and self.first_done)


class Downsample(_FirstChunk):
    """Stride-2 causal conv: halves h and w, and t (1 + 2k -> 1 + k) if temporal.

    With `shortcut` (DC-AE, Chen et al. 2024, sec. 3.1) the output adds a parameter-free path: space (and time)
    folded into channels, then groups of channels averaged down to c_out. The conv then learns a residual over
    an average pool, which keeps deep compression trainable. In time the first frame is paired with itself, so
    frame j >= 1 of the output folds input frames 2j - 1 and 2j: still causal.
    """

    def __init__(self, c_in: int, c_out: int, temporal: bool, shortcut: bool = False):
        super().__init__()
        self.temporal, self.shortcut = temporal, shortcut
        self.conv = CausalConv3d(c_in, c_out, 3, stride=(2 if temporal else 1, 2, 2))
        folded = c_in * (8 if temporal else 4)
        assert not shortcut or folded % c_out == 0, f"shortcut: {folded} folded channels do not average to {c_out}"
        self.group = folded // c_out

    def forward(self, x):
        out = self.conv(x)
        if not self.shortcut:
            return out
        if self.temporal:
            if self.starts_clip():
                x = torch.cat([x[:, :, :1], x], dim=2)  # b c (1 + t) h w: the first frame paired with itself
            self.first_done = True
            x = rearrange(x, "b c (t pt) (h ph) (w pw) -> b (c pt ph pw) t h w", pt=2, ph=2, pw=2)
        else:
            x = rearrange(x, "b c t (h ph) (w pw) -> b (c ph pw) t h w", ph=2, pw=2)
        return out + rearrange(x, "b (c g) t h w -> b c g t h w", g=self.group).mean(dim=2)  # b c_out t h w


class Upsample(_FirstChunk):
    """Nearest 2x in h and w, and in t (1 + k -> 1 + 2k, the first frame not doubled) if temporal; then a conv.

    With `shortcut` (DC-AE) the output adds channels repeated up to c_out * 4 (or * 8) and unfolded into space
    (and time): the inverse of Downsample's shortcut.
    """

    def __init__(self, c_in: int, c_out: int, temporal: bool, shortcut: bool = False):
        super().__init__()
        self.temporal, self.shortcut = temporal, shortcut
        self.conv = CausalConv3d(c_in, c_out)
        unfolded = c_out * (8 if temporal else 4)
        assert not shortcut or unfolded % c_in == 0, f"shortcut: {c_in} channels do not repeat to {unfolded}"
        self.repeats = unfolded // c_in

    def forward(self, x):
        first = self.starts_clip()  # the clip's first latent frame is not doubled
        self.first_done = True
        up = x
        if self.temporal:
            up = up.repeat_interleave(2, dim=2)[:, :, 1 if first else 0:]  # b c t h w -> b c (2t - first) h w
        out = self.conv(F.interpolate(up, scale_factor=(1, 2, 2), mode="nearest"))  # b c_out t' 2h 2w
        if not self.shortcut:
            return out
        x = x.repeat_interleave(self.repeats, dim=1)  # b (c_out pt ph pw) t h w
        if self.temporal:
            x = rearrange(x, "b (c pt ph pw) t h w -> b c (t pt) (h ph) (w pw)", pt=2, ph=2, pw=2)
            x = x[:, :, 1 if first else 0:]  # b c_out (2t - first) 2h 2w
        else:
            x = rearrange(x, "b (c ph pw) t h w -> b c t (h ph) (w pw)", ph=2, pw=2)
        return out + x


@contextmanager
def streaming(module: nn.Module):
    """Within it, each call of `module` is the next chunk of one clip (see CausalConv3d); fresh state each time."""
    layers = [m for m in module.modules() if isinstance(m, (CausalConv3d, _FirstChunk))]

    def reset(on: bool):
        for m in layers:
            m.streaming, m.first_done = on, False
            if isinstance(m, CausalConv3d):
                m.carry = None

    reset(True)
    try:
        yield
    finally:
        reset(False)


# ---------------------------------------------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------------------------------------------


class CausalVAE(nn.Module):
    first_frame_alone = True  # causal in time: clips have 1 + k * temporal_compression frames

    def __init__(self, args: VAEArgs):
        super().__init__()
        latent_channels, temporal_compression, spatial_compression = (args.latent_channels, args.temporal_compression,
                                                                      args.spatial_compression)
        base_channels, channel_mult, num_res_blocks, shortcuts = (args.base_channels, args.channel_mult,
                                                                  args.num_res_blocks, args.shortcuts)
        chunk_frames, tile_px, tile_overlap_px = args.chunk_frames, args.tile_px, args.tile_overlap_px
        memory_budget_gb = args.memory_budget_gb
        # VAEArgs.check: powers of 2
        n_spatial, n_temporal = int(math.log2(spatial_compression)), int(math.log2(temporal_compression))
        self.latent_channels = latent_channels
        self.temporal_compression, self.spatial_compression = temporal_compression, spatial_compression
        self.chunk_frames, self.tile_px, self.tile_overlap_px = chunk_frames, tile_px, tile_overlap_px
        self.memory_budget_bytes = memory_budget_gb * 2**30
        chans = [base_channels * m for m in channel_mult]
        # Time is halved at the deepest `n_temporal` downsamples, and restored at the first upsamples.
        temporal_at = [i >= n_spatial - n_temporal for i in range(n_spatial)]
        # Without shortcuts a level's channels change in its first ResBlock; with them, in the resampling layer,
        # whose shortcut then folds space into exactly those channels (DC-AE).
        down_out = [chans[i + 1] if shortcuts else chans[i] for i in range(n_spatial)]
        up_out = [chans[i - 1] if shortcuts else chans[i] for i in range(n_spatial + 1)]

        enc = [CausalConv3d(3, chans[0])]
        for i in range(n_spatial + 1):
            c_in = down_out[i - 1] if i > 0 else chans[0]
            enc += [ResBlock(c_in if j == 0 else chans[i], chans[i]) for j in range(num_res_blocks)]
            if i < n_spatial:
                enc.append(Downsample(chans[i], down_out[i], temporal_at[i], shortcuts))
        enc += [ResBlock(chans[-1], chans[-1]), _norm(chans[-1]), nn.SiLU(),
                CausalConv3d(chans[-1], 2 * latent_channels)]
        self.encoder = nn.Sequential(*enc)

        dec = [CausalConv3d(latent_channels, chans[-1]), ResBlock(chans[-1], chans[-1])]
        for i in reversed(range(n_spatial + 1)):
            c_in = up_out[i + 1] if i < n_spatial else chans[-1]
            dec += [ResBlock(c_in if j == 0 else chans[i], chans[i]) for j in range(num_res_blocks)]
            if i > 0:
                dec.append(Upsample(chans[i], up_out[i], temporal_at[i - 1], shortcuts))
        dec += [_norm(chans[0]), nn.SiLU(), CausalConv3d(chans[0], 3)]
        self.decoder = nn.Sequential(*dec)
        # Latents are divided by this so the DiT sees unit variance (SD's scale factor); set during VAE training.
        self.register_buffer("latent_scale", torch.ones(()))
        # Activation bytes held at once per full-resolution voxel (t h w) in float32: about five tensors of the
        # widest full-resolution layer (the decoder's last upsampling feeds it chans[1] channels); measured by
        # bench/vae.py (`memory`), and what `plan` sizes chunks and tiles with.
        self.bytes_per_voxel = 4 * 5 * max(chans[0], chans[min(1, n_spatial)])

    # -- chunks and tiles --------------------------------------------------------------------------------------

    def plan(self, num_frames: int, height: int, width: int):
        """How one encode or decode of a clip this size is cut (sora/models/vae_tiling.py), in pixels."""
        return plan(num_frames, height, width, self.bytes_per_voxel, self.memory_budget_bytes,
                    self.temporal_compression, self.spatial_compression, self.chunk_frames, self.tile_px,
                    self.tile_overlap_px)

    def _chunked(self, net: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
        """net over x (b c t h w) in causal chunks along t: the first frame, then `chunk` frames at a time."""
        if not chunk or x.shape[2] <= 1 + chunk:
            return net(x)
        with streaming(net):
            parts = [net(x[:, :, :1])] + [net(x[:, :, s:s + chunk]) for s in range(1, x.shape[2], chunk)]
        return torch.cat(parts, dim=2)  # b c' t' h' w'

    def run_encoder(self, video: torch.Tensor) -> torch.Tensor:
        """b 3 T H W -> b 2z t h w, in the chunks and tiles `plan` chooses (the same result, to float tolerance,
        without tiles)."""
        p = self.plan(*video.shape[2:])
        sc = self.spatial_compression
        fn = lambda v: self._chunked(self.encoder, v, p.chunk_frames)
        return tiled(fn, video, p.tile_px, p.overlap_px, 1 / sc) if p.tile_px else fn(video)

    def run_decoder(self, z: torch.Tensor) -> torch.Tensor:
        """b z t h w -> b 3 T H W, chunked and tiled as the pixel-space clip it makes would be."""
        tc, sc = self.temporal_compression, self.spatial_compression
        p = self.plan(1 + (z.shape[2] - 1) * tc, z.shape[3] * sc, z.shape[4] * sc)
        fn = lambda v: self._chunked(self.decoder, v, p.chunk_frames // tc)
        return tiled(fn, z, p.tile_px // sc, p.overlap_px // sc, sc) if p.tile_px else fn(z)

    # -- the VAE interface -------------------------------------------------------------------------------------

    def posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """b 3 t h w -> (mean, logvar), each b z t' h' w' (unscaled)."""
        problems = LatentGeometry.of(self).problems(*video.shape[2:])
        assert not problems, f"video of {tuple(video.shape[2:])} (t h w): " + "; ".join(problems)
        mean, logvar = self.run_encoder(video).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """An unscaled latent (a draw from `posterior`) -> video; what VAE training reconstructs through."""
        return self.run_decoder(z)

    def last_layer(self) -> nn.Parameter:
        """The decoder's output convolution: VQGAN's adaptive GAN weight balances gradients there."""
        return self.decoder[-1].conv.weight

    def encode(self, video: torch.Tensor, sample: bool = True) -> torch.Tensor:
        mean, logvar = self.posterior(video)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        return z / self.latent_scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.run_decoder(latent * self.latent_scale)

    def moments(self, video: torch.Tensor) -> torch.Tensor:
        """b 3 t h w -> b 2z t' h' w': posterior mean and std, scaled as encode() scales, for the latent cache."""
        mean, logvar = self.posterior(video)
        return torch.cat([mean, (0.5 * logvar).exp()], dim=1) / self.latent_scale


# ---------------------------------------------------------------------------------------------------------------
# Frames given as a condition
# ---------------------------------------------------------------------------------------------------------------


def encode_frames_alone(vae: nn.Module, video: torch.Tensor, encode=None) -> torch.Tensor:
    """b 3 T h w -> b z t h w where latent frame j is made from its own pixel frames only.

    A causal VAE's latent frame j > 0 sees every earlier frame. A frame given as a condition must not: when a
    clip is extended backwards, or a keyframe pins its middle, the frames before it are the ones to be made,
    so at sampling time they do not exist. So a given latent frame is always the encoding of its own frames on
    their own: frame 0 alone (as the VAE encodes it anyway), and each later group of temporal_compression frames
    as a clip of its own, its first frame repeated in front as the causal first frame (1 + tc frames -> 2
    latents, the second kept). Training and sampling both use this, so what the DiT sees given is the same.
    `encode` is vae.encode by default (vae.moments for a latent cache).
    """
    encode = encode or vae.encode
    tc, first_alone = vae.temporal_compression, getattr(vae, "first_frame_alone", False)
    b, frames = video.shape[0], video.shape[2]
    if tc == 1:  # every frame is its own latent frame
        out = encode(rearrange(video, "b c t h w -> (b t) c 1 h w"))  # (b t) z 1 h w
        return rearrange(out, "(b t) z 1 h w -> b z t h w", b=b)
    assert (frames - first_alone) % tc == 0, f"{frames} frames: this VAE takes {'1 + ' * first_alone}k * {tc}"
    rest = video[:, :, 1:] if first_alone else video  # the frames after the causal first frame
    if first_alone and rest.shape[2] == 0:  # an image: its one latent frame is its own already
        return encode(video)
    groups = rearrange(rest, "b c (g k) h w -> (b g) c k h w", k=tc)  # (b g) c tc h w
    if first_alone:
        groups = torch.cat([groups[:, :, :1], groups], dim=2)  # (b g) c (1 + tc) h w: first frame repeated in front
    latent = rearrange(encode(groups)[:, :, -1:], "(b g) z 1 h w -> b z g h w", b=b)  # the group's own latent
    if not first_alone:
        return latent
    return torch.cat([encode(video[:, :, :1]), latent], dim=2)  # b z (1 + g) h w


def build_vae(args: VAEArgs) -> nn.Module:
    """VAEArgs -> PixelVAE, CausalVAE (untrained; sora.inference.checkpoint.load_vae loads trained ones) or a
    pretrained diffusers VAE from `path`."""
    if args.kind == VAEKind.pixel:
        return PixelVAE()
    if args.kind == VAEKind.diffusers:
        from sora.models.diffusers_vae import DiffusersVAE

        return DiffusersVAE.from_args(args)
    return CausalVAE(args)
