"""Wan2.1 in our DiT (sora/models/wan.py, wan_lora.py): a tiny random WanTransformer3DModel, every parameter random
(norm affines and tables included, so a swapped norm or table cannot pass), in each layout on disk, against
diffusers' own forward; export round trips; umT5; LoRA files others load; bad inputs in one line."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from sora.errors import SoraError
from sora.models.conditioning import Conditioning
from sora.models.wan import diffusers_to_original, find_checkpoint, load_wan, main, save_wan
from sora.models.wan_lora import export_lora, import_lora
from sora.models.wan_lora import main as lora_main
from tests.conftest import ROOT

diffusers = pytest.importorskip("diffusers")

IN, TEXT_DIM, TEXT_LEN = 3, 128, 512  # the pixel VAE's channels and the word encoder's width (the bundle test)
# Wan's 128-wide heads (a ComfyUI file has no config: its heads are its width / 128); an MLP width not 4x
CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=IN, out_channels=IN,
              text_dim=TEXT_DIM, freq_dim=256, ffn_dim=320, num_layers=2, cross_attn_norm=True,
              qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)


def read(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """The diffusers model and its weights in every layout: {layout: path}."""
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(**CONFIG).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # every parameter random: norm weights around 1, matrices at
            if "norm" in name:  # 1 / sqrt(fan-in) so that the output stays of order 1
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (p[0].numel() ** -0.5 if p.ndim > 1 else 0.3))
    root = tmp_path_factory.mktemp("wan")
    model.save_pretrained(root / "diffusers")
    original = diffusers_to_original(read(root / "diffusers" / "diffusion_pytorch_model.safetensors"))
    config = dict(_class_name="WanModel", model_type="t2v", patch_size=[1, 2, 2], text_len=TEXT_LEN, in_dim=IN,
                  dim=256, ffn_dim=320, freq_dim=256, text_dim=TEXT_DIM, out_dim=IN, num_heads=2, num_layers=2,
                  window_size=[-1, -1], qk_norm=True, cross_attn_norm=True, eps=1e-6)
    (root / "wan").mkdir()
    (root / "wan" / "config.json").write_text(json.dumps(config))
    save_file(original, str(root / "wan" / "diffusion_pytorch_model.safetensors"))
    # the original layout sharded in two files, with the index the 14B release has
    (root / "sharded").mkdir()
    (root / "sharded" / "config.json").write_text(json.dumps(config))
    keys = sorted(original)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    for name, part in shards.items():
        save_file({k: original[k] for k in part}, str(root / "sharded" / name))
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (root / "sharded" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    save_file({"model.diffusion_model." + k: v for k, v in original.items()}, str(root / "comfy.safetensors"))
    paths = {"diffusers": root / "diffusers", "wan": root / "wan", "sharded": root / "sharded",
             "comfyui": root / "comfy.safetensors"}
    return model, paths


def inputs(b=2, frames=3, m=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, IN, frames, 4, 6, generator=g)
    text = torch.randn(b, m, TEXT_DIM, generator=g)
    mask = torch.ones(b, m, dtype=torch.bool)
    mask[1, 4:] = False
    return x, text, mask


def wan_text(text, mask):
    """Wan's padding: zero past each caption's length, then zeros to 512 tokens."""
    return F.pad(text * mask[..., None], (0, 0, 0, TEXT_LEN - text.shape[1]))


# ---------------------------------------------------------------------------------------------------------------
# Our forward against diffusers'
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["diffusers", "wan", "sharded", "comfyui"])
def test_forward_equals_diffusers_in_every_layout(wan, layout):
    model, paths = wan
    ours, args = load_wan(str(paths[layout]))
    assert find_checkpoint(str(paths[layout])).layout == {"sharded": "wan"}.get(layout, layout)
    assert (args.hidden_size, args.depth, args.num_heads, args.mlp_width) == (256, 2, 2, 320)
    x, text, mask = inputs()
    t = torch.tensor([0.5, 0.25])
    with torch.no_grad():
        got = ours.eval()(x, t, Conditioning(text, mask))
        want = model(x, 1000 * t, wan_text(text, mask), return_dict=False)[0]
    assert want.abs().max() > 1  # a real output, not a zeroed layer's
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()


def test_per_token_timesteps_and_given_frames_equal_diffusers(wan):
    """A timestep per latent frame (b T) equals diffusers' timestep per token (Wan2.2-TI2V's form); given frames
    take frame_t; all frames at one t is the synchronous path."""
    import inspect

    model, paths = wan
    ours, _ = load_wan(str(paths["diffusers"]))
    x, text, mask = inputs()
    t = torch.tensor([[0.75, 0.5, 0.25], [0.125, 0.5, 0.875]])  # b T
    tokens_per_frame = (4 // 2) * (6 // 2)
    # diffusers takes a timestep per token since Wan2.2 (0.35); before, only the synchronous checks below run
    per_token = "ts_seq_len" in inspect.getsource(type(model).forward)
    with torch.no_grad():
        got = ours(x, t, Conditioning(text, mask))
        given = torch.tensor([[True, False, False], [False, False, True]])
        frame_t = torch.tensor([0.0, 0.0625])
        got_given = ours(x, t, Conditioning(text, mask).with_frames(x, given, frame_t))
        if per_token:
            want = model(x, 1000 * t.repeat_interleave(tokens_per_frame, 1), wan_text(text, mask),
                         return_dict=False)[0]
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()
            per_frame = torch.where(given, frame_t[:, None], t)
            want = model(x, 1000 * per_frame.repeat_interleave(tokens_per_frame, 1), wan_text(text, mask),
                         return_dict=False)[0]
            assert torch.allclose(got_given, want, atol=1e-5, rtol=1e-5), (got_given - want).abs().max()
        assert not torch.allclose(got, got_given, atol=1e-3)  # the given frames' timestep is used
        same = torch.tensor([0.5, 0.25])
        assert torch.allclose(ours(x, same[:, None].expand(2, 3), Conditioning(text, mask)),
                              ours(x, same, Conditioning(text, mask)), atol=1e-5)  # AVX2: 1e-5 apart
        # the packed path of the same clips gives the batch's output (each clip its own text, no padding masked)
        packed = ours.forward_packed(list(x), same, Conditioning(text, mask))
        assert torch.allclose(torch.stack(packed), ours(x, same, Conditioning(text, mask)), atol=1e-5)


def test_flops_and_bf16_autocast_on_the_wan_variant(wan):
    """The analytic FLOPs count what torch counts (the captions padded to text_len); under bf16 autocast the residual
    stream stays fp32 (dit.fp32_residual) and the output stays near the fp32 one."""
    from torch.utils.flop_counter import FlopCounterMode

    from sora.models.flops import dit_forward_flops

    _, paths = wan
    ours, _ = load_wan(str(paths["wan"]))
    ours.set_attention_backend("math")  # the counter does not see SDPA's fused CPU kernel
    x, text, mask = inputs()
    cond = Conditioning(text, mask)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fp32 = ours(x, torch.tensor([0.5, 0.25]), cond)
    counted = counter.get_total_flops()
    assert abs(dit_forward_flops(ours, (3, 2, 3), 7, 2) - counted) / counted < 0.01
    streams = []
    ours.blocks[0].register_forward_hook(lambda m, i, out: streams.append(out[0].dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = ours(x, torch.tensor([0.5, 0.25]), cond)
    assert streams == [torch.float32]
    assert ((low.float() - fp32).norm() / fp32.norm()).item() < 0.05


def test_euler_steps_at_shift_3_equal_a_loop_over_diffusers(wan):
    from sora.diffusion.objectives import ObjectiveArgs, RectifiedFlow
    from sora.diffusion.samplers import euler
    from sora.diffusion.schedules import shifted

    model, paths = wan
    ours, _ = load_wan(str(paths["wan"]))
    x, text, mask = inputs()
    noise, cond, times = x, Conditioning(text, mask), shifted(4, 3.0)
    flow = RectifiedFlow(ObjectiveArgs(prediction="velocity"))
    with torch.no_grad():
        got = euler(lambda z, t: flow.velocity(ours, z, torch.full((2,), t), cond), noise, times)
        z = noise
        for sigma, sigma_next in zip(times[:-1], times[1:]):  # Wan's flow matching: x += (s' - s) v(x, 1000 s)
            v = model(z, torch.full((2,), 1000 * sigma, dtype=torch.float32), wan_text(text, mask),
                      return_dict=False)[0]
            z = z + (sigma_next - sigma) * v
    assert torch.allclose(got, z, atol=1e-5, rtol=1e-5), (got - z).abs().max()


def test_check_command_prints_the_relative_error(wan, capsys):
    _, paths = wan
    assert main(["check", str(paths["comfyui"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["relative_error"] < 1e-5


# ---------------------------------------------------------------------------------------------------------------
# Writing back
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["diffusers", "wan", "comfyui"])
def test_save_round_trips_bit_exactly(wan, tmp_path, fmt):
    _, paths = wan
    ours, _ = load_wan(str(paths["wan"]))
    out = tmp_path / ("out.safetensors" if fmt == "comfyui" else "out")
    save_wan(ours, str(out), fmt)
    source = {"diffusers": paths["diffusers"] / "diffusion_pytorch_model.safetensors",
              "wan": paths["wan"] / "diffusion_pytorch_model.safetensors", "comfyui": paths["comfyui"]}[fmt]
    written = read(out if fmt == "comfyui" else out / "diffusion_pytorch_model.safetensors")
    want = read(source)
    assert sorted(written) == sorted(want)
    assert all(torch.equal(written[k], want[k]) for k in want)
    again, _ = load_wan(str(out))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))


def test_init_from_in_a_run_and_export_to_wan(wan, tmp_path):
    """dit.init_from through the config check and ModelBundle.build; the export command writes the same weights."""
    from sora.config.checks import resolve_init_from
    from sora.inference.bundle import ModelBundle
    from sora.inference.export import main as export_main
    from tests.conftest import compose_config

    _, paths = wan
    cfg = compose_config("train", [f"dit.init_from={paths['diffusers']}"])
    resolve_init_from(cfg)
    assert list(cfg.dit.patch_size) == [1, 2, 2] and cfg.dit.mlp_width == 320 and cfg.dit.text_len == TEXT_LEN
    bundle = ModelBundle.build(cfg)
    ours, _ = load_wan(str(paths["diffusers"]))
    assert all(torch.equal(a, b) for a, b in zip(bundle.dit.state_dict().values(), ours.state_dict().values()))
    bundle.save(str(tmp_path / "export.safetensors"))
    assert export_main([str(tmp_path / "export.safetensors"), str(tmp_path / "wan"), "--format", "wan"]) == 0
    written = read(tmp_path / "wan" / "diffusion_pytorch_model.safetensors")
    want = read(paths["wan"] / "diffusion_pytorch_model.safetensors")
    assert sorted(written) == sorted(want) and all(torch.equal(written[k], want[k]) for k in want)


# ---------------------------------------------------------------------------------------------------------------
# umT5
# ---------------------------------------------------------------------------------------------------------------


def test_umt5_equals_transformers_and_differs_from_the_t5_path(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    from sora.models.text import TextArgs, build_text_encoder

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", "a", "red", "circle", "moving", "left", "fast"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.save_pretrained(tmp_path / "tokenizer")  # as a diffusers Wan pipeline folder keeps them
    torch.manual_seed(0)
    config = transformers.UMT5Config(vocab_size=len(vocab), d_model=24, d_kv=8, d_ff=32, num_layers=3, num_heads=3)
    model = transformers.UMT5EncoderModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relative_attention_bias" in name:
                p.normal_(0, 2.0)  # each layer's own bias, large enough to matter
    model.save_pretrained(tmp_path / "text_encoder")
    enc = build_text_encoder(TextArgs(kind="umt5", path=str(tmp_path), max_tokens=12))
    captions = ["a red circle moving left", "a circle"]
    tokens, mask = enc(captions)
    assert tokens.shape == (2, 12, 24) and mask.sum(1).tolist() == [5, 2]
    ids = fast(captions, padding="max_length", max_length=12, return_tensors="pt")
    with torch.no_grad():
        want = model(ids["input_ids"], ids["attention_mask"]).last_hidden_state * ids["attention_mask"][..., None]
        t5 = transformers.T5EncoderModel.from_pretrained(tmp_path / "text_encoder").eval()
        as_t5 = t5(ids["input_ids"], ids["attention_mask"]).last_hidden_state * ids["attention_mask"][..., None]
    assert torch.allclose(tokens, want, atol=1e-6)
    assert tokens[~mask].abs().max() == 0  # Wan's padding: zero past each caption's length
    assert (tokens - as_t5).abs().max() > 1e-2  # T5EncoderModel keeps layer 0's position bias only
    hf = build_text_encoder(TextArgs(kind="hf", path=str(tmp_path), max_tokens=12))  # text=hf reads umT5 right too
    assert torch.allclose(hf(captions)[0] * mask[..., None], want, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# LoRA files others load
# ---------------------------------------------------------------------------------------------------------------

TARGETS = ["attn.qkv", "attn.proj", "cross.q", "cross.kv", "cross.proj", "mlp.0", "mlp.2"]


def our_lora(dit, path, rank=4, alpha=8.0, targets=TARGETS):
    """A random LoRA in our file format on every block's targets; returns {module: (A, B)}."""
    g, tensors, modules = torch.Generator().manual_seed(3), {}, {}
    for name, m in dit.named_modules():
        if isinstance(m, torch.nn.Linear) and name.startswith("blocks.") and any(name.endswith(t) for t in targets):
            a = torch.randn(rank, m.in_features, generator=g) * m.in_features ** -0.5
            b = 0.3 * torch.randn(m.out_features, rank, generator=g) * rank ** -0.5
            tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = a, b
            modules[name] = (a, b)
    save_file(tensors, str(path), metadata={"format": "sora-lora", "rank": str(rank), "alpha": str(alpha),
                                            "target": ",".join(targets)})
    return modules


def test_lora_exports_load_into_diffusers_and_import_back(wan, tmp_path):
    pytest.importorskip("peft")  # diffusers' load_lora_adapter runs on peft
    model, paths = wan
    ours, _ = load_wan(str(paths["diffusers"]))
    modules = our_lora(ours, tmp_path / "ours.safetensors")
    with torch.no_grad():  # our LoRA'd forward: W + (alpha / rank) B A
        lora_dit, _ = load_wan(str(paths["diffusers"]))
        named = dict(lora_dit.named_modules())
        for name, (a, b) in modules.items():
            named[name].weight += (8.0 / 4) * b @ a
        x, text, mask = inputs()
        t = torch.tensor([0.5, 0.25])
        want = lora_dit(x, t, Conditioning(text, mask))
        assert (want - ours(x, t, Conditioning(text, mask))).abs().max() > 1e-2  # the LoRA changes the output
    export_lora(str(tmp_path / "ours.safetensors"), str(tmp_path / "diffusers.safetensors"), "diffusers")
    assert lora_main(["export", str(tmp_path / "ours.safetensors"), str(tmp_path / "comfy.safetensors")]) == 0
    assert all(k.startswith("diffusion_model.blocks.") for k in read(tmp_path / "comfy.safetensors"))
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers

    for file in ("diffusers", "comfy"):
        theirs = diffusers.WanTransformer3DModel.from_pretrained(paths["diffusers"]).eval()
        if file == "diffusers":
            theirs.load_lora_adapter(str(tmp_path), weight_name="diffusers.safetensors", prefix="transformer")
        else:  # diffusers' reader of ComfyUI / musubi-tuner files (WanLoraLoaderMixin.lora_state_dict)
            state = _convert_non_diffusers_wan_lora_to_diffusers(read(tmp_path / "comfy.safetensors"))
            theirs.load_lora_adapter(state, prefix="transformer")
        with torch.no_grad():
            got = theirs(x, 1000 * t, wan_text(text, mask), return_dict=False)[0]
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (file, (got - want).abs().max())
    original = read(tmp_path / "ours.safetensors")
    for file in ("diffusers", "comfy"):
        report = import_lora(str(tmp_path / f"{file}.safetensors"), str(tmp_path / f"back_{file}.safetensors"),
                             want_rank=4, want_target=",".join(TARGETS))
        assert (report["rank"], report["alpha"]) == (4, 8.0)
        back = read(tmp_path / f"back_{file}.safetensors")
        assert sorted(back) == sorted(original)
        assert [k for k in original if not torch.equal(back[k], original[k])] == [], file


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the key or the file
# ---------------------------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_key_or_file(wan, tmp_path):
    _, paths = wan
    other = tmp_path / "flux"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel"}))
    with pytest.raises(SoraError, match="FluxTransformer2DModel, not a Wan2.1 transformer"):
        load_wan(str(other))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    config = json.loads((paths["wan"] / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps(config | {"ffn_dim": 384}))
    (wrong / "diffusion_pytorch_model.safetensors").symlink_to(paths["wan"] / "diffusion_pytorch_model.safetensors")
    with pytest.raises(SoraError, match=r"ffn.0.weight has shape \(320, 256\), but config.json \(.*ffn_dim=384"):
        load_wan(str(wrong))
    missing = tmp_path / "missing"
    missing.mkdir()
    for f in paths["sharded"].iterdir():
        if "-00002-of-" not in f.name:
            (missing / f.name).symlink_to(f)
    with pytest.raises(SoraError, match="names diffusion_pytorch_model-00002-of-00002.safetensors, which is not in"):
        load_wan(str(missing))
    from sora.config.checks import resolve_init_from
    from tests.conftest import compose_config

    with pytest.raises(SoraError, match=r"holds a Wan model of dim=256, but dit.hidden_size=1536 \(a Wan preset of"):
        resolve_init_from(compose_config("train", ["dit=wan2_1_1_3b", f"dit.init_from={paths['wan']}"]))
    with pytest.raises(SoraError, match="in_dim=3, but the VAE's latent channels are 16"):
        load_wan(str(paths["diffusers"]), in_channels=16)
    ours, _ = load_wan(str(paths["diffusers"]))
    our_lora(ours, tmp_path / "r4.safetensors", targets=["attn.qkv", "mlp.0"])
    export_lora(str(tmp_path / "r4.safetensors"), str(tmp_path / "r4_comfy.safetensors"), "comfyui")
    with pytest.raises(SoraError, match=r"r4_comfy.safetensors: blocks.0.attn.qkv.lora_A.weight has rank 4; the "
                                        r"run's train.lora.rank is 8"):
        import_lora(str(tmp_path / "r4_comfy.safetensors"), str(tmp_path / "x.safetensors"), want_rank=8)
    with pytest.raises(SoraError, match=r"adapts blocks.0.mlp.0, which the run's train.lora.target \(attn.qkv\)"):
        import_lora(str(tmp_path / "r4_comfy.safetensors"), str(tmp_path / "x.safetensors"), want_target="attn.qkv")
    split = read(tmp_path / "r4_comfy.safetensors")
    split["diffusion_model.blocks.0.self_attn.k.lora_A.weight"] = split[
        "diffusion_model.blocks.0.self_attn.k.lora_A.weight"] + 1  # trained on k alone: cannot join exactly
    save_file(split, str(tmp_path / "split.safetensors"))
    with pytest.raises(SoraError, match="self_attn.q and diffusion_model.blocks.0.self_attn.k have different lora_A"):
        import_lora(str(tmp_path / "split.safetensors"), str(tmp_path / "x.safetensors"))


def test_captions_longer_than_text_len_fail_at_the_config_check():
    from sora.config import check_train_config
    from tests.conftest import compose_config

    with pytest.raises(SoraError, match="text.max_tokens=600 tokens a caption do not fit dit.text_len=512"):
        check_train_config(compose_config("train", ["dit=wan2_1_1_3b", "text.max_tokens=600"]))


def test_command_line_errors_are_one_line(wan, tmp_path):
    out = subprocess.run([sys.executable, "-m", "sora.models.wan", "check", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "is neither a folder nor a file" in out.stderr


def test_full_fine_tune_from_init_from_with_bf16_weights_and_fp32_masters(wan, shapes_dir, tmp_path):
    """Full fine-tuning from released weights as on a GPU: the blocks' linears in bf16 (train.param_dtype=bf16),
    AdamW on fp32 master copies, bf16 autocast; two steps, and the checkpoint's masters moved from the start."""
    from tests.conftest import shrunk_overrides, train_in_process

    _, paths = wan
    run = tmp_path / "run"
    proc = train_in_process(*shrunk_overrides(shapes_dir, run), f"dit.init_from={paths['diffusers']}",
                            "text.width=128", "objective.prediction=velocity", "train.max_steps=2",
                            "train.param_dtype=bf16", "train.precision=bf16-mixed", "train.final_samples=false",
                            "train.sample_every_n_steps=0", "data.eval_shards=null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    blocks = {k: v for k, v in ckpt["state_dict"].items() if ".blocks." in k and k.endswith(".weight")}
    assert any(v.dtype == torch.bfloat16 for v in blocks.values())  # the model's linears are bf16
    masters = [t for s in ckpt["optimizer_states"] for t in s["state"].values() if "exp_avg" in t]
    assert masters and all(t["exp_avg"].dtype == torch.float32 for t in masters)  # AdamW's state is fp32


def test_train_from_init_from_then_export_as_wan(wan, shapes_dir, tmp_path):
    """train.py with dit.init_from: the folder decides the architecture (whatever dit.* says), the run trains from
    its weights, and its checkpoint exports as a Wan2.1 folder that diffusers loads."""
    from sora.inference.export import main as export_main
    from tests.conftest import shrunk_overrides, train_in_process

    _, paths = wan
    run = tmp_path / "run"
    proc = train_in_process(*shrunk_overrides(shapes_dir, run), f"dit.init_from={paths['comfyui']}", "text.width=128",
                            "objective.prediction=velocity", "train.max_steps=1", "train.final_samples=false",
                            "train.sample_every_n_steps=0", "data.eval_shards=null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["sora_config"]["dit"]["mlp_width"] == 320 and ckpt["sora_config"]["dit"]["hidden_size"] == 256
    assert export_main([str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "out"), "--format", "diffusers",
                        "--raw"]) == 0
    trained = diffusers.WanTransformer3DModel.from_pretrained(tmp_path / "out")
    start = read(paths["diffusers"] / "diffusion_pytorch_model.safetensors")
    state = trained.state_dict()
    assert sorted(state) == sorted(start)
    assert any(not torch.equal(state[k], start[k]) for k in start)  # it trained
    assert max((state[k] - start[k]).abs().max().item() for k in start) < 1e-2  # one AdamW step from the start
