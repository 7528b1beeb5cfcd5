"""The config schema: every key a user can set, its type and default, in one dataclass per component.

The YAML files under `configs/` hold values; these classes hold the keys. Each section names the constructor
that consumes it (VAEConfig holds `sora.models.vae.CausalVAE`'s plain arguments, and so on); a component that owns
its settings' dataclass is imported (the DiT's `DiTArgs`, sora/models/dit_args.py, with its ranges and rules).
Ranges and settings that must agree are checked in sora/config/checks.py.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf

from sora.models.dit_args import DiTArgs

# ---------------------------------------------------------------------------------------------------------------
# Model parts
# ---------------------------------------------------------------------------------------------------------------


class VAEKind(str, Enum):
    pixel = "pixel"  # identity: the DiT works on pixels
    causal3d = "causal3d"  # causal 3D convolutional KL autoencoder
    diffusers = "diffusers"  # a diffusers video VAE (Wan, CogVideoX, HunyuanVideo, LTX-Video) from a local directory


@dataclass
class VAEConfig:
    """Plain constructor arguments of `sora.models.vae.CausalVAE` (or the identity `PixelVAE`); `ckpt` loads a trained
    one (sora.inference.checkpoint.load_vae; its architecture then comes from the checkpoint); kind=diffusers loads
    a pretrained one from `path` (sora/models/diffusers_vae.py). The last four keys bound encode/decode memory
    for every kind (sora/models/vae_tiling.py)."""

    kind: VAEKind = VAEKind.pixel
    latent_channels: int = 3
    temporal_compression: int = 1
    spatial_compression: int = 1
    base_channels: int = 64
    channel_mult: List[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 1
    # Residual space-to-channel shortcuts around every down- and upsampling (DC-AE, Chen et al. 2024): what lets a
    # high-compression autoencoder train as well as a shallow one.
    shortcuts: bool = False
    ckpt: Optional[str] = None
    # kind=diffusers: a directory written by diffusers' save_pretrained (config.json + weights).
    path: Optional[str] = None
    # Causal chunked encode/decode: pixel frames a chunk after the first frame (a multiple of temporal_compression;
    # the result equals the whole clip's). null: chosen from memory_budget_gb; 0: the whole clip at once.
    chunk_frames: Optional[int] = None
    # Spatial tiles of tile_px pixels overlapping by tile_overlap_px, blended linearly. null: chosen from
    # memory_budget_gb; 0: never tiled.
    tile_px: Optional[int] = None
    tile_overlap_px: int = 32
    # Activation memory one encode or decode may use when chunk_frames / tile_px are null.
    memory_budget_gb: float = 2.0


class TextKind(str, Enum):
    vocab = "vocab"  # small trainable encoder over a word vocabulary
    hf = "hf"  # frozen T5 or CLIP text encoder from the transformers library, loaded from a local directory


@dataclass
class TextConfig:
    """`sora.models.text.build_text_encoder`: the word encoder's constructor arguments, or a frozen one's path."""

    kind: TextKind = TextKind.vocab
    # vocab: the words it knows (others map to <unk>); the built-in dataset's words by default.
    vocab: List[str] = field(default_factory=list)
    width: int = 128
    depth: int = 1
    num_heads: int = 4
    max_tokens: int = 16
    # hf: a directory written by `save_pretrained` holding the model and its tokenizer.
    path: Optional[str] = None


class Prediction(str, Enum):
    velocity = "velocity"  # the network outputs v = eps - x0
    x0 = "x0"  # the network outputs the clean latent; v = (x_t - x0) / t (JiT)


@dataclass
class ObjectiveConfig:
    """Rectified flow with logit-normal timesteps (Esser et al. 2024, eq. 19); see sora/diffusion/objectives.py."""

    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    prediction: Prediction = Prediction.velocity
    t_min: float = 0.05  # x0 prediction: floor of t in v = (x_t - x0) / t


@dataclass
class SamplerConfig:
    """How samples are drawn (sora/diffusion/): the names are keys of SAMPLERS and SCHEDULES, checked at start."""

    name: str = "euler"  # sora.diffusion.samplers.SAMPLERS
    steps: int = 30
    cfg: float = 4.0  # classifier-free guidance scale (1: none)
    schedule: str = "uniform"  # sora.diffusion.schedules.SCHEDULES: uniform, or shifted (SD3 eq. 23)
    shift: float = 3.0  # schedule=shifted: t' = shift t / (1 + (shift - 1) t); SD3 uses 3 at 1024^2


@dataclass
class FrameModes:
    """Relative probability of each mode of sora.diffusion.frame_modes.MODES (normalised by their sum)."""

    none: float = 1.0  # text to video
    first: float = 0.0  # the first frame given: image to video
    first_k: float = 0.0  # the first k: extend forwards
    last_k: float = 0.0  # the last k: extend backwards
    first_last: float = 0.0  # both ends: connect, loop, interpolate
    keyframes: float = 0.0  # frames anywhere


@dataclass
class ConditioningConfig:
    """Frames given as a condition in training (sora/diffusion/frame_modes.py, sora/training/dit_task.py): the
    mixture of modes, and the noise on the given frames. configs/conditioning/ holds the mixtures (the quick start's
    is `mixed`); these defaults, text to video only, are what checkpoints written before frame conditioning read."""

    modes: FrameModes = field(default_factory=FrameModes)
    # The given frames' timestep is drawn from [0, frame_noise] in training (noise augmentation, as CogVideoX and
    # LTX-Video add); sampling gives them clean (t = 0).
    frame_noise: float = 0.05


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class MovingShapesConfig:
    """The built-in dataset: written to `root` on first use when its shards are missing."""

    root: str = "data/moving_shapes"
    clips_per_combo: int = 32
    clips_per_shard: int = 256
    num_frames: int = 16
    size_px: int = 64
    fps: int = 8
    seed: int = 0


@dataclass
class DataConfig:
    """The loader (`sora.data.stream.make_loader`, `BucketSet.from_config`) and what a run samples and evaluates."""

    # Webdataset shards: a brace pattern (train-{000000..000007}.tar) or a glob (train-*.tar).
    shards: str = "data/moving_shapes/train-*.tar"
    moving_shapes: Optional[MovingShapesConfig] = field(default_factory=MovingShapesConfig)
    num_frames: int = 8
    frame_stride: int = 2
    height: int = 32
    width: int = 32
    random_start: bool = True  # clips start at a random time (false: at frame 0)
    random_crop: bool = True  # a random crop of what covers the bucket (false: the centre)
    batch_size_per_gpu: int = 32
    # Size and duration buckets, [[num_frames, height, width], ...] (null: the one bucket above); clips go to the
    # nearest of their aspect ratio (sora/data/buckets.py). Buckets with num_frames 1 take images.
    buckets: Optional[List[List[int]]] = None
    # Per-bucket batch size that keeps DiT tokens per batch near this (null: batch_size_per_gpu for every bucket).
    tokens_per_batch: Optional[int] = None
    # Share of batches that are image batches (null: as they come from the data; packs mix the two themselves).
    image_batch_ratio: Optional[float] = None
    # Pack clips of any bucket into one sequence of up to tokens_per_batch tokens, with block-diagonal attention
    # (NaViT; DiT.forward_packed), instead of one bucket per batch. Needs tokens_per_batch.
    packing: bool = False
    num_workers: int = 1
    shuffle_buffer: int = 512
    strict: bool = False  # true: stop at the first bad sample, naming it (false: skip, count, report)
    min_side_px: int = 8  # smaller clips are skipped (too_small)
    max_aspect: float = 6.0  # longer side / shorter side beyond this is skipped (extreme_aspect)
    # A latent cache written by data/cache_latents.py: training reads latents and text embeddings, no decoding.
    latent_cache: Optional[str] = None
    sample_fps: int = 4  # frame rate of written samples: the source fps / frame_stride
    # Held-out shards: the DiT's validation loss (val.*) and the VAE's reconstruction at the end of task=vae (null:
    # no validation loss; the VAE then reconstructs training shards).
    eval_shards: Optional[str] = "data/moving_shapes/test-*.tar"
    # Prompt files for the samples logged during training and written at its end (one prompt a line).
    eval_prompts: Optional[str] = "data/moving_shapes/heldout_prompts.txt"
    train_prompts: Optional[str] = "data/moving_shapes/train_prompts.txt"


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


class TaskKind(str, Enum):
    dit = "dit"  # text-to-video diffusion on (frozen) VAE latents
    vae = "vae"  # train the VAE itself


@dataclass
class TaskConfig:
    """Which task train.py runs (sora/training/dit_task.py or vae_task.py), and the VAE task's loss weights."""

    kind: TaskKind = TaskKind.dit
    # vae task: the loss is L1 + kl_weight KL + lpips_weight LPIPS + adaptive-weighted gan_weight GAN (VQGAN, Esser
    # et al. 2021, eq. 7), as Wan-VAE, HunyuanVideo and Open-Sora's autoencoders train (sora/training/vae_task.py).
    kl_weight: float = 1e-6  # KL to N(0, I) against the L1 reconstruction
    lpips_weight: float = 0.0  # LPIPS perceptual loss (Zhang et al. 2018); needs lpips_backbone
    # LPIPS's VGG16 `features` weights (a torchvision-layout state dict, .pth or .safetensors): never downloaded.
    # When set, LPIPS is also logged (val and train) whatever lpips_weight is.
    lpips_backbone: Optional[str] = None
    gan_weight: float = 0.0  # hinge GAN with a 3D patch discriminator; 0: no discriminator at all
    gan_start_step: int = 2000  # the discriminator trains and the generator sees it from this step on
    disc_channels: int = 64  # the discriminator's first layer width (then x2, x4)


class LRSchedule(str, Enum):
    constant = "constant"  # linear warmup, then the peak rate (DiT)
    wsd = "wsd"  # warmup, constant, then linear decay to 0 over the last decay_fraction (see sora/training/optim.py)


@dataclass
class OptimConfig:
    """`sora.training.optim.adamw`: AdamW and its learning-rate schedule."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 100
    schedule: LRSchedule = LRSchedule.constant
    decay_fraction: float = 0.2  # wsd: share of training (steps or minutes, whichever is further) spent decaying
    grad_clip: float = 1.0


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    """train.py's logger: wandb (offline by default) or CSV."""

    wandb: WandbMode = WandbMode.offline
    project: str = "sora"
    name: Optional[str] = None


class Strategy(str, Enum):
    auto = "auto"  # Lightning's choice: one device, or DDP over several
    ddp = "ddp"  # data parallel, every rank a full replica
    fsdp = "fsdp"  # fully sharded data parallel (FSDP2): weights, gradients, optimizer state and EMA sharded


@dataclass
class TrainLoopConfig:
    """train.py's loop: Lightning's Trainer, checkpoints, EMA, parallelism, the end-of-run evaluation."""

    max_steps: int = 2000
    # Wall-clock budget in minutes (null: none): training stops at whichever comes first, steps or time.
    max_minutes: Optional[float] = None
    seed: int = 0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # captions dropped with this probability, for classifier-free guidance
    accelerator: str = "auto"
    devices: str = "auto"  # per node: "auto", a count ("8") or a list ("[0,1]")
    num_nodes: int = 1
    strategy: Strategy = Strategy.auto
    # Ulysses sequence parallelism: each clip's tokens split over this many ranks (a divisor of the world size;
    # needs attention_layout=full, text_conditioning=cross). 1: off.
    sequence_parallel_size: int = 1
    precision: Optional[str] = None  # null: bf16-mixed on GPU, 32-true on CPU
    log_every_n_steps: int = 25
    sample_every_n_steps: int = 500  # 0: never during training
    checkpoint_every_n_steps: int = 250
    keep_last_n: int = 2  # step checkpoints kept besides last.ckpt (older ones are deleted)
    max_nonfinite_steps: int = 20  # NaN/Inf loss or gradient steps in a row before the run stops
    num_threads: Optional[int] = None  # torch CPU threads (null: torch's default)
    compile: bool = False  # torch.compile each DiT block (regional compilation)
    # fp32 (default), or bf16: the DiT blocks' linears hold bf16 weights and AdamW keeps fp32 master copies
    # (sora/training/master_weights.py). Needs train.precision=bf16-mixed (the GPU default); not with FSDP, which
    # keeps fp32 shards and computes in bf16 by itself.
    param_dtype: str = "fp32"
    # FP8 matmuls in the DiT's blocks (torchao float8 training, sora/models/fp8.py): null (off), tensorwise or
    # rowwise. Needs the fp8 extra and a GPU of compute capability 8.9+.
    fp8: Optional[str] = None
    # After training, sample `samples_per_prompt` videos of every eval and train prompt and score them with
    # the moving-shapes probe (only meaningful on the built-in dataset).
    final_samples: bool = True
    samples_per_prompt: int = 2
    # Print the data's bucket histogram, tokens and FLOPs per step, parameters and a peak-memory estimate per
    # device, then stop before training (sora/training/dry_run.py).
    dry_run: bool = False
    # Seconds between progress lines (a log file, or any output that is not a terminal, gets lines, not a bar).
    progress_every_s: float = 30.0
    # Profile this many whole steps (data wait, forward, backward, optimizer, EMA, callbacks) from
    # profile_start_step on, past compilation and warm-up: RUN/profile/ gets the kernel table, a summary with
    # the device's busy share of the wall time, and a Chrome trace (sora/training/callbacks.py: Profile). 0: off.
    profile_steps: int = 0
    profile_start_step: int = 20


@dataclass
class ValConfig:
    """Validation loss on held-out clips (sora/eval/validation.py): the same clips, noise and timesteps for every
    run and checkpoint, so two runs of an ablation compare (SD3, Esser et al. 2024, ranks its models this way)."""

    every_n_steps: int = 500  # also once at the end of the run; 0: only at the end
    num_clips: int = 64  # the first usable clips of data.eval_shards, in shard order
    # Fixed timesteps, equally spaced: the loss at each, and their mean.
    timesteps: List[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    seed: int = 0  # the noise of clip i at timestep k comes from a generator seeded by (seed, i, k)
    batch_size: Optional[int] = None  # clips per forward (null: each bucket's training batch size)


# ---------------------------------------------------------------------------------------------------------------
# Provenance (sora/provenance): what every video we write carries
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ProvenanceConfig:
    """`sora.provenance.stamp.Provenance`'s arguments: a signed C2PA manifest and an invisible watermark."""

    c2pa: bool = True  # a signed manifest hard-bound to the file's bytes (gone if the file is re-encoded)
    watermark: bool = True  # a payload in the pixels (survives re-encoding, resizing, cropping; not a forger)
    cert: Optional[str] = None  # PEM: signing certificate then its chain; null: a local untrusted development CA
    key: Optional[str] = None  # PEM private key of cert
    include_prompt: bool = False  # the manifest holds the prompt's SHA-256; true: the prompt itself too
    watermark_psnr_db: float = 40.0  # strength: the PSNR of marked against unmarked frames (at least)


@dataclass
class TrainConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTArgs = field(default_factory=DiTArgs)
    text: TextConfig = field(default_factory=TextConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    val: ValConfig = field(default_factory=ValConfig)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)


# ---------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SampleConfig:
    """sample.py's settings; null ones come from the checkpoint's config (sora.inference.pipeline.SampleSettings)."""

    ckpt: str = "???"
    prompt: Optional[str] = None  # one prompt -> `out`
    prompts: Optional[str] = None  # a file, one prompt a line -> out_dir/000.mp4, 001.mp4, ...
    out: Optional[str] = None
    out_dir: Optional[str] = None
    seed: int = 0
    steps: Optional[int] = None  # null: the checkpoint's sampler settings
    cfg: Optional[float] = None
    sampler: Optional[str] = None
    schedule: Optional[str] = None
    shift: Optional[float] = None
    num_frames: Optional[int] = None  # null: what the checkpoint was trained on; more: made window by window
    height: Optional[int] = None
    width: Optional[int] = None
    fps: Optional[int] = None
    ema: bool = True
    batch_size: int = 8
    device: str = "auto"
    # Prompting with images and videos (sora/inference/prompting.py): one mode at a time.
    image: Optional[str] = None  # animate a still
    image_at: str = "first"  # first | last: where the image goes
    video: Optional[str] = None  # with extend: the clip to continue
    extend: Optional[str] = None  # forward | backward; num_frames new frames
    loop: bool = False  # end where it starts (at image=, if given)
    connect: Optional[List[str]] = None  # [A, B]: A, a transition, B
    keyframes: List[str] = field(default_factory=list)  # ["FRAME:PATH", ...]: images pinned at frames
    edit: Optional[str] = None  # re-make this clip from the prompt (SDEdit)
    strength: float = 0.6  # edit: how far towards noise (0: the clip, 1: text to video)
    cfg_visual: Optional[float] = None  # guidance scale towards the given frames (null: 1, none beyond the text's)
    overlap_frames: Optional[int] = None  # frames a window is given from the one before (null: half a window)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)  # C2PA manifest, watermark




# ---------------------------------------------------------------------------------------------------------------
# Evaluating a checkpoint
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class EvalDataConfig:
    """What `python -m sora.eval` reads instead of the checkpoint's own data settings (null: the checkpoint's)."""

    eval_shards: Optional[str] = None
    eval_prompts: Optional[str] = None
    train_prompts: Optional[str] = None


@dataclass
class FVDConfig:
    """FVD by StyleGAN-V's fvd2048_16f protocol (sora/eval/fvd.py)."""

    i3d: Optional[str] = None  # StyleGAN-V's i3d_torchscript.pt, at a local path
    num_real: int = 2048
    num_generated: int = 2048
    num_frames: int = 16
    frame_stride: Optional[int] = None  # null: the checkpoint's data.frame_stride


@dataclass
class CLIPScoreConfig:
    """CLIP score and CLIPSIM (sora/eval/clip_score.py)."""

    path: Optional[str] = None  # a transformers CLIPModel and tokenizer, saved with save_pretrained
    samples_per_prompt: int = 4  # videos of each prompt of data.eval_prompts


@dataclass
class EvalConfig:
    """`python -m sora.eval`: a checkpoint's metrics to one JSON file (sora/eval/evaluate.py)."""

    ckpt: str = "???"
    out: str = "???"
    # val_loss is always computed; add any of fvd, clip, recon, probe.
    metrics: List[str] = field(default_factory=lambda: ["val_loss"])
    ema: bool = True
    device: str = "auto"
    seed: int = 0
    batch_size: int = 8  # videos generated at once
    steps: Optional[int] = None  # sampler steps of generated videos (null: the checkpoint's)
    recon_clips: int = 32  # recon: held-out clips through the VAE
    # recon: LPIPS's VGG16 weights (as task.lpips_backbone: README "Losses"); null: PSNR and SSIM only.
    lpips: Optional[str] = None
    samples_per_prompt: int = 4  # probe: videos of each held-out and training prompt
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    fvd: FVDConfig = field(default_factory=FVDConfig)
    clip: CLIPScoreConfig = field(default_factory=CLIPScoreConfig)


# ---------------------------------------------------------------------------------------------------------------
# Plain and typed views
# ---------------------------------------------------------------------------------------------------------------


def to_plain(cfg) -> dict:
    """A (structured) config -> plain dict of str/int/float/bool/list/None, safe for weights_only loading."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def typed(cfg) -> DictConfig:
    """A plain dict or DictConfig (a checkpoint's) -> a config checked against TrainConfig."""
    return OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
