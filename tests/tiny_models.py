"""Tiny randomly initialised transformers models saved to a folder, built offline: a word-level tokenizer trained in
memory with a chat template, a LLaVA-style vision-language model (CLIP vision tower + Llama) and a Llama causal LM.
Their words are random, but a model's output depends on its input, and decoding them is real end to end."""

from pathlib import Path

WORDS = ("a red green blue white black circle square triangle moves slowly quickly left right up down across the "
         "field camera pans tilts zooms over under bright dark background scene shows person walks runs city street "
         "at night day sunset water waves forest trees close wide shot video clip describe detail caption short "
         "prompt write in style of these examples user assistant system :")
# One role a turn, the images as <image> tokens where the content puts them, then </s>; the reply follows "assistant :".
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'] }} :{% if message['content'] is string %} "
                 "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
                 " <image>{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}{% endfor %}{% endif %} </s> "
                 "{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}")
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]


def tiny_tokenizer():
    """A word-level PreTrainedTokenizerFast over WORDS with <pad> <s> </s> <image> and CHAT_TEMPLATE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([WORDS], trainers.WordLevelTrainer(special_tokens=SPECIAL))
    tok.decoder = decoders.WordPiece()  # words joined by spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", chat_template=CHAT_TEMPLATE,
                                   extra_special_tokens={"image_token": "<image>"})


def _llama(tokenizer, init: float):
    from transformers import LlamaConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                       initializer_range=init, bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
                       pad_token_id=ids["<pad>"])


def save_tiny_vlm(path: Path, seed: int = 0) -> Path:
    """A LLaVA-style image-text-to-text model (28x28 images, 4 tokens an image) and its processor, saved to `path`."""
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = tiny_tokenizer()
    images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    # 2x2 patches + CLS, the CLS dropped ("default"): 4 <image> tokens an image
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                               num_additional_image_tokens=1)
    vision = CLIPVisionConfig(image_size=28, patch_size=14, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, initializer_range=0.5)
    config = LlavaConfig(vision_config=vision, text_config=_llama(tokenizer, 0.5),
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return Path(path)


def save_tiny_causal_lm(path: Path, seed: int = 0) -> Path:
    """A Llama causal LM and its tokenizer (with CHAT_TEMPLATE), saved to `path`."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    LlamaForCausalLM(_llama(tokenizer, 0.5)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
