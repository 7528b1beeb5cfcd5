"""Re-captioning (sora/curation/captioner.py) with a tiny random LLaVA-style model saved to a temp folder: captions
come out end to end, the same every time, the same in a batch as alone; a folder of the wrong kind is one line."""

import numpy as np
import pytest

from sora.curation.captioner import Captioner, pick_frames
from sora.errors import SoraError
from tests.tiny_models import save_tiny_causal_lm, save_tiny_vlm


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    return save_tiny_vlm(tmp_path_factory.mktemp("vlm"))


def clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(1, 9)), 24 + 4 * i, 40, 3), dtype=np.uint8) for i in range(n)]


def test_pick_frames_spreads_over_the_clip_first_and_last_included():
    clip = np.arange(10)[:, None, None, None] * np.ones((10, 2, 2, 3), np.uint8)  # t h w 3, frame i filled with i
    assert pick_frames(clip, 4)[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert pick_frames(clip[:3], 4).shape == (3, 2, 2, 3)


def test_captions_end_to_end_deterministic_and_batched_as_alone(vlm_dir):
    captioner = Captioner(str(vlm_dir), frames_per_clip=4, max_new_tokens=10, batch_size=3)
    videos = clips(5)
    captions = captioner.caption(videos)
    assert len(captions) == 5 and all(isinstance(c, str) and c.strip() for c in captions)
    assert len(set(captions)) > 1  # the frames reach the model: different clips, different captions
    assert captioner.caption(videos) == captions  # greedy: the same every time
    assert [captioner.caption([v])[0] for v in videos] == captions  # a batch (left-padded) gives each its own
    other = Captioner(str(vlm_dir), frames_per_clip=4, max_new_tokens=10, batch_size=2)
    assert other.caption(videos) == captions  # whatever the batch size
    assert captioner.caption([]) == []


def test_the_prompt_and_the_frames_change_the_caption(vlm_dir):
    video = clips(1, seed=3)[0]
    base = Captioner(str(vlm_dir), max_new_tokens=10).caption([video])
    assert Captioner(str(vlm_dir), max_new_tokens=10, prompt="write a short caption").caption([video]) != base
    assert Captioner(str(vlm_dir), max_new_tokens=10).caption([255 - video]) != base


@pytest.mark.parametrize("make, said", [
    (lambda d: d / "absent", "is not a folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "has no config.json"),
    (lambda d: save_tiny_causal_lm(d / "lm"), "holds a 'llama' model, not an image-text-to-text"),
    (lambda d: (d / "junk").mkdir() or (d / "junk" / "config.json").write_text("{}") and d / "junk",
     "its config.json cannot be read"),
])
def test_a_folder_of_the_wrong_kind_is_one_line_naming_it(tmp_path, make, said):
    folder = make(tmp_path)
    with pytest.raises(SoraError, match=said) as e:
        Captioner(str(folder))
    assert str(folder) in str(e.value) and "\n" not in str(e.value)


def test_a_processor_that_needs_a_missing_package_is_one_line(tmp_path):
    """Qwen2-VL's processor needs torchvision (its video processor): without it, one line naming the folder."""
    import importlib.util
    import json

    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from tests.tiny_models import tiny_tokenizer

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: Qwen2-VL's processor loads")
    tokenizer = tiny_tokenizer()
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e4}}
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config={
        "depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2})).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "processor_class": "Qwen2VLProcessor", "image_processor_type": "Qwen2VLImageProcessor"}))
    with pytest.raises(SoraError, match=r"cannot load it as an image-text-to-text \(vision-language\) model: "
                                        r".*requires the Torchvision library") as e:
        Captioner(str(tmp_path))
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_bad_clips_and_settings_are_one_line(vlm_dir):
    captioner = Captioner(str(vlm_dir), max_new_tokens=2)
    with pytest.raises(SoraError, match="clip 1 must be uint8 frames"):
        captioner.caption([clips(1)[0], np.zeros((4, 8, 8), np.uint8)])
    with pytest.raises(SoraError, match="batch_size must be an integer >= 1"):
        Captioner(str(vlm_dir), batch_size=0)
