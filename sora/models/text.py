"""Text encoders: captions -> (tokens b m d, mask b m). A small trainable one, or a frozen T5 / CLIP from disk.

Every caption yields at least one real token (a BOS token, or the tokenizer's own special tokens), so the
empty caption that classifier-free guidance trains on still has something to attend to.
"""

import os
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional

import torch
import torch.nn as nn

from sora.errors import SoraError
from sora.settings import Settings, setting

# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------

# The built-in moving-shapes dataset's words (sora/data/moving_shapes.py writes its captions from these).
MOVING_SHAPES_WORDS = ["a", "moving", "red", "green", "blue", "yellow", "cyan", "magenta", "square", "circle",
                       "triangle", "left", "right", "up", "down"]


class TextKind(str, Enum):
    vocab = "vocab"  # small trainable encoder over a word vocabulary, trained with the DiT
    hf = "hf"  # frozen T5 or CLIP text encoder from the transformers library, loaded from a local directory
    umt5 = "umt5"  # Wan's frozen umT5-XXL encoder (UMT5EncoderModel) with Wan's padding, from a local directory


@dataclass
class TextArgs(Settings):
    """`text.*`: the word encoder's size and words, or a frozen encoder's path (`build_text_encoder`)."""

    kind: TextKind = TextKind.vocab
    # vocab: the words it knows (others map to <unk>).
    vocab: List[str] = field(default_factory=lambda: list(MOVING_SHAPES_WORDS))
    width: int = setting(128, ge=1)
    depth: int = setting(1, ge=0)
    num_heads: int = setting(4, ge=1)
    max_tokens: int = setting(8, ge=2)  # a begin token and at least one word; the built-in captions have 5 words
    # hf: a directory written by `save_pretrained` holding the model and its tokenizer.
    path: Optional[str] = None

    def check(self, at: str = "") -> None:
        if self.kind in (TextKind.hf, TextKind.umt5):
            if not self.path:
                raise SoraError(f"text={self.kind.value} needs {at}path: a local directory written by "
                                "save_pretrained()")
            return
        if not self.vocab:
            raise SoraError(f"{at}vocab is empty: list the words the captions use")
        words = [w.lower() for w in self.vocab]
        repeated = sorted({w for w in words if words.count(w) > 1})
        if repeated:
            raise SoraError(f"{at}vocab repeats {', '.join(repeated)}")
        if self.width % self.num_heads:
            raise SoraError(f"{at}width={self.width} must divide by {at}num_heads={self.num_heads}")

# ---------------------------------------------------------------------------------------------------------------
# Trainable encoder over a word vocabulary
# ---------------------------------------------------------------------------------------------------------------

PAD, BOS, UNK = 0, 1, 2


class WordTokenizer:
    """Lower-cased words to ids; ids 0-2 are <pad>, <bos>, <unk>; every sequence starts with <bos>."""

    def __init__(self, vocab: list[str], max_tokens: int):  # both checked by TextArgs (vocab, max_tokens)
        words = [w.lower() for w in vocab]
        self.vocab = words
        self.ids = {w: i + 3 for i, w in enumerate(words)}
        self.size, self.max_tokens = len(words) + 3, max_tokens

    @staticmethod
    def words(text: str) -> list[str]:
        """A caption's words, lower-cased, as the tokenizer splits them."""
        return re.findall(r"[a-z0-9']+", text.lower())

    def unknown(self, text: str) -> list[str]:
        """The words of a caption outside the vocabulary (each becomes <unk>), once each, in order."""
        return list(dict.fromkeys(w for w in self.words(text) if w not in self.ids))

    def cut(self, text: str) -> list[str]:
        """The words past max_tokens (after <bos>), which the encoder never sees."""
        return self.words(text)[self.max_tokens - 1 :]

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> ids (b max_tokens), mask (b max_tokens); longer captions are cut."""
        ids = torch.full((len(captions), self.max_tokens), PAD, dtype=torch.long)
        for row, text in enumerate(captions):
            seq = [BOS] + [self.ids.get(w, UNK) for w in self.words(text)]
            seq = seq[: self.max_tokens]
            ids[row, : len(seq)] = torch.tensor(seq)
        return ids, ids != PAD


class VocabTextEncoder(nn.Module):
    """Word embeddings + learned positions + a few pre-norm transformer layers; trained with the DiT."""

    trainable = True

    def __init__(self, vocab: list[str], width: int = 128, depth: int = 1, num_heads: int = 4, max_tokens: int = 16):
        super().__init__()
        self.tokenizer = WordTokenizer(vocab, max_tokens)
        self.dim = width
        self.embed = nn.Embedding(self.tokenizer.size, width)
        self.pos = nn.Parameter(torch.randn(max_tokens, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, num_heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False) if depth > 0 else None
        self.norm = nn.LayerNorm(width)

    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer(captions)
        ids, mask = ids.to(self.pos.device), mask.to(self.pos.device)
        x = self.embed(ids) + self.pos[None, : ids.shape[1]]  # b m width
        if self.layers is not None:
            x = self.layers(x, src_key_padding_mask=~mask)
        return self.norm(x), mask


# ---------------------------------------------------------------------------------------------------------------
# Frozen encoders from the transformers library
# ---------------------------------------------------------------------------------------------------------------


class HFTextEncoder(nn.Module):
    """A T5 encoder or CLIP text model, with its tokenizer, from a local `save_pretrained` directory (or a diffusers
    pipeline folder's text_encoder/ and tokenizer/); frozen."""

    trainable = False

    def __init__(self, path: str, max_tokens: int = 77):
        super().__init__()
        if not path or not os.path.isdir(path):
            raise SoraError(f"text.path={path!r} is not a directory: point it at a local save_pretrained() folder "
                            "(nothing is downloaded)")
        try:
            import transformers
        except ImportError as e:
            raise SoraError("text.kind=hf needs the transformers library: pip install 'sora[hf]'") from e
        # A diffusers pipeline folder (Wan's) keeps the model and its tokenizer in text_encoder/ and tokenizer/.
        pipeline = os.path.isdir(os.path.join(path, "text_encoder")) and os.path.isdir(os.path.join(path, "tokenizer"))
        model_path, tokenizer_path = ((os.path.join(path, "text_encoder"), os.path.join(path, "tokenizer"))
                                      if pipeline else (path, path))
        try:
            config = transformers.AutoConfig.from_pretrained(model_path, local_files_only=True)
            if config.model_type == "umt5":  # a relative position bias in every layer: T5EncoderModel keeps layer 0's
                model = transformers.UMT5EncoderModel.from_pretrained(model_path, local_files_only=True)
            elif config.model_type in ("t5", "mt5"):
                model = transformers.T5EncoderModel.from_pretrained(model_path, local_files_only=True)
            elif config.model_type in ("clip", "clip_text_model"):
                model = transformers.CLIPTextModel.from_pretrained(model_path, local_files_only=True)
            else:
                raise SoraError(f"text.path={path!r} holds a {config.model_type!r} model; expected T5 or CLIP")
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise SoraError(f"cannot load a text encoder from {path!r}: {str(e).splitlines()[0]}") from e
        self.model = model.eval().requires_grad_(False)
        self.dim = model.config.d_model if hasattr(model.config, "d_model") else model.config.hidden_size
        self.max_tokens = max_tokens

    def train(self, mode: bool = True) -> "HFTextEncoder":
        """Frozen: always in eval mode, whatever a trainer asks (T5's dropout must not perturb the embeddings)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.max_tokens,
                               return_tensors="pt")
        device = next(self.model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device).bool()
        tokens = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # b m d
        return tokens, mask


class UMT5TextEncoder(HFTextEncoder):
    """Wan's text encoder: umT5 (UMT5EncoderModel) with Wan's padding: every caption padded to max_tokens (Wan's
    text_len, 512) and its embeddings past its length zeroed, as WanPipeline._get_t5_prompt_embeds does."""

    def __init__(self, path: str, max_tokens: int = 512):
        super().__init__(path, max_tokens)
        if self.model.config.model_type != "umt5":
            raise SoraError(f"text.path={path!r} holds a {self.model.config.model_type!r} model; text=umt5 needs "
                            "Wan's umT5 encoder (model_type umt5)")

    @torch.no_grad()
    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.max_tokens,
                               add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        tokens = self.model(ids, mask).last_hidden_state  # b m d
        mask = mask.bool()
        return tokens * mask[..., None].to(tokens.dtype), mask  # zero past each caption's length (Wan)


def build_text_encoder(args: TextArgs) -> nn.Module:
    """TextArgs -> encoder with `.dim`, `.trainable` and `forward(captions) -> (b m dim, b m)`."""
    if args.kind == TextKind.vocab:
        return VocabTextEncoder(list(args.vocab), args.width, args.depth, args.num_heads, args.max_tokens)
    if args.kind == TextKind.umt5:
        return UMT5TextEncoder(args.path, args.max_tokens)
    return HFTextEncoder(args.path, args.max_tokens)
