"""Prompt expansion (sora/inference/expand.py, sample.py expand=) with a tiny random Llama and an offline tokenizer
saved to a temp folder: it expands end to end, the same every time and in a batch as alone, few-shot from the
shards' captions chosen the same way each time; each video's manifest holds both prompts; a folder of the wrong
kind, or examples that are not there, are one line."""

import hashlib
import re
from pathlib import Path

import pytest

from sora.errors import SoraError
from sora.inference.expand import PromptExpander, choose_examples, shard_captions
from tests.conftest import sample_in_process, shrunk_overrides, train_in_process
from tests.tiny_models import save_tiny_causal_lm, save_tiny_vlm

CAPTIONS = ["a red circle moves left across a black background", "the camera pans over a green field at sunset",
            "a blue square moves up", "a person walks in a city street at night", "waves roll under a dark sky"]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    return save_tiny_causal_lm(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, shapes_dir) -> Path:
    """A tiny checkpoint trained one step on the moving-shapes shards (its data.shards: the examples' default)."""
    root = tmp_path_factory.mktemp("expand_run")
    proc = train_in_process(*shrunk_overrides(shapes_dir, root / "run"), "train.max_steps=1",
                            "train.final_samples=false", "train.sample_every_n_steps=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run" / "checkpoints" / "last.ckpt"


def one_line(proc, message: str) -> None:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert message in errors[0], errors[0]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------------------------


def test_examples_share_the_prompts_words_and_do_not_depend_on_order():
    chosen = choose_examples("a red circle at night", CAPTIONS, 2)
    assert chosen == ["a red circle moves left across a black background",  # red, circle
                      "a person walks in a city street at night"]  # night ("a", "at": stop words)
    assert choose_examples("a red circle at night", CAPTIONS[::-1] + CAPTIONS, 2) == chosen
    assert len(choose_examples("anything", CAPTIONS, 10)) == len(CAPTIONS)


def test_captions_are_read_from_the_shards(shapes_dir):
    captions = shard_captions(f"{shapes_dir}/train-*.tar")
    assert captions and len(set(captions)) == len(captions) and all(c.strip() == c and c for c in captions)
    assert shard_captions(f"{shapes_dir}/train-*.tar") == captions
    with pytest.raises(SoraError, match=r"^expand_examples='/no/\*\.tar' matches no file"):
        shard_captions("/no/*.tar")


# ---------------------------------------------------------------------------------------------------------------
# The expander
# ---------------------------------------------------------------------------------------------------------------


def test_expansion_is_end_to_end_deterministic_and_batched_as_alone(lm_dir):
    expander = PromptExpander(str(lm_dir), CAPTIONS, k=2, max_new_tokens=12, batch_size=3)
    prompts = ["a red square", "a city at night", "waves", "a forest in the day"]
    expanded = expander.expand(prompts)
    assert len(expanded) == 4 and all(isinstance(e, str) and e for e in expanded)
    assert len(set(expanded)) > 1  # the prompt reaches the model
    assert expander.expand(prompts) == expanded
    assert [expander.expand([p])[0] for p in prompts] == expanded
    assert PromptExpander(str(lm_dir), CAPTIONS[::-1], k=2, max_new_tokens=12).expand(prompts) == expanded
    assert expander.record == {"model": lm_dir.name, "model_type": "llama", "examples": 2, "max_new_tokens": 12}


def test_the_examples_change_the_expansion(lm_dir):
    with_examples = PromptExpander(str(lm_dir), CAPTIONS, k=3, max_new_tokens=12).expand(["a red square"])
    assert PromptExpander(str(lm_dir), [], k=0, max_new_tokens=12).expand(["a red square"]) != with_examples


@pytest.mark.parametrize("make, said", [
    (lambda d: d / "absent", "is not a folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "has no config.json"),
    (lambda d: save_tiny_vlm(d / "vlm"), "holds a 'llava' model, not a causal (instruct) language model"),
])
def test_a_folder_that_is_not_a_causal_lm_is_one_line(tmp_path, make, said):
    folder = make(tmp_path)
    with pytest.raises(SoraError, match=re.escape(said)) as e:
        PromptExpander(str(folder), CAPTIONS)
    assert str(folder) in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# sample.py expand=
# ---------------------------------------------------------------------------------------------------------------


def test_sample_py_expands_and_the_manifest_holds_both_prompts(ckpt, lm_dir, shapes_dir, tmp_path, caplog):
    from sora.provenance.verify import verify_file

    args = [f"ckpt={ckpt}", "prompt=a red circle moving left", "steps=1", f"expand={lm_dir}",
            "expand_max_new_tokens=8", "expand_k=2"]
    proc = sample_in_process(*args, f"out={tmp_path / 'a.mp4'}", "provenance.include_prompt=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    gen = verify_file(tmp_path / "a.mp4")["claims"]["generation"]
    expanded = gen["expanded_prompt"]
    assert gen["prompt"] == "a red circle moving left" and expanded and expanded != gen["prompt"]
    assert gen["prompt_sha256"] == sha(gen["prompt"]) and gen["expanded_prompt_sha256"] == sha(expanded)
    assert gen["expander"] == {"model": lm_dir.name, "model_type": "llama", "examples": 2, "max_new_tokens": 8}
    assert f"expand: 'a red circle moving left' -> {expanded!r}" in proc.stderr

    # The same again: the same expansion; the default manifest holds both prompts' hashes and neither text.
    again = sample_in_process(*args, f"out={tmp_path / 'b.mp4'}")
    assert again.returncode == 0, again.stderr[-3000:]
    gen_b = verify_file(tmp_path / "b.mp4")["claims"]["generation"]
    assert "prompt" not in gen_b and "expanded_prompt" not in gen_b
    assert gen_b["prompt_sha256"] == gen["prompt_sha256"] and gen_b["expanded_prompt_sha256"] == sha(expanded)

    # Examples from other shards (here the held-out ones) give the model other text to follow.
    other = sample_in_process(*args, f"out={tmp_path / 'c.mp4'}", f"expand_examples={shapes_dir}/test-*.tar")
    assert other.returncode == 0, other.stderr[-3000:]


@pytest.mark.parametrize("args, message", [
    (["expand={lm}/absent"], "expand='{lm}/absent' is not a folder"),
    (["expand={vlm}"], "holds a 'llava' model, not a causal (instruct) language model"),
    (["expand={lm}", "expand_examples=/no/*.tar"], "expand_examples='/no/*.tar' matches no file"),
    (["expand_examples=/no/*.tar"], "expand_examples= needs expand=LLM_DIR"),
    (["expand={lm}", "expand_k=-1"], "expand_k must be >= 0, got -1"),
])
def test_sample_py_refuses_bad_expansion_input_in_one_line(ckpt, lm_dir, tmp_path, args, message):
    vlm = save_tiny_vlm(tmp_path / "vlm") if any("{vlm}" in a for a in args) else None
    out = tmp_path / "x.mp4"
    fill = {"lm": lm_dir, "vlm": vlm}
    proc = sample_in_process(f"ckpt={ckpt}", "prompt=a red circle moving left", f"out={out}", "steps=1",
                             *[a.format(**fill) for a in args])
    one_line(proc, message.format(**fill))
    assert not out.exists()


def test_the_python_api_records_both_prompts(ckpt, lm_dir, tmp_path, monkeypatch):
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings, generate_to_files
    from sora.provenance.stamp import Provenance
    from sora.provenance.verify import verify_file

    bundle = ModelBundle.from_checkpoint(str(ckpt))
    expander = PromptExpander(str(lm_dir), CAPTIONS, k=2, max_new_tokens=8)
    prompts = ["a red circle moving left", "a blue square moving up"]
    expanded = expander.expand(prompts)
    paths = generate_to_files(bundle, expanded, [tmp_path / "0.mp4", tmp_path / "1.mp4"], 0,
                              SampleSettings.of(bundle.cfg).override(steps=1), provenance=Provenance(
                                  include_prompt=True), user_prompts=prompts, expander=expander.record)
    for path, prompt, text in zip(paths, prompts, expanded):
        gen = verify_file(path)["claims"]["generation"]
        assert (gen["prompt"], gen["expanded_prompt"], gen["expander"]) == (prompt, text, expander.record)
