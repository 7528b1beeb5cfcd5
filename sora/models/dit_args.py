"""The DiT's settings: one typed dataclass, `DiTArgs`, the constructor's argument and the config's `dit` node.

Each field carries its range (sora/settings.py); `check` holds the rules between fields. The defaults are the CPU
quick start (configs/train.yaml composes `dit: tiny`, which states nothing else); configs/dit/*.yaml state only
what differs from them.
"""

from dataclasses import dataclass
from enum import Enum
from typing import List, Optional

from sora.errors import SoraError
from sora.models.attention import AttentionBackend
from sora.settings import Settings, setting


class AttentionLayout(str, Enum):
    full = "full"  # self-attention over all spacetime tokens (Sora, Movie Gen)
    factorized = "factorized"  # spatial then temporal attention (Latte, Ma et al. 2024; STDiT in Open-Sora)


class TextConditioning(str, Enum):
    cross = "cross"  # cross-attention to text tokens after self-attention (PixArt-alpha)
    joint = "joint"  # text tokens join self-attention with their own weights (MM-DiT, SD3, Esser et al. 2024)


class QKNormScope(str, Enum):
    head = "head"  # an RMSNorm of head_dim channels on each head's queries and keys (shared by the heads)
    all_heads = "all_heads"  # one RMSNorm over all heads' channels, before the head split (Wan2.1)


class FinalModulation(str, Enum):
    adaln = "adaln"  # the final layer's own adaLN map of the conditioning vector (DiT)
    table = "table"  # a learned (shift, scale) table added to the raw time embedding (PixArt-alpha's final layer; Wan)


class Modulation(str, Enum):
    per_block = "per_block"  # each block maps the conditioning vector to its modulation (DiT's adaLN-Zero)
    single = "single"  # one map shared by all blocks + a learned table per block (adaLN-single, PixArt-alpha)


@dataclass
class DiTArgs(Settings):
    """Everything `sora.models.dit.DiT` is built from besides its input and text widths (presets: configs/dit/)."""

    # The quick start's 128: at the same cost as width 256 it makes twice the steps (2560 against 1300) and scored
    # better on every probe figure (docs/results/QUICK_START.md, "Width 128 at the same cost").
    hidden_size: int = setting(128, ge=1)
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
    # Wan2.1's details (configs/dit/wan2_1_*.yaml, docs/WAN.md); the defaults are ours and change nothing.
    qk_norm_scope: QKNormScope = QKNormScope.head
    # The MLP's hidden width; 0: hidden_size x mlp_ratio. Wan2.1-1.3B's is 8960 (5.83x), not a whole ratio.
    mlp_width: int = setting(0, ge=0)
    final_modulation: FinalModulation = FinalModulation.adaln
    # 0: the final layer maps each token to its patch with one linear map (DiT; the presets). > 0: through a GELU
    # layer this wide first, so a token's patch need not lie in a linear subspace as wide as the model (PixNerd,
    # Wang et al. 2025, puts a per-patch neural field there for pixel-space patches). The quick start's patches hold
    # 2x8x8x3 = 384 values at width 128: with a 512-wide head its validation loss fell from 0.125 to 0.095 and
    # held-out shape rose from 0.53 to 0.66 in two seeds, for about 10% more time a step
    # (docs/results/QUICK_START.md, "An MLP head").
    head_mlp_width: int = setting(512, ge=0)
    # 0: padded caption tokens are masked out of cross-attention. > 0: captions are zeroed past their length and
    # padded to this many tokens, all of them attended (Wan's 512: its text embedding of a zero vector is a bias,
    # which the model was trained to see).
    text_len: int = setting(0, ge=0)
    # The residual stream, the time embedding and its shared map in fp32 under bf16 autocast, so the modulation,
    # the norms and the residual adds run in fp32 (Wan's own code, wan/modules/model.py); linears stay in bf16.
    fp32_residual: bool = False
    # A local Wan2.1 transformer to start from (sora/models/wan.py: a diffusers save_pretrained folder, the original
    # checkpoint folder, or ComfyUI's single file); its config decides the architecture fields above.
    init_from: Optional[str] = None

    def check(self, at: str = "") -> None:
        if len(self.patch_size) != 3:
            raise SoraError(f"{at}patch_size must be [pt, ph, pw], each >= 1, got {list(self.patch_size)}")
        if self.hidden_size % self.num_heads:
            raise SoraError(f"{at}hidden_size={self.hidden_size} must divide by {at}num_heads={self.num_heads}")
        head_dim = self.hidden_size // self.num_heads
        if head_dim % 2 or head_dim < 6:  # 3D RoPE rotates pairs of channels on each of the t, h, w axes (rope.py)
            raise SoraError(f"{at}hidden_size / {at}num_heads = {head_dim} channels a head; 3D RoPE needs an even "
                            "number >= 6")
        if self.final_modulation == FinalModulation.table and self.modulation != Modulation.single:
            raise SoraError(f"{at}final_modulation=table adds a table to the raw time embedding, as adaLN-single "
                            f"does in every block: it needs {at}modulation=single")
        if self.text_len and self.text_conditioning != TextConditioning.cross:
            raise SoraError(f"{at}text_len={self.text_len} pads the captions for cross-attention: it needs "
                            f"{at}text_conditioning=cross")
        joint = self.text_conditioning == TextConditioning.joint
        if joint and self.attention_layout == AttentionLayout.factorized:
            raise SoraError(f"{at}text_conditioning=joint attends over all spacetime tokens: it needs "
                            f"{at}attention_layout=full, not factorized")
        if joint and self.modulation == Modulation.single:
            raise SoraError(f"{at}modulation=single shares the video stream's modulation; the joint text stream has "
                            f"its own per block: use {at}text_conditioning=cross, or {at}modulation=per_block")
