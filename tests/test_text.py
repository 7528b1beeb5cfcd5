import pytest

from sora.errors import SoraError
from sora.models.text import BOS, PAD, UNK, HFTextEncoder, VocabTextEncoder, WordTokenizer

WORDS = ["a", "red", "circle", "moving", "left"]


def test_tokenizer_bos_unknown_and_padding():
    ids, mask = WordTokenizer(WORDS, max_tokens=8)(["a red circle moving left", "", "A purple circle"])
    assert ids[0, :6].tolist() == [BOS, 3, 4, 5, 6, 7] and ids[0, 6:].tolist() == [PAD, PAD]
    assert mask[1].tolist() == [True] + [False] * 7  # the empty caption keeps its <bos>
    assert ids[2, :4].tolist() == [BOS, 3, UNK, 5]


def test_vocab_encoder_shapes_and_gradients():
    enc = VocabTextEncoder(WORDS, width=16, depth=1, num_heads=2, max_tokens=8)
    tokens, mask = enc(["a red circle", "left"])
    assert tokens.shape == (2, 8, 16) and mask.shape == (2, 8) and enc.trainable
    tokens[mask].sum().backward()
    assert enc.embed.weight.grad is not None


def _save_tiny_t5(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(path)
    config = T5Config(vocab_size=len(vocab), d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=3)
    T5EncoderModel(config).save_pretrained(path)


def _save_tiny_clip(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                            unk_token="<unk>").save_pretrained(path)
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=20, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=1,
                                 eos_token_id=2)).save_pretrained(path)


@pytest.mark.parametrize("kind, dim", [("t5", 24), ("clip", 20)])
def test_hf_encoders_load_from_a_local_directory(tmp_path, kind, dim):
    pytest.importorskip("transformers")
    (_save_tiny_t5 if kind == "t5" else _save_tiny_clip)(tmp_path)
    enc = HFTextEncoder(str(tmp_path), max_tokens=8)
    tokens, mask = enc(["a red circle moving left", "circle"])
    assert tokens.shape == (2, 8, dim) and enc.dim == dim and not enc.trainable
    assert mask[0].sum() > mask[1].sum() >= 1
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()  # as Lightning does to every registered module at fit start
    assert not enc.training and not enc.model.training  # frozen: T5's dropout never runs


def test_hf_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SoraError, match="not a directory"):
        HFTextEncoder(str(tmp_path / "nope"))
