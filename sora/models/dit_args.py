"""The DiT's settings: one typed dataclass, `DiTArgs`, the constructor's argument and the config's `dit` node.

Each field carries its range (sora/settings.py); `check` holds the rules between fields. The defaults are the CPU
quick start (configs/train.yaml composes `dit: tiny`, which states nothing else); configs/dit/*.yaml state only
what differs from them.
"""

from dataclasses import dataclass
from enum import Enum
from typing import List

from sora.errors import SoraError
from sora.models.attention import AttentionBackend
from sora.settings import Settings, setting


class AttentionLayout(str, Enum):
    full = "full"  # self-attention over all spacetime tokens (Sora, Movie Gen)
    factorized = "factorized"  # spatial then temporal attention (Latte, Ma et al. 2024; STDiT in Open-Sora)


class TextConditioning(str, Enum):
    cross = "cross"  # cross-attention to text tokens after self-attention (PixArt-alpha)
    joint = "joint"  # text tokens join self-attention with their own weights (MM-DiT, SD3, Esser et al. 2024)


class Modulation(str, Enum):
    per_block = "per_block"  # each block maps the conditioning vector to its modulation (DiT's adaLN-Zero)
    single = "single"  # one map shared by all blocks + a learned table per block (adaLN-single, PixArt-alpha)


@dataclass
class DiTArgs(Settings):
    """Everything `sora.models.dit.DiT` is built from besides its input and text widths (presets: configs/dit/)."""

    hidden_size: int = setting(256, ge=1)
    depth: int = setting(4, ge=1)
    num_heads: int = setting(4, ge=1)
    mlp_ratio: float = setting(4.0, gt=0)
    # (pt, ph, pw). The quick start's large 2x8x8 patches keep the CPU run at 64 tokens a clip; each token then holds
    # 384 values, more than the width, so the network predicts the clean signal rather than the velocity (JiT).
    patch_size: List[int] = setting(factory=lambda: [2, 8, 8], ge=1, each=True, must="[pt, ph, pw], each >= 1")
    qk_norm: bool = True
    rope_theta: float = setting(10000.0, gt=0)
    # Add the mean of the text tokens to the adaLN conditioning vector, beside cross-attention (as the pooled
    # CLIP vector in SD3, Esser et al. 2024, sec. 4): a global route for the caption that small models learn fast.
    pooled_text: bool = True
    attention_layout: AttentionLayout = AttentionLayout.full
    text_conditioning: TextConditioning = TextConditioning.cross
    attention_backend: AttentionBackend = AttentionBackend.sdpa
    # Share of blocks (from the first) whose activations are recomputed in backward.
    checkpoint_fraction: float = setting(0.0, ge=0, le=1)
    # per_block: each block's own adaLN map (DiT); single: one shared map + a table per block (adaLN-single,
    # PixArt-alpha, Chen et al. 2023, sec. 2.3; as Wan), 27% fewer parameters at XL. text_conditioning=cross only.
    modulation: Modulation = Modulation.per_block

    def check(self, at: str = "") -> None:
        if len(self.patch_size) != 3:
            raise SoraError(f"{at}patch_size must be [pt, ph, pw], each >= 1, got {list(self.patch_size)}")
        if self.hidden_size % self.num_heads:
            raise SoraError(f"{at}hidden_size={self.hidden_size} must divide by {at}num_heads={self.num_heads}")
        head_dim = self.hidden_size // self.num_heads
        if head_dim % 2 or head_dim < 6:  # 3D RoPE rotates pairs of channels on each of the t, h, w axes (rope.py)
            raise SoraError(f"{at}hidden_size / {at}num_heads = {head_dim} channels a head; 3D RoPE needs an even "
                            "number >= 6")
        joint = self.text_conditioning == TextConditioning.joint
        if joint and self.attention_layout == AttentionLayout.factorized:
            raise SoraError(f"{at}text_conditioning=joint attends over all spacetime tokens: it needs "
                            f"{at}attention_layout=full, not factorized")
        if joint and self.modulation == Modulation.single:
            raise SoraError(f"{at}modulation=single shares the video stream's modulation; the joint text stream has "
                            f"its own per block: use {at}text_conditioning=cross, or {at}modulation=per_block")
