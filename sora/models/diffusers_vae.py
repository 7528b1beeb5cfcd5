"""Pretrained video VAEs from diffusers, loaded from a local directory, behind sora's VAE interface.

    python train.py vae=diffusers vae.path=DIR    # DIR: what diffusers' save_pretrained writes (config.json + weights)

Four classes are known: AutoencoderKLWan (Wan 2.1/2.2), AutoencoderKLCogVideoX, AutoencoderKLHunyuanVideo and
AutoencoderKLLTXVideo. Each encoder pads time only at the start and encodes frame 0 alone, so clips have
1 + k * tc frames (tc = 4; LTX-Video 8) and `LatentGeometry.of` reads the frame rule from this object as from
CausalVAE. Wan and LTX-Video normalise each position alone (RMSNorm), so their encoders are strictly causal;
CogVideoX and HunyuanVideo use GroupNorm over all the frames they process at once (an 8-frame batch; the clip up
to 16 frames or a temporal tile), so later frames there nudge earlier latents' statistics. (Frames given as a
condition are encoded on their own anyway: sora.models.vae.encode_frames_alone.) What each one needs beyond the
network:

- latent normalisation, as each one's diffusers pipeline applies it around the transformer: Wan:
  (z - latents_mean) / latents_std per channel, both lists in its config.json (pipeline_wan.py undoes it before
  vae.decode, pipeline_wan_i2v.py applies it to the encoded condition); LTX-Video: (z - latents_mean) *
  scaling_factor / latents_std, the mean and std its registered buffers (pipeline_ltx.py, `_normalize_latents`);
  CogVideoX and HunyuanVideo: z * scaling_factor (pipeline_cogvideox.py, `decode_latents`, and its I2V pipeline's
  `prepare_latents`; pipeline_hunyuan_video.py before vae.decode). One formula covers all four:
  (z - mean) * scaling_factor / std, with mean 0 and std 1 where a class has none, held here as buffers so the
  latent cache's fingerprint and a DiT checkpoint carry them.
- the frame rule on decode: CogVideoX decodes latents in pairs after an odd first batch, so only an odd number of
  latent frames (its own 1 + 8k-frame clips) comes out as 1 + 4k frames; an even number is decoded here with its
  last latent frame repeated and that copy's frames dropped (`decode_raw`). LTX-Video 0.9.1+ decoders take a
  denoising timestep: a clean latent is decoded at 0, the pipeline's default decode_timestep, with no noise.
- long clips (vae.chunk_frames): Wan encodes frame 0, then 4-frame chunks, and decodes one latent frame at a
  time, each through a causal feature cache, so memory does not grow with length and the result is the whole
  clip's; CogVideoX encodes 8-frame batches (the first holding the odd remainder) and decodes 2-latent batches
  through its causal conv cache. Those two are fixed: chunk_frames does not change them. HunyuanVideo (on by
  default beyond 16 frames) and LTX-Video (off by default) cut time into overlapping tiles of chunk_frames,
  chunk_frames - tc apart, blended linearly: bounded memory, close to but not equal to the whole clip's result.
  chunk_frames=0 turns that off.
- large frames (vae.tile_px, vae.tile_overlap_px): each class's own `enable_tiling`, tiles of tile_px pixels
  overlapping by tile_overlap_px, blended; null keeps the class's own tile sizes (256 px Wan and HunyuanVideo,
  512 px LTX-Video, half of sample_height/width CogVideoX), and frames no larger than a tile are never tiled;
  0 turns tiling off. vae.memory_budget_gb does not apply to these classes.

The module stays trainable (the model bundle freezes it), so `task=vae` can also train one of these
architectures from a config.json alone (`weights=False`).
"""

import json
from pathlib import Path

import torch
import torch.nn as nn

from sora.errors import SoraError
from sora.models.geometry import LatentGeometry

CLASSES = ("AutoencoderKLWan", "AutoencoderKLCogVideoX", "AutoencoderKLHunyuanVideo", "AutoencoderKLLTXVideo")
# What ModelMixin.from_pretrained reads (with no `variant`): one file, or shards listed in an index.
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json")


# ---------------------------------------------------------------------------------------------------------------
# Reading a directory
# ---------------------------------------------------------------------------------------------------------------


def read_config(path) -> dict:
    """config.json of a diffusers VAE directory; one-line SoraError naming vae.path for anything else."""
    where = f"vae.path={str(path)!r}"
    directory = Path(str(path))
    if not directory.is_dir():
        raise SoraError(f"{where} is not a directory (a diffusers VAE written by save_pretrained: config.json and "
                        "diffusion_pytorch_model.safetensors)")
    if not (directory / "config.json").is_file():
        pipeline = (directory / "vae" / "config.json").is_file()
        hint = " (a whole pipeline: point vae.path at its vae/ folder)" if pipeline else ""
        raise SoraError(f"{where} has no config.json{hint}")
    try:
        config = json.loads((directory / "config.json").read_text())
    except ValueError as e:
        raise SoraError(f"{where}: config.json is not valid JSON ({e})") from None
    name = config.get("_class_name") if isinstance(config, dict) else None
    if name not in CLASSES:
        raise SoraError(f"{where}: config.json's _class_name is {name!r}; vae=diffusers loads {', '.join(CLASSES)}")
    return config


def _diffusers_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def _load_model(path: str, config: dict, weights: bool) -> nn.Module:
    """The diffusers model: built from config.json alone on the meta device (a checkpoint's tensors are assigned
    to it next) or when `weights` is False, else loaded from its weights (local files only: nothing downloads)."""
    where, cls = f"vae.path={path!r}", _diffusers_class(config["_class_name"])
    if torch.get_default_device().type == "meta" or not weights:
        return cls.from_config(config)
    if not any((Path(path) / name).is_file() for name in WEIGHT_FILES):
        raise SoraError(f"{where} has config.json but no weights ({' or '.join(WEIGHT_FILES[::2])})")
    try:
        model, info = cls.from_pretrained(path, local_files_only=True, torch_dtype=torch.float32,
                                          low_cpu_mem_usage=False, output_loading_info=True)
    except Exception as e:  # diffusers and safetensors raise many types for weights that do not fit or are damaged
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        detail = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]  # torch's "Error(s) in ...:"
        raise SoraError(f"{where}: its weights do not load into {config['_class_name']} ({detail[:300]})") from None
    missing = info.get("missing_keys") or info.get("mismatched_keys")
    if missing:
        raise SoraError(f"{where}: its weights do not fit its config.json ({len(missing)} tensors missing or of "
                        f"another shape, e.g. {missing[0]})")
    return model


# ---------------------------------------------------------------------------------------------------------------
# What each class compresses, and how its pipeline normalises the latent
# ---------------------------------------------------------------------------------------------------------------


def _compressions(model, where: str) -> tuple[int, int, int]:
    """(latent channels, temporal, spatial compression) of a diffusers video VAE, from what its network does."""
    c, name = model.config, type(model).__name__
    if name == "AutoencoderKLWan":
        # The encoder halves h and w at every level but the last, and t where temperal_downsample says; Wan 2.2
        # also folds patch_size x patch_size pixels into channels first.
        temporal = 2 ** sum(bool(d) for d in c.temperal_downsample)
        spatial = 2 ** (len(c.dim_mult) - 1) * (c.patch_size or 1)
        for key, derived in (("scale_factor_temporal", temporal), ("scale_factor_spatial", spatial)):
            said = getattr(c, key, None)
            if said is not None and said != derived:
                raise SoraError(f"{where}: config.json says {key}={said}, but its network compresses by {derived}")
        return c.z_dim, temporal, spatial
    if name == "AutoencoderKLCogVideoX":
        # One spatial downsampling between consecutive blocks (CogVideoXEncoder3D).
        return c.latent_channels, int(c.temporal_compression_ratio), 2 ** (len(c.block_out_channels) - 1)
    # HunyuanVideo takes both ratios from its config; LTX-Video derives them from patch_size(_t) and
    # spatio_temporal_scaling unless its config sets them (LTX 0.9.5+ does): the model's attributes say which.
    return c.latent_channels, int(model.temporal_compression_ratio), int(model.spatial_compression_ratio)


def _normalisation(model) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mean, std, scaling_factor): the pipeline's latent is (z - mean) * scaling_factor / std (module docstring)."""
    c, name = model.config, type(model).__name__
    if name == "AutoencoderKLWan":
        return torch.tensor(c.latents_mean, dtype=torch.float32), torch.tensor(c.latents_std, dtype=torch.float32), 1.0
    if name == "AutoencoderKLLTXVideo":
        mean, std = model.latents_mean.detach().float().clone(), model.latents_std.detach().float().clone()
        return mean, std, float(c.scaling_factor)
    return torch.zeros(c.latent_channels), torch.ones(c.latent_channels), float(c.scaling_factor)


# ---------------------------------------------------------------------------------------------------------------
# The wrapper
# ---------------------------------------------------------------------------------------------------------------


class DiffusersVAE(nn.Module):
    """A diffusers video VAE (`self.model`) with sora's interface: encode / decode of normalised latents,
    posterior / decode_raw of the network's own, moments for the latent cache."""

    first_frame_alone = True  # all four encode frame 0 alone, then groups of temporal_compression frames

    def __init__(self, path: str, tile_px: int | None = None, tile_overlap_px: int = 32,
                 memory_budget_gb: float = 2.0, chunk_frames: int | None = None, weights: bool = True):
        super().__init__()
        path = str(path)
        config = read_config(path)
        self.path, self.class_name = path, config["_class_name"]
        self.model = _load_model(path, config, weights)
        where = f"vae.path={path!r}"
        self.latent_channels, self.temporal_compression, self.spatial_compression = _compressions(self.model, where)
        mean, std, scale = _normalisation(self.model)
        if mean.numel() != self.latent_channels or std.numel() != self.latent_channels:
            raise SoraError(f"{where}: config.json gives latents_mean/latents_std of {mean.numel()}/{std.numel()} "
                            f"values for {self.latent_channels} latent channels")
        # Buffers, not constants: the latent cache's fingerprint and a DiT checkpoint then hold them too.
        self.register_buffer("latents_mean", mean.view(1, -1, 1, 1, 1))
        self.register_buffer("latents_std", std.view(1, -1, 1, 1, 1))
        self.register_buffer("scaling_factor", torch.tensor(scale))
        self.memory_budget_gb = memory_budget_gb  # kept for the record: these classes bound memory by tiles and chunks
        self._set_tiling(tile_px, tile_overlap_px)
        self._set_chunks(chunk_frames)

    @classmethod
    def from_args(cls, cfg, weights: bool = True) -> "DiffusersVAE":
        """From VAEArgs (kind=diffusers): vae.path and the tiling and chunking keys."""
        if not cfg.path:
            raise SoraError("vae=diffusers needs vae.path: a local directory written by diffusers' save_pretrained")
        return cls(cfg.path, cfg.tile_px, cfg.tile_overlap_px, cfg.memory_budget_gb, cfg.chunk_frames, weights)

    # -- bounded memory ----------------------------------------------------------------------------------------

    def _set_tiling(self, tile_px: int | None, overlap_px: int) -> None:
        """Spatial tiles through the class's own enable_tiling (module docstring)."""
        m, cs = self.model, self.spatial_compression
        if tile_px == 0:
            m.disable_tiling()
            return
        if tile_px is None:
            m.enable_tiling()
            return
        stride = tile_px - overlap_px
        if tile_px % cs or stride <= 0 or stride % cs:
            raise SoraError(f"vae.tile_px={tile_px} and vae.tile_overlap_px={overlap_px}: {self.class_name} needs "
                            f"tiles and their stride (tile minus overlap, > 0) in multiples of its {cs}x compression")
        if self.class_name == "AutoencoderKLCogVideoX":  # it takes the overlap as a fraction of the tile
            m.enable_tiling(tile_px, tile_px, overlap_px / tile_px, overlap_px / tile_px)
        else:
            m.enable_tiling(tile_sample_min_height=tile_px, tile_sample_min_width=tile_px,
                            tile_sample_stride_height=stride, tile_sample_stride_width=stride)

    def _set_chunks(self, chunk_frames: int | None) -> None:
        """Temporal tiles for HunyuanVideo and LTX-Video; Wan and CogVideoX chunk in their own fixed way."""
        if chunk_frames is None or self.class_name not in ("AutoencoderKLHunyuanVideo", "AutoencoderKLLTXVideo"):
            return
        m, tc = self.model, self.temporal_compression
        m.use_framewise_encoding = m.use_framewise_decoding = chunk_frames > 0
        if chunk_frames == 0:
            return
        if chunk_frames % tc or chunk_frames <= tc:
            raise SoraError(f"vae.chunk_frames={chunk_frames}: {self.class_name} cuts time into overlapping chunks "
                            f"of a multiple of {tc} frames, at least {2 * tc}")
        # The chunks overlap by tc frames (one latent frame), as both classes' defaults do (16/12 and 16/8 frames).
        m.tile_sample_min_num_frames, m.tile_sample_stride_num_frames = chunk_frames, chunk_frames - tc

    # -- the network's own latent ------------------------------------------------------------------------------

    def posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """b 3 t h w in [-1, 1] -> (mean, logvar), each b z t' h' w' (unnormalised, the network's own)."""
        problems = LatentGeometry.of(self).problems(*video.shape[2:])
        assert not problems, f"video of {tuple(video.shape[2:])} (t h w): " + "; ".join(problems)
        dist = self.model.encode(video).latent_dist  # DiagonalGaussianDistribution: logvar clamped to [-30, 20]
        return dist.mean, dist.logvar

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """b z t h w (unnormalised) -> b 3 (1 + (t - 1) * tc) (h * cs) (w * cs)."""
        frames = 1 + (z.shape[2] - 1) * self.temporal_compression
        if self.class_name == "AutoencoderKLCogVideoX" and z.shape[2] % 2 == 0:
            # CogVideoX decodes latents in pairs after an odd first batch, so an even count comes out 3 frames too
            # long (2 latents -> 8 frames, not 5). Its own clips (1 + 8k frames) have an odd count; an even one is
            # decoded with its last latent frame repeated, and that copy's frames dropped. Its decoder's convs are
            # causal, so only the GroupNorm statistics of the last pair (the last latent and its copy) see it.
            z = torch.cat([z, z[:, :, -1:]], dim=2)  # b z (t + 1) h w
        if self.class_name == "AutoencoderKLLTXVideo" and self.model.config.timestep_conditioning:
            # LTX 0.9.1+ decoders are conditioned on a denoising timestep; its pipeline's default decode_timestep
            # is 0 with no noise added (pipeline_ltx.py), which is what a clean latent gets here.
            video = self.model.decode(z, torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)).sample
        else:
            video = self.model.decode(z).sample
        return video[:, :, :frames]  # b 3 T H W

    def last_layer(self) -> nn.Parameter:
        """The decoder's output convolution weight (VQGAN's adaptive GAN weight compares gradients at it)."""
        conv = self.model.decoder.conv_out  # Wan's is an nn.Conv3d; CogVideoX's, HunyuanVideo's and LTX's wrap one
        return getattr(conv, "conv", conv).weight

    # -- sora's interface: normalised latents ------------------------------------------------------------------

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latents_mean) * self.scaling_factor / self.latents_std

    def denormalise(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.latents_std / self.scaling_factor + self.latents_mean

    def encode(self, video: torch.Tensor, sample: bool = True) -> torch.Tensor:
        mean, logvar = self.posterior(video)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        return self.normalise(z)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decode_raw(self.denormalise(latent))

    def moments(self, video: torch.Tensor) -> torch.Tensor:
        """b 3 t h w -> b 2z t' h' w': posterior mean and std, normalised as encode() normalises (the latent cache)."""
        mean, logvar = self.posterior(video)
        std = (0.5 * logvar).exp() * self.scaling_factor / self.latents_std  # b z t h w: the affine map's scale
        return torch.cat([self.normalise(mean), std], dim=1)

    def extra_repr(self) -> str:
        return (f"{self.class_name} from {self.path!r}: {self.latent_channels} channels, "
                f"{self.temporal_compression}x{self.spatial_compression}x{self.spatial_compression}")


def load_diffusers_vae(path, **kwargs) -> DiffusersVAE:
    """A pretrained diffusers video VAE from a local directory (kwargs: DiffusersVAE's tiling and chunking)."""
    return DiffusersVAE(path, **kwargs)
