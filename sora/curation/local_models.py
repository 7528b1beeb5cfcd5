"""Local transformers models, loaded by kind: a folder saved with save_pretrained, refused in one line naming it when
it is not a model of the kind asked for (its config.json names the architecture). Nothing is downloaded."""

from pathlib import Path

from sora.errors import SoraError


def check_model_dir(model_dir: str, kind: str, names: dict, key: str) -> None:
    """`model_dir` is a local transformers folder whose config names a model in `names` (an Auto class's mapping)."""
    from transformers import AutoConfig

    path = Path(model_dir)
    if not path.is_dir():
        raise SoraError(f"{key}={model_dir!r} is not a folder: give {kind} model saved locally with save_pretrained")
    if not (path / "config.json").is_file():
        raise SoraError(f"{key}={model_dir!r} has no config.json: not a transformers model folder ({kind} model "
                        "saved with save_pretrained)")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, OSError, KeyError) as e:
        raise SoraError(f"{key}={model_dir!r}: its config.json cannot be read: {first_sentence(e)}") from None
    if config.model_type not in names:
        raise SoraError(f"{key}={model_dir!r} holds a {config.model_type!r} model, not {kind} model")


def load_local(model_dir: str, auto_model, processor_class, kind: str, names: dict, key: str, device):
    """(model in eval mode on `device`, processor or tokenizer) from a local folder; one line naming the folder
    when it is not a `kind` model or its files do not load. bf16 on GPU, fp32 on CPU."""
    import torch

    check_model_dir(model_dir, kind, names, key)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        processor = processor_class.from_pretrained(model_dir, local_files_only=True)
        model = auto_model.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
    except (ValueError, OSError, KeyError, TypeError, ImportError) as e:  # ImportError: a processor's missing package
        raise SoraError(f"{key}={model_dir!r}: cannot load it as {kind} model: {first_sentence(e)}") from None
    return model.to(device).eval(), processor


def first_sentence(e: Exception) -> str:
    """An exception's message cut to one line: its first sentence (transformers' run over several lines)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text.split(". ", 1)[0].rstrip(".")


def greedy(max_new_tokens: int, pad_token_id) -> dict:
    """generate()'s arguments for greedy decoding, whatever sampling the model's generation_config asks for."""
    return {"do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens, "pad_token_id": pad_token_id,
            "temperature": None, "top_p": None, "top_k": None}
