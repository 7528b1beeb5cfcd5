"""Video autoencoders behind one interface: `encode(video) -> latent`, `decode(latent) -> video`, both `b c t h w`.

Every VAE also says how it compresses: `latent_channels`, `temporal_compression`, `spatial_compression` and
`first_frame_alone` (its frame rule). `sora.models.geometry.LatentGeometry` derives every shape from those.

PixelVAE is the identity (for ablations and tiny runs). CausalVAE is a 3D convolutional KL autoencoder whose
convolutions only look back in time, so latent frame j depends on input frames <= j * temporal_compression and
the first frame is encoded alone: an image is a 1-frame video (as in MAGVIT-v2, Yu et al. 2023, and the
causal VAEs of CogVideoX and Open-Sora-Plan). Clips have 1 + k * temporal_compression frames.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from sora.models.geometry import LatentGeometry

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
        """b 3 t h w -> b 6 t h w: the latent and a zero std (the latent cache's format, see sora/data/latent_cache.py)."""
        return torch.cat([video, torch.zeros_like(video)], dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Causal building blocks
# ---------------------------------------------------------------------------------------------------------------


class CausalConv3d(nn.Module):
    """3D convolution padded only at the start of time (by repeating the first frame): no look-ahead."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride=(1, 1, 1)):
        super().__init__()
        self.time_pad = kernel - 1
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2))

    def forward(self, x):
        first = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)  # b c pad h w
        return self.conv(torch.cat([first, x], dim=2))


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


class Downsample(nn.Module):
    """Stride-2 causal conv: halves h and w, and t (1 + 2k -> 1 + k) if temporal."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=(2 if temporal else 1, 2, 2))

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest 2x in h and w, and in t (1 + k -> 1 + 2k, the first frame not doubled) if temporal; then a conv."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x):
        if self.temporal:
            x = x.repeat_interleave(2, dim=2)[:, :, 1:]  # b c t h w -> b c (2t - 1) h w
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")  # b c t 2h 2w
        return self.conv(x)


# ---------------------------------------------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------------------------------------------


class CausalVAE(nn.Module):
    first_frame_alone = True  # causal in time: clips have 1 + k * temporal_compression frames

    def __init__(self, latent_channels: int = 4, temporal_compression: int = 4, spatial_compression: int = 8,
                 base_channels: int = 64, channel_mult=(1, 2, 4, 4), num_res_blocks: int = 1):
        super().__init__()
        n_spatial, n_temporal = math.log2(spatial_compression), math.log2(temporal_compression)
        assert n_spatial.is_integer() and n_temporal.is_integer(), (
            f"compressions must be powers of 2, got temporal {temporal_compression}, spatial {spatial_compression}")
        n_spatial, n_temporal = int(n_spatial), int(n_temporal)
        assert len(channel_mult) == n_spatial + 1, (
            f"channel_mult needs log2(spatial_compression) + 1 = {n_spatial + 1} entries, got {list(channel_mult)}")
        assert n_temporal <= n_spatial, "temporal_compression may not exceed spatial_compression"
        self.latent_channels = latent_channels
        self.temporal_compression, self.spatial_compression = temporal_compression, spatial_compression
        chans = [base_channels * m for m in channel_mult]
        # Time is halved at the deepest `n_temporal` downsamples, and restored at the first upsamples.
        temporal_at = [i >= n_spatial - n_temporal for i in range(n_spatial)]

        enc = [CausalConv3d(3, chans[0])]
        for i in range(n_spatial + 1):
            c_prev = chans[max(i - 1, 0)]
            enc += [ResBlock(c_prev if j == 0 else chans[i], chans[i]) for j in range(num_res_blocks)]
            if i < n_spatial:
                enc.append(Downsample(chans[i], temporal_at[i]))
        enc += [ResBlock(chans[-1], chans[-1]), _norm(chans[-1]), nn.SiLU(), CausalConv3d(chans[-1], 2 * latent_channels)]
        self.encoder = nn.Sequential(*enc)

        dec = [CausalConv3d(latent_channels, chans[-1]), ResBlock(chans[-1], chans[-1])]
        for i in reversed(range(n_spatial + 1)):
            c_next = chans[min(i + 1, n_spatial)]
            dec += [ResBlock(c_next if j == 0 else chans[i], chans[i]) for j in range(num_res_blocks)]
            if i > 0:
                dec.append(Upsample(chans[i], temporal_at[i - 1]))
        dec += [_norm(chans[0]), nn.SiLU(), CausalConv3d(chans[0], 3)]
        self.decoder = nn.Sequential(*dec)
        # Latents are divided by this so the DiT sees unit variance (SD's scale factor); set during VAE training.
        self.register_buffer("latent_scale", torch.ones(()))

    def posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """b 3 t h w -> (mean, logvar), each b z t' h' w' (unscaled)."""
        problems = LatentGeometry.of(self).problems(*video.shape[2:])
        assert not problems, f"video of {tuple(video.shape[2:])} (t h w): " + "; ".join(problems)
        mean, logvar = self.encoder(video).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)

    def encode(self, video: torch.Tensor, sample: bool = True) -> torch.Tensor:
        mean, logvar = self.posterior(video)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        return z / self.latent_scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent * self.latent_scale)

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


def build_vae(cfg) -> nn.Module:
    """A VAEConfig -> PixelVAE or CausalVAE (untrained; sora.inference.checkpoint.load_vae loads trained ones)."""
    kind = getattr(cfg.kind, "value", cfg.kind)
    if kind == "pixel":
        return PixelVAE()
    return CausalVAE(cfg.latent_channels, cfg.temporal_compression, cfg.spatial_compression, cfg.base_channels,
                     tuple(cfg.channel_mult), cfg.num_res_blocks)
