"""Typed configs: every Hydra node is checked against these dataclasses, so a wrong key or type fails at start.

The YAML files under `configs/` hold values; these classes hold the keys, types and defaults. Hydra merges
the YAML into the schema registered here (`train_schema`, `sample_schema`), and OmegaConf rejects a key that
is not a field and a value that does not convert to the field's type, naming both.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from sora.errors import SoraError

# ---------------------------------------------------------------------------------------------------------------
# Model parts
# ---------------------------------------------------------------------------------------------------------------


class AttentionLayout(str, Enum):
    full = "full"  # self-attention over all spacetime tokens
    factorized = "factorized"  # spatial then temporal attention (Latte / STDiT)


class TextConditioning(str, Enum):
    cross = "cross"  # cross-attention to text tokens (PixArt-alpha)
    joint = "joint"  # text tokens join self-attention with their own weights (MM-DiT)


class AttentionBackend(str, Enum):
    sdpa = "sdpa"
    xformers = "xformers"
    flex = "flex"
    math = "math"


@dataclass
class DiTConfig:
    """Plain constructor arguments of `sora.dit.DiT` (presets live in configs/dit/)."""

    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    patch_size: List[int] = field(default_factory=lambda: [1, 2, 2])  # (pt, ph, pw)
    qk_norm: bool = True
    rope_theta: float = 10000.0
    # Add the mean of the text tokens to the adaLN conditioning vector, beside cross-attention (as the pooled
    # CLIP vector in SD3, Esser et al. 2024, sec. 4): a global route for the caption that small models learn fast.
    pooled_text: bool = True
    attention_layout: AttentionLayout = AttentionLayout.full
    text_conditioning: TextConditioning = TextConditioning.cross
    attention_backend: AttentionBackend = AttentionBackend.sdpa
    checkpoint_fraction: float = 0.0  # share of blocks (from the first) whose activations are recomputed in backward


class VAEKind(str, Enum):
    pixel = "pixel"  # identity: the DiT works on pixels
    causal3d = "causal3d"  # causal 3D convolutional KL autoencoder


@dataclass
class VAEConfig:
    """Plain constructor arguments of the VAE; `ckpt` loads a trained one (architecture from the checkpoint)."""

    kind: VAEKind = VAEKind.pixel
    latent_channels: int = 3
    temporal_compression: int = 1
    spatial_compression: int = 1
    base_channels: int = 64
    channel_mult: List[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 1
    ckpt: Optional[str] = None


class TextKind(str, Enum):
    vocab = "vocab"  # small trainable encoder over a word vocabulary
    hf = "hf"  # frozen T5 or CLIP text encoder from the transformers library, loaded from a local directory


@dataclass
class TextConfig:
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
    """Rectified flow with logit-normal timesteps (Esser et al. 2024, eq. 19); see sora/objective.py."""

    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    prediction: Prediction = Prediction.velocity
    t_min: float = 0.05  # x0 prediction: floor of t in v = (x_t - x0) / t


class SamplerName(str, Enum):
    euler = "euler"
    heun = "heun"


@dataclass
class SamplerConfig:
    name: SamplerName = SamplerName.euler
    steps: int = 30
    cfg: float = 4.0


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
    # Webdataset shards: a brace pattern (train-{000000..000007}.tar) or a glob (train-*.tar).
    shards: str = "data/moving_shapes/train-*.tar"
    moving_shapes: Optional[MovingShapesConfig] = field(default_factory=MovingShapesConfig)
    num_frames: int = 8
    frame_stride: int = 2
    height: int = 32
    width: int = 32
    random_start: bool = True
    batch_size_per_gpu: int = 32
    # Size and duration buckets, [[num_frames, height, width], ...] (null: the one bucket above); clips go to the
    # nearest of their aspect ratio (sora/buckets.py). Buckets with num_frames 1 take images.
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
    # Held-out shards for the VAE's reconstruction PSNR at the end of task=vae (null: the training shards).
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
    kind: TaskKind = TaskKind.dit
    kl_weight: float = 1e-6  # vae task: weight of the KL term against the L1 reconstruction


class LRSchedule(str, Enum):
    constant = "constant"  # linear warmup, then the peak rate (DiT)
    wsd = "wsd"  # warmup, constant, then linear decay to 0 over the last decay_fraction (see sora/optim.py)


@dataclass
class OptimConfig:
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
    wandb: WandbMode = WandbMode.offline
    project: str = "sora"
    name: Optional[str] = None


class Strategy(str, Enum):
    auto = "auto"  # Lightning's choice: one device, or DDP over several
    ddp = "ddp"  # data parallel, every rank a full replica
    fsdp = "fsdp"  # fully sharded data parallel (FSDP2): weights, gradients, optimizer state and EMA sharded


@dataclass
class TrainLoopConfig:
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
    # After training, sample `samples_per_prompt` videos of every eval and train prompt and score them with
    # the moving-shapes probe (only meaningful on the built-in dataset).
    final_samples: bool = True
    samples_per_prompt: int = 2


@dataclass
class TrainConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    text: TextConfig = field(default_factory=TextConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


# ---------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SampleConfig:
    ckpt: str = "???"
    prompt: Optional[str] = None  # one prompt -> `out`
    prompts: Optional[str] = None  # a file, one prompt a line -> out_dir/000.mp4, 001.mp4, ...
    out: Optional[str] = None
    out_dir: Optional[str] = None
    seed: int = 0
    steps: Optional[int] = None  # null: the checkpoint's sampler settings
    cfg: Optional[float] = None
    sampler: Optional[SamplerName] = None
    num_frames: Optional[int] = None  # null: what the checkpoint was trained on
    height: Optional[int] = None
    width: Optional[int] = None
    fps: Optional[int] = None
    ema: bool = True
    batch_size: int = 8
    device: str = "auto"


# ---------------------------------------------------------------------------------------------------------------
# Value checks
# ---------------------------------------------------------------------------------------------------------------
# The schema checks keys and types; these check ranges, so that `dit.num_heads=0` or `optim.lr=-1` fails at
# start with one line naming the key, not with a stack trace from deep inside a model or Lightning.


def _at_least(low):
    return lambda v: v >= low, f">= {low}"


def _above(low):
    return lambda v: v > low, f"> {low}"


def _within(low, high):
    return lambda v: low <= v <= high, f"in [{low}, {high}]"


# key: (test, what the value must be). A key whose value is null (an optional setting left off) is not checked.
TRAIN_LIMITS = {
    "dit.hidden_size": _at_least(1), "dit.depth": _at_least(1), "dit.num_heads": _at_least(1),
    "dit.mlp_ratio": _above(0), "dit.rope_theta": _above(0), "dit.checkpoint_fraction": _within(0, 1),
    "vae.latent_channels": _at_least(1), "vae.temporal_compression": _at_least(1),
    "vae.spatial_compression": _at_least(1), "vae.base_channels": _at_least(1), "vae.num_res_blocks": _at_least(1),
    "text.width": _at_least(1), "text.depth": _at_least(0), "text.num_heads": _at_least(1),
    "text.max_tokens": _at_least(1),
    "objective.logit_normal_std": _above(0), "objective.t_min": (lambda v: 0 < v < 1, "in (0, 1)"),
    "sampler.steps": _at_least(1), "sampler.cfg": _at_least(0),
    "data.num_frames": _at_least(1), "data.frame_stride": _at_least(1), "data.height": _at_least(1),
    "data.width": _at_least(1), "data.batch_size_per_gpu": _at_least(1), "data.tokens_per_batch": _at_least(1),
    "data.image_batch_ratio": _within(0, 1), "data.num_workers": _at_least(0), "data.shuffle_buffer": _at_least(0),
    "data.min_side_px": _at_least(1), "data.max_aspect": _at_least(1), "data.sample_fps": _at_least(1),
    "data.moving_shapes.clips_per_combo": _at_least(1), "data.moving_shapes.clips_per_shard": _at_least(1),
    "data.moving_shapes.num_frames": _at_least(1), "data.moving_shapes.size_px": _at_least(8),
    "data.moving_shapes.fps": _at_least(1),
    "task.kl_weight": _at_least(0),
    "optim.lr": _above(0), "optim.weight_decay": _at_least(0), "optim.warmup_steps": _at_least(0),
    "optim.decay_fraction": _within(0, 1), "optim.grad_clip": _at_least(0),
    "train.max_minutes": _above(0), "train.ema_decay": _within(0, 1), "train.caption_dropout": _within(0, 1),
    "train.num_nodes": _at_least(1), "train.sequence_parallel_size": _at_least(1),
    "train.log_every_n_steps": _at_least(1), "train.sample_every_n_steps": _at_least(0),
    "train.checkpoint_every_n_steps": _at_least(1), "train.keep_last_n": _at_least(-1),
    "train.max_nonfinite_steps": _at_least(0), "train.num_threads": _at_least(1), "train.samples_per_prompt": _at_least(1),
}
SAMPLE_LIMITS = {
    "steps": _at_least(1), "cfg": _at_least(0), "num_frames": _at_least(1), "height": _at_least(1),
    "width": _at_least(1), "fps": _at_least(1), "batch_size": _at_least(1),
}


def _check_limits(cfg, limits: dict) -> None:
    for key, (ok, want) in limits.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and not ok(value):
            raise SoraError(f"{key} must be {want}, got {value}")


def check_train_values(cfg) -> None:
    """Ranges of a composed TrainConfig, and the settings that must agree with each other."""
    _check_limits(cfg, TRAIN_LIMITS)
    d = cfg.dit
    if len(d.patch_size) != 3 or min(d.patch_size) < 1:
        raise SoraError(f"dit.patch_size must be [pt, ph, pw], each >= 1, got {list(d.patch_size)}")
    if d.hidden_size % d.num_heads:
        raise SoraError(f"dit.hidden_size={d.hidden_size} must divide by dit.num_heads={d.num_heads}")
    head_dim = d.hidden_size // d.num_heads
    if head_dim % 2 or head_dim < 6:  # 3D RoPE rotates pairs of channels on each of the t, h, w axes (sora/rope.py)
        raise SoraError(f"dit.hidden_size / dit.num_heads = {head_dim} channels a head; 3D RoPE needs an even "
                        "number >= 6")
    if cfg.text.kind.value == "vocab" and cfg.text.width % cfg.text.num_heads:
        raise SoraError(f"text.width={cfg.text.width} must divide by text.num_heads={cfg.text.num_heads}")
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise SoraError(f"optim.betas must be two numbers in [0, 1), got {list(cfg.optim.betas)}")
    devices = str(cfg.train.devices).strip()
    if devices.lstrip("-").isdigit() and int(devices) < 1 and int(devices) != -1:
        raise SoraError(f"train.devices must be auto, a count >= 1, -1 (all) or a list of indices, got {devices}")
    if cfg.train.max_steps != -1 and cfg.train.max_steps < 1:
        raise SoraError(f"train.max_steps must be >= 1, or -1 with train.max_minutes set, got {cfg.train.max_steps}")
    if cfg.train.max_steps == -1 and cfg.train.max_minutes is None:
        raise SoraError("train.max_steps=-1 (no step limit) needs train.max_minutes: the run would never end")


def check_sample_values(cfg) -> None:
    """Ranges of a composed SampleConfig (null settings come from the checkpoint)."""
    _check_limits(cfg, SAMPLE_LIMITS)


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="sample_schema", node=SampleConfig)
