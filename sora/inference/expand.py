"""Prompt expansion: a local instruct model rewrites a user's short prompt as a caption in the style of the training
captions, few-shot from captions read from the shards, before sampling.

    expander = PromptExpander("models/Qwen2.5-7B-Instruct", shard_captions("shards/train-*.tar"), k=4)
    long = expander.expand(["a cat on a sofa"])     # -> ["A ginger cat lies curled on a grey sofa ..."]
    generate_to_files(bundle, long, paths, seed, settings, user_prompts=["a cat on a sofa"], expander=expander.record)

A model trained on long, detailed captions is conditioned off its training distribution by a five-word prompt;
Sora (Brooks et al. 2024) and DALL-E 3 (Betker et al. 2023) turn a user's short prompt into a caption like the
re-captioned training text with a language model. Here that model is any local causal LM transformers loads with
`AutoModelForCausalLM` whose tokenizer has a chat template. Its examples are the k training captions that share
the most words with the prompt (ties broken by each caption's SHA-256), so they are the same for the same prompt
and shards; decoding is greedy. The whole thing is deterministic: the same prompt, model and shards give the same
expansion, and, on CPU, the same in a batch as alone (batches are padded on the left).
"""

import hashlib
import logging
import re
import tarfile
from pathlib import Path

from sora.curation.local_models import check_model_dir, greedy, load_local
from sora.data.preflight import read_samples
from sora.data.stream import expand_shards
from sora.devices import resolve_device
from sora.errors import SoraError

log = logging.getLogger(__name__)

KIND = "a causal (instruct) language"
MAX_SHARDS = 32  # shards read for examples, spread over the list
MAX_CAPTIONS = 4096  # captions read for examples, in all
INSTRUCTION = ("You write captions for a text-to-video model. Rewrite the user's short prompt as one caption in the "
               "style of the example captions: their length, level of detail and wording. Keep everything the prompt "
               "asks for and contradict none of it; add only visual detail that fits it (subjects, motion, setting, "
               "lighting, camera). Reply with the caption alone.")

# ---------------------------------------------------------------------------------------------------------------
# Examples: captions from the shards
# ---------------------------------------------------------------------------------------------------------------


def shard_captions(pattern: str, key: str = "expand_examples", limit: int = MAX_CAPTIONS) -> list[str]:
    """Distinct captions (.txt members) of the shards `pattern` names, at most `limit`, read from at most MAX_SHARDS
    shards spread over the list; nothing but the .txt and .json members is read. Errors name `key`."""
    shards = expand_shards(pattern, key=key)
    if len(shards) > MAX_SHARDS:
        shards = [shards[i * len(shards) // MAX_SHARDS] for i in range(MAX_SHARDS)]
    per_shard = max(1, limit // len(shards))
    captions: dict[str, None] = {}
    for path in shards:
        try:
            for raw in read_samples(path, per_shard):
                text = " ".join((raw.get("txt") or b"").decode("utf-8", errors="replace").split())
                if text:
                    captions[text] = None
        except (OSError, tarfile.TarError, EOFError) as e:
            raise SoraError(f"{key}: shard {path!r} cannot be read: {str(e).splitlines()[0] if str(e) else e!r}") \
                from None
    if not captions:
        raise SoraError(f"{key}={pattern!r}: its shards hold no caption (.txt) to take as examples")
    return list(captions)


# Words every caption has: sharing them says nothing about a caption's subject.
STOPWORDS = frozenset("a an the and or of in on at to with by for from into over under is are it its this that as "
                      "while then there".split())


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower())) - STOPWORDS


def choose_examples(prompt: str, captions: list[str], k: int) -> list[str]:
    """The k captions sharing the most words (stop words aside) with `prompt`; ties by the caption's SHA-256 (not
    by file order)."""
    words = _words(prompt)

    def rank(caption: str):
        return -len(words & _words(caption)), hashlib.sha256(caption.encode()).hexdigest()

    return sorted(dict.fromkeys(captions), key=rank)[:k]


def clean(text: str) -> str:
    """The model's reply as one caption: whitespace collapsed, a leading "Caption:" and wrapping quotes dropped."""
    text = " ".join(text.split())
    text = re.sub(r"^(caption|expanded prompt)\s*:\s*", "", text, flags=re.IGNORECASE)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


# ---------------------------------------------------------------------------------------------------------------
# The expander
# ---------------------------------------------------------------------------------------------------------------


def check_expander_dir(model_dir: str, key: str = "expand") -> None:
    """A cheap check before anything else loads: `model_dir` is a local causal LM folder."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    check_model_dir(model_dir, KIND, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, key)


class PromptExpander:
    """A local instruct model that turns short prompts into captions like `examples`, greedily, in batches."""

    def __init__(self, model_dir: str, examples: list[str], k: int = 4, max_new_tokens: int = 200,
                 batch_size: int = 8, device: str = "cpu", key: str = "expand"):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        for name, value, low in (("k", k, 0), ("max_new_tokens", max_new_tokens, 1), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SoraError(f"{key}: {name} must be an integer >= {low}, got {value!r}")
        self.model_dir, self.device = str(model_dir), resolve_device(device)
        self.examples, self.k = list(dict.fromkeys(examples)), k
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.model, self.tokenizer = load_local(self.model_dir, AutoModelForCausalLM, AutoTokenizer, KIND,
                                                MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, key, self.device)
        if self.tokenizer.chat_template is None:
            raise SoraError(f"{key}={self.model_dir!r}: its tokenizer has no chat template (an instruct model has one)")
        self.tokenizer.padding_side = "left"  # generation continues every row from its last real token
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def record(self) -> dict:
        """What a generated video's manifest says about the expansion (sora/provenance/stamp.py)."""
        return {"model": Path(self.model_dir).name, "model_type": self.model.config.model_type,
                "examples": min(self.k, len(self.examples)), "max_new_tokens": self.max_new_tokens}

    def conversation(self, prompt: str) -> list[dict]:
        """One user turn: the instruction, the chosen example captions, the prompt (no system turn: some chat
        templates refuse one)."""
        examples = choose_examples(prompt, self.examples, self.k)
        shown = "".join(f"Example caption {i + 1}: {c}\n" for i, c in enumerate(examples))
        return [{"role": "user", "content": f"{INSTRUCTION}\n\n{shown}\nShort prompt: {prompt}\nCaption:"}]

    def expand(self, prompts: list[str]) -> list[str]:
        """One caption per prompt, in order; a prompt the model answers with nothing stays as it was (logged)."""
        out = [c for start in range(0, len(prompts), self.batch_size)
               for c in self._batch(prompts[start : start + self.batch_size])]
        for i, (prompt, text) in enumerate(zip(prompts, out)):
            if not text:
                log.warning("expand: the model wrote nothing for prompt %d (%r); it is sampled as written", i, prompt)
                out[i] = prompt
            else:
                log.info("expand: %r -> %r", prompt, text)
        return out

    def _batch(self, prompts: list[str]) -> list[str]:
        import torch

        texts = [self.tokenizer.apply_chat_template(self.conversation(p), add_generation_prompt=True, tokenize=False)
                 for p in prompts]
        # The template already wrote the special tokens it wants (a BOS among them).
        inputs = self.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **greedy(self.max_new_tokens, self.tokenizer.pad_token_id))
        new = out[:, inputs["input_ids"].shape[1] :]  # b new: the prompt is echoed first
        return [clean(t) for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
