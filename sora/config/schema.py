"""The config schema: every key a user can set, composed from each component's settings dataclass.

A component below this package owns its settings (`VAEArgs` in sora/models/vae.py, `SamplerArgs` in
sora/diffusion/samplers.py, ...): type, default, range and the rules between its fields, in one place
(sora/settings.py). Settings of what sits above sora.config (the training loop, sample.py, evaluation) and of
provenance are declared here the same way. The defaults are the CPU quick start (`python train.py` with no
overrides); a preset under configs/ states only what it changes. Rules between sections are in checks.py.
"""

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf

from sora.data.data_args import DataArgs
from sora.diffusion.frame_modes import ConditioningArgs
from sora.diffusion.objectives import ObjectiveArgs
from sora.diffusion.samplers import SAMPLERS, SamplerArgs
from sora.diffusion.schedules import SCHEDULES
from sora.errors import SoraError
from sora.models.dit_args import DiTArgs
from sora.models.fp8 import RECIPES as FP8_RECIPES
from sora.models.lora import LoRAArgs
from sora.models.text import TextArgs
from sora.models.vae import VAEArgs
from sora.settings import Settings, setting

# ---------------------------------------------------------------------------------------------------------------
# Training (train.py and sora/training own these; their consumers sit above sora.config, so they are declared here)
# ---------------------------------------------------------------------------------------------------------------


class TaskKind(str, Enum):
    dit = "dit"  # text-to-video diffusion on (frozen) VAE latents
    vae = "vae"  # train the VAE itself


@dataclass
class TaskConfig(Settings):
    """Which task train.py runs (sora/training/dit_task.py or vae_task.py), and the VAE task's loss weights."""

    kind: TaskKind = TaskKind.dit
    # vae task: the loss is L1 + kl_weight KL + lpips_weight LPIPS + adaptive-weighted gan_weight GAN (VQGAN, Esser
    # et al. 2021, eq. 7), as Wan-VAE, HunyuanVideo and Open-Sora's autoencoders train (sora/training/vae_task.py).
    kl_weight: float = setting(1e-6, ge=0)  # KL to N(0, I) against the L1 reconstruction
    lpips_weight: float = setting(0.0, ge=0)  # LPIPS perceptual loss (Zhang et al. 2018); needs lpips_backbone
    # LPIPS's VGG16 `features` weights (a torchvision-layout state dict, .pth or .safetensors): never downloaded.
    # When set, LPIPS is also logged (val and train) whatever lpips_weight is.
    lpips_backbone: Optional[str] = None
    gan_weight: float = setting(0.0, ge=0)  # hinge GAN with a 3D patch discriminator; 0: no discriminator at all
    gan_start_step: int = setting(2000, ge=0)  # the discriminator trains and the generator sees it from this step on
    disc_channels: int = setting(64, ge=1)  # the discriminator's first layer width (then x2, x4)

    def check(self, at: str = "") -> None:
        if self.lpips_weight > 0 and not self.lpips_backbone:
            raise SoraError(f"{at}lpips_weight > 0 needs {at}lpips_backbone: a local VGG16 weights file "
                            "(nothing is downloaded; docs/VAE.md, \"LPIPS weights\", says how to make one)")


class LRSchedule(str, Enum):
    constant = "constant"  # linear warmup, then the peak rate (DiT)
    wsd = "wsd"  # warmup, constant, then linear decay to 0 over the last decay_fraction (see sora/training/optim.py)


@dataclass
class OptimConfig(Settings):
    """`sora.training.optim.adamw`: AdamW and its learning-rate schedule."""

    lr: float = setting(1e-3, gt=0)
    weight_decay: float = setting(0.0, ge=0)
    betas: List[float] = setting(factory=lambda: [0.9, 0.99], ge=0, lt=1, each=True, must="two numbers in [0, 1)")
    warmup_steps: int = setting(100, ge=0)
    # WSD anneals to zero over the last decay_fraction of the run (steps or minutes, whichever is further), so the
    # quick start ends annealed wherever its time budget stops it.
    schedule: LRSchedule = LRSchedule.wsd
    decay_fraction: float = setting(0.3, ge=0, le=1)
    grad_clip: float = setting(1.0, ge=0)

    def check(self, at: str = "") -> None:
        if len(self.betas) != 2:
            raise SoraError(f"{at}betas must be two numbers in [0, 1), got {list(self.betas)}")


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class LoggerConfig(Settings):
    """train.py's logger: wandb (offline by default) or CSV."""

    wandb: WandbMode = WandbMode.offline
    project: str = "sora"
    name: Optional[str] = None


class Strategy(str, Enum):
    auto = "auto"  # Lightning's choice: one device, or DDP over several
    ddp = "ddp"  # data parallel, every rank a full replica
    fsdp = "fsdp"  # fully sharded data parallel (FSDP2): weights, gradients, optimizer state and EMA sharded


@dataclass
class TrainLoopConfig(Settings):
    """train.py's loop: Lightning's Trainer, checkpoints, EMA, parallelism, the end-of-run evaluation."""

    # The quick start is bounded by work, so it learns the same on every machine: 2560 steps of its width-128 DiT cost
    # less than 1200 steps of the quick start before issue 28 did (bench/cpu_step.py budget); -1 with max_minutes
    # set: no step limit.
    max_steps: int = setting(2560, ge=-1)
    # Wall-clock cap in minutes (null: none): training stops at whichever comes first, steps or time, and says how
    # far short of max_steps a run the cap stopped is.
    max_minutes: Optional[float] = setting(None, gt=0)
    seed: int = setting(0, ge=0, le=2**32 - 1)  # numpy's and Lightning's seed range
    # A short average: on a 3000-step checkpoint EMA(0.995) scored held-out direction 0.72, the raw weights 0.83.
    ema_decay: float = setting(0.99, ge=0, lt=1)
    caption_dropout: float = setting(0.1, ge=0, le=1)  # captions dropped with this probability, for guidance
    accelerator: str = "auto"
    devices: str = "auto"  # per node: "auto", a count ("8"), -1 (all) or a list ("[0,1]")
    num_nodes: int = setting(1, ge=1)
    strategy: Strategy = Strategy.auto
    # Ulysses sequence parallelism: each clip's tokens split over this many ranks (a divisor of the world size;
    # needs attention_layout=full, text_conditioning=cross). 1: off.
    sequence_parallel_size: int = setting(1, ge=1)
    precision: Optional[str] = None  # null: bf16-mixed on GPU, 32-true on CPU
    log_every_n_steps: int = setting(25, ge=1)
    sample_every_n_steps: int = setting(1000, ge=0)  # 0: never during training
    checkpoint_every_n_steps: int = setting(250, ge=1)
    keep_last_n: int = setting(2, ge=-1)  # step checkpoints kept besides last.ckpt (older ones are deleted)
    max_nonfinite_steps: int = setting(20, ge=1)  # NaN/Inf loss or gradient steps in a row before the run stops
    # torch CPU threads (null: torch's default). 2: the quick start's 2-core machine, the DataLoader worker beside.
    num_threads: Optional[int] = setting(2, ge=1)
    compile: bool = False  # torch.compile each DiT block (regional compilation)
    # fp32, or bf16: the DiT blocks' linears hold bf16 weights and AdamW keeps fp32 master copies
    # (sora/training/master_weights.py). Needs train.precision=bf16-mixed (the GPU default); not with FSDP, which
    # keeps fp32 shards and computes in bf16 by itself.
    param_dtype: str = setting("fp32", choices=lambda: ("fp32", "bf16"))
    # FP8 matmuls in the DiT's blocks (torchao float8 training, sora/models/fp8.py): null (off), tensorwise or
    # rowwise. Needs the fp8 extra and a GPU of compute capability 8.9+.
    fp8: Optional[str] = setting(None, choices=lambda: FP8_RECIPES)
    # After training, sample `samples_per_prompt` videos of every eval and train prompt and score them with
    # the moving-shapes probe (only meaningful on the built-in dataset).
    final_samples: bool = True
    samples_per_prompt: int = setting(4, ge=1)  # 32 videos per split in the quick start: a steadier estimate than 8
    # Also score drift at the end (sora/eval/drift.py): held-out prompts made val.drift_windows times the trained
    # length window by window, scored per window (needs a model trained to take given frames).
    final_drift: bool = False
    # Print the data's bucket histogram, tokens and FLOPs per step, parameters and a peak-memory estimate per
    # device, then stop before training (sora/training/dry_run.py).
    dry_run: bool = False
    # Seconds between progress lines (a log file, or any output that is not a terminal, gets lines, not a bar).
    progress_every_s: float = setting(30.0, gt=0)
    # Profile this many whole steps (data wait, forward, backward, optimizer, EMA, callbacks) from
    # profile_start_step on, past compilation and warm-up: RUN/profile/ gets the kernel table, a summary with
    # the device's busy share of the wall time, and a Chrome trace (sora/training/callbacks.py: Profile). 0: off.
    profile_steps: int = setting(0, ge=0)
    profile_start_step: int = setting(20, ge=1)
    # LoRA on the DiT through peft (sora/models/lora.py, sora/training/lora.py): train.lora.rank > 0 trains only the
    # adapters (and checkpoints and averages only them); 0 trains the whole DiT.
    lora: LoRAArgs = field(default_factory=LoRAArgs)

    def check(self, at: str = "") -> None:
        devices = str(self.devices).strip()
        is_list = re.fullmatch(r"\[\s*\d+\s*(,\s*\d+\s*)*\]", devices) is not None
        if not (devices == "auto" or is_list or (devices.lstrip("-").isdigit() and (int(devices) >= 1 or
                                                                                  int(devices) == -1))):
            raise SoraError(f"{at}devices must be auto, a count >= 1, -1 (all) or a list of indices, got {devices}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise SoraError(f"{at}max_steps must be >= 1, or -1 with {at}max_minutes set, got {self.max_steps}")
        if self.max_steps == -1 and self.max_minutes is None:
            raise SoraError(f"{at}max_steps=-1 (no step limit) needs {at}max_minutes: the run would never end")
        if self.param_dtype != "fp32":
            if self.strategy == Strategy.fsdp:
                raise SoraError(f"{at}param_dtype={self.param_dtype} does not combine with {at}strategy=fsdp, "
                                f"which already keeps fp32 shards and computes in bf16: use {at}param_dtype=fp32")
            if self.precision is not None and self.precision != "bf16-mixed":
                raise SoraError(f"{at}param_dtype={self.param_dtype} needs {at}precision=bf16-mixed "
                                f"(autocast), got {self.precision}")


@dataclass
class ValConfig(Settings):
    """Validation loss on held-out clips (sora/eval/validation.py): the same clips, noise and timesteps for every
    run and checkpoint, so two runs of an ablation compare (SD3, Esser et al. 2024, ranks its models this way)."""

    every_n_steps: int = setting(500, ge=0)  # also once at the end of the run; 0: only at the end
    num_clips: int = setting(64, ge=1)  # the first usable clips of data.eval_shards, in shard order
    # Fixed timesteps, equally spaced: the loss at each, and their mean.
    timesteps: List[float] = setting(factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], gt=0, le=1,
                                     each=True)
    # The noise of clip i at timestep k comes from a generator seeded by (seed, i, k).
    seed: int = setting(0, unbounded=True)
    batch_size: Optional[int] = setting(None, ge=1)  # clips per forward (null: each bucket's training batch size)
    # Drift of long videos (sora/eval/drift.py) every this many steps, on the EMA weights, to RUN/drift.jsonl and
    # val/drift_*; 0: never during training (train.final_drift scores it at the end).
    drift_every_n_steps: int = setting(0, ge=0)
    drift_windows: int = setting(4, ge=2)  # the videos' length in trained windows (4: 4x data.num_frames)
    drift_samples_per_prompt: int = setting(1, ge=1)  # videos of each held-out prompt

    def check(self, at: str = "") -> None:
        if not self.timesteps:
            raise SoraError(f"{at}timesteps must be a non-empty list of numbers in (0, 1], got []")


# ---------------------------------------------------------------------------------------------------------------
# Provenance (sora/provenance): what every video we write carries
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ProvenanceConfig(Settings):
    """`sora.provenance.stamp.Provenance`'s arguments: a signed C2PA manifest and an invisible watermark."""

    c2pa: bool = True  # a signed manifest hard-bound to the file's bytes (gone if the file is re-encoded)
    watermark: bool = True  # a payload in the pixels (survives re-encoding, resizing, cropping; not a forger)
    cert: Optional[str] = None  # PEM: signing certificate then its chain; null: a local untrusted development CA
    key: Optional[str] = None  # PEM private key of cert
    include_prompt: bool = False  # the manifest holds the prompt's SHA-256; true: the prompt itself too
    watermark_psnr_db: float = setting(40.0, ge=30, le=60)  # strength: the PSNR of marked against unmarked frames

    def check(self, at: str = "") -> None:
        """Certificate and key come together, and exist."""
        if self.c2pa and (self.cert is None) != (self.key is None):
            raise SoraError(f"{at}cert and {at}key come together (or neither: a local development key)")
        for name in ("cert", "key"):
            path = getattr(self, name)
            if self.c2pa and path is not None and not Path(path).is_file():
                raise SoraError(f"{at}{name}={path!r} is not a file")


@dataclass
class TrainConfig:
    """`python train.py`: every section; the defaults are the CPU quick start."""

    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataArgs = field(default_factory=DataArgs)
    vae: VAEArgs = field(default_factory=VAEArgs)
    dit: DiTArgs = field(default_factory=DiTArgs)
    text: TextArgs = field(default_factory=TextArgs)
    objective: ObjectiveArgs = field(default_factory=ObjectiveArgs)
    conditioning: ConditioningArgs = field(default_factory=ConditioningArgs)
    sampler: SamplerArgs = field(default_factory=SamplerArgs)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    val: ValConfig = field(default_factory=ValConfig)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)


# ---------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class LongVideoConfig(Settings):
    """`long.*`: how a video longer than a window stays on the rails, each part a switch (docs/SAMPLING.md). Every
    default is the window-by-window sampler as it was: each later window given the decoded-and-re-encoded end of
    the one before, clean, at the sampler's one timestep, the video written at once."""

    # The next window's given frames are the previous window's latents (no decode -> encode round trip).
    latent_context: bool = False
    # The given history's timestep: noised to this level with the window's own noise (Diffusion Forcing's
    # stabilisation, Chen et al. 2024). 0: clean. Needs a checkpoint trained at that level.
    context_noise: float = setting(0.0, ge=0, lt=1)
    # Guidance over the history (History-Guided Video Diffusion, Song et al. 2025): the unconditional branch gives
    # the history fully noised (t = 1). 1: none. Needs a checkpoint trained with objective.history_noise > 0.
    history_guidance: float = setting(1.0, ge=0)
    # Rolling / pyramid schedule: each token frame made starts this many sampler steps after the one before
    # (Diffusion Forcing; SkyReels-V2's ar_step). 0: every frame at one timestep. Needs per-frame training.
    ar_step: int = setting(0, ge=0)
    # Text guidance scale of every window after the first (null: the sampler's cfg, as in the first). Given its
    # history, a window's way is in the frames before it; the caption names the way a video *starts*, so full
    # text guidance pulls a later window back towards it (a shape mid-bounce turns off the edge). 1: none there,
    # which also drops those windows' text-free forward (docs/results/LONG_VIDEO.md).
    later_windows_cfg: Optional[float] = setting(None, ge=0)
    # Text, then frames, then the video: the first window is made from text (the draft), then made again given the
    # draft's first draft_frames frames. 1: its first frame, as image= gives one (text -> image -> video, Emu
    # Video's factorization, Girdhar et al. 2023). On the long-video preset 1 hurts and 4 changes nothing: its own
    # first frame is no rendered one (docs/results/LONG_VIDEO.md). 0: off. Text prompts only; fewer than the
    # window's frames.
    draft_frames: int = setting(0, ge=0)
    # Text guidance scale of that second pass (null: the sampler's cfg).
    redraw_cfg: Optional[float] = setting(None, ge=0)
    # Best of N: each window made from this many noises, and each video's candidate with the least denoising error
    # under its condition kept (the model as its own verifier, sora/diffusion/verifier.py); n times the sampling
    # and six forwards a candidate more. On the long-video preset trained 60,000 steps (Heun, later_windows_cfg=1),
    # 4 pass 162 of 192 videos at 4x against 133, at 4.6 times the time (docs/results/LONG_VIDEO.md). 1: off.
    candidates: int = setting(1, ge=1, le=64)
    # Decode and write each window as it is made, so memory does not grow with the video (mp4 and WebM).
    stream: bool = False


@dataclass
class SampleConfig(Settings):
    """sample.py's settings; null ones come from the checkpoint's config (sora.inference.pipeline.SampleSettings)."""

    ckpt: str = "???"
    prompt: Optional[str] = None  # one prompt -> `out`
    prompts: Optional[str] = None  # a file, one prompt a line -> out_dir/000.mp4, 001.mp4, ...
    out: Optional[str] = None
    out_dir: Optional[str] = None
    seed: int = setting(0, unbounded=True)
    steps: Optional[int] = setting(None, ge=1)  # null: the checkpoint's sampler settings
    cfg: Optional[float] = setting(None, ge=0)
    sampler: Optional[str] = setting(None, choices=lambda: SAMPLERS)
    schedule: Optional[str] = setting(None, choices=lambda: SCHEDULES)
    shift: Optional[float] = setting(None, gt=0)
    num_frames: Optional[int] = setting(None, ge=1)  # null: what the checkpoint trained on; more: window by window
    height: Optional[int] = setting(None, ge=1)
    width: Optional[int] = setting(None, ge=1)
    fps: Optional[int] = setting(None, ge=1)
    ema: bool = True
    batch_size: int = setting(8, ge=1)
    device: str = "auto"
    # Prompting with images and videos (sora/inference/prompting.py): one mode at a time.
    image: Optional[str] = None  # animate a still
    image_at: str = setting("first", choices=lambda: ("first", "last"))  # where the image goes
    video: Optional[str] = None  # with extend: the clip to continue
    extend: Optional[str] = setting(None, choices=lambda: ("forward", "backward"))  # num_frames new frames
    loop: bool = False  # end where it starts (at image=, if given)
    connect: Optional[List[str]] = None  # [A, B]: A, a transition, B
    keyframes: List[str] = field(default_factory=list)  # ["FRAME:PATH", ...]: images pinned at frames
    edit: Optional[str] = None  # re-make this clip from the prompt (SDEdit)
    strength: float = setting(0.6, ge=0, le=1)  # edit: how far towards noise (0: the clip, 1: text to video)
    # Guidance towards the given frames (null: 1, none beyond the text's).
    cfg_visual: Optional[float] = setting(None, ge=0)
    overlap_frames: Optional[int] = setting(None, ge=1)  # frames a window is given from the one before (null: half)
    # Prompt expansion (sora/inference/expand.py): a local instruct model (a transformers causal LM folder) rewrites
    # each prompt as a caption like the training captions, few-shot from expand_k captions of expand_examples (a
    # shard pattern; null: the checkpoint's data.shards); greedy. The manifest records both prompts.
    expand: Optional[str] = None
    expand_examples: Optional[str] = None
    expand_k: int = setting(4, ge=0)  # example captions shown a prompt (0: none, no shards read)
    expand_max_new_tokens: int = setting(200, ge=1)  # the longest expansion, in the model's tokens
    # A prompt per window, in order (a story): one video -> `out`. A list, or a file with one prompt a line.
    window_prompts: Optional[List[str]] = None
    window_prompts_file: Optional[str] = None
    long: LongVideoConfig = field(default_factory=LongVideoConfig)  # longer than a window: each switch
    lora: Optional[str] = None  # our LoRA file (sora/models/lora.py), merged into the DiT's weights before sampling
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)  # C2PA manifest, watermark

    def check(self, at: str = "") -> None:
        if self.expand is None and self.expand_examples is not None:
            raise SoraError("expand_examples= needs expand=LLM_DIR: the instruct model that expands the prompts")
        story = self.window_prompts is not None or self.window_prompts_file is not None
        if sum((self.prompt is not None, self.prompts is not None, story)) != 1:
            raise SoraError("give exactly one of prompt='...' (with out=FILE.mp4), prompts=FILE (with out_dir=DIR) or "
                            "window_prompts=[...] / window_prompts_file=FILE (a prompt per window, with out=FILE.mp4)")
        if self.window_prompts is not None and self.window_prompts_file is not None:
            raise SoraError("give window_prompts=[...] or window_prompts_file=FILE, not both")
        if story and self.expand is not None:
            raise SoraError("expand= rewrites one prompt a video: with window_prompts= give each window's prompt as "
                            "the model should see it")
        if (self.prompt is not None or story) and not self.out:
            raise SoraError(f"{'prompt' if self.prompt is not None else 'window_prompts'}= needs out=FILE.mp4")
        if self.prompts is not None and not self.out_dir:
            raise SoraError("prompts= needs out_dir=DIR")


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
class FVDConfig(Settings):
    """FVD by StyleGAN-V's fvd2048_16f protocol (sora/eval/fvd.py)."""

    i3d: Optional[str] = None  # StyleGAN-V's i3d_torchscript.pt, at a local path
    num_real: int = setting(2048, ge=2)
    num_generated: int = setting(2048, ge=2)
    num_frames: int = setting(16, ge=1)
    frame_stride: Optional[int] = setting(None, ge=1)  # null: the checkpoint's data.frame_stride


@dataclass
class CLIPScoreConfig(Settings):
    """CLIP score and CLIPSIM (sora/eval/clip_score.py)."""

    path: Optional[str] = None  # a transformers CLIPModel and tokenizer, saved with save_pretrained
    samples_per_prompt: int = setting(4, ge=1)  # videos of each prompt of data.eval_prompts


@dataclass
class EvalConfig(Settings):
    """`python -m sora.eval`: a checkpoint's metrics to one JSON file (sora/eval/evaluate.py)."""

    ckpt: str = "???"
    out: str = "???"
    # val_loss is always computed; add any of fvd, clip, recon, probe.
    metrics: List[str] = field(default_factory=lambda: ["val_loss"])
    ema: bool = True
    device: str = "auto"
    seed: int = setting(0, unbounded=True)
    batch_size: int = setting(8, ge=1)  # videos generated at once
    steps: Optional[int] = setting(None, ge=1)  # sampler steps of generated videos (null: the checkpoint's)
    cfg: Optional[float] = setting(None, ge=0)  # guidance scale of generated videos (null: the checkpoint's)
    recon_clips: int = setting(32, ge=1)  # recon: held-out clips through the VAE
    # recon: LPIPS's VGG16 weights (as task.lpips_backbone: docs/VAE.md); null: PSNR and SSIM only.
    lpips: Optional[str] = None
    samples_per_prompt: int = setting(4, ge=1)  # probe: videos of each held-out and training prompt
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    fvd: FVDConfig = field(default_factory=FVDConfig)
    clip: CLIPScoreConfig = field(default_factory=CLIPScoreConfig)


# ---------------------------------------------------------------------------------------------------------------
# Plain and typed views
# ---------------------------------------------------------------------------------------------------------------

# A checkpoint's config holds every key the schema had when it was written; a key it lacks is one added since,
# and that run trained with the key's value at the time, which is not always today's default (today's defaults
# are the quick start's). These are those values, merged under a checkpoint's config before it is read.
CHECKPOINT_FALLBACKS = {
    "objective": {"prediction": "velocity"},  # before x0 prediction existed
    "dit": {"head_mlp_width": 0},  # before the MLP head: a linear one
    "conditioning": {"modes": {"none": 1.0, "first": 0.0, "first_k": 0.0, "last_k": 0.0, "first_last": 0.0,
                               "keyframes": 0.0}},  # before frame conditioning: text to video only
}


def flat_keys(tree: dict, prefix: str = "") -> dict:
    """A plain nested dict -> one level of dotted keys: {"dit": {"depth": 4}} -> {"dit.depth": 4}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def to_plain(cfg) -> dict:
    """A (structured) config -> plain dict of str/int/float/bool/list/None, safe for weights_only loading."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def typed(cfg, from_checkpoint: bool = False) -> DictConfig:
    """A plain dict or DictConfig (a checkpoint's, with `from_checkpoint`) -> a config checked against TrainConfig."""
    layers = [OmegaConf.structured(TrainConfig)] + ([CHECKPOINT_FALLBACKS] if from_checkpoint else [])
    return OmegaConf.merge(*layers, cfg)
