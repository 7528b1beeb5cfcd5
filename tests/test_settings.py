"""A setting's range lives on its field (sora/settings.py): every number declares one, and each one is enforced
under the key's full name, so a renamed or new key cannot lose its check."""

import dataclasses
import re
import typing

import pytest

from sora.config import check_sample_config, check_train_config
from sora.config.checks import check_eval_config
from sora.config.schema import EvalConfig, SampleConfig, TrainConfig
from sora.errors import SoraError
from sora.settings import Range, Settings, check_settings, nested_settings, range_of, setting
from tests.conftest import compose_config

SCHEMAS = {"train": (TrainConfig, check_train_config, []),
           "sample": (SampleConfig, check_sample_config, ["ckpt=x.ckpt", "prompt=a", "out=x.mp4"]),
           "eval": (EvalConfig, check_eval_config, ["ckpt=x.ckpt", "out=x.json"])}


def leaves(schema, at=""):
    """(full key, field, type) of every leaf setting under a schema."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        sub = nested_settings(hints[f.name])
        if sub is not None:
            yield from leaves(sub, f"{at}{f.name}.")
        else:
            yield f"{at}{f.name}", f, hints[f.name]


def is_number(tp) -> bool:
    args = typing.get_args(tp)
    return tp in (int, float) or (args and set(args) - {type(None)} <= {int, float})


def bad_value(r: Range):
    """A value just outside the range, as a command-line string."""
    if r.choices is not None:
        return "no_such_name"
    for bound, step in ((r.ge, -1), (r.gt, 0), (r.le, 1), (r.lt, 0)):
        if bound is not None:
            return bound + step if isinstance(bound, int) or step else bound
    raise AssertionError(r)


def bounded(r: Range) -> bool:
    return r.choices is not None or any(b is not None for b in (r.ge, r.gt, r.le, r.lt))


def ranged_keys(name):
    schema = SCHEMAS[name][0]
    return [(name, key, range_of(f)) for key, f, _ in leaves(schema) if range_of(f) and bounded(range_of(f))]


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_number_declares_its_range(name):
    """A number with no range is a setting whose check can be forgotten: say unbounded=True if that is meant."""
    undeclared = [key for key, f, tp in leaves(SCHEMAS[name][0]) if is_number(tp) and range_of(f) is None]
    assert not undeclared, f"numbers without a range: {undeclared}"


@pytest.mark.parametrize("name, key, bounds", [c for n in SCHEMAS for c in ranged_keys(n)],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_each_range_is_enforced_under_its_full_key(name, key, bounds):
    schema, check, base = SCHEMAS[name]
    value = bad_value(bounds)
    shown = f"[{value}]" if bounds.each else value
    cfg = compose_config(name, base + [f"{key}={shown}"])
    with pytest.raises(SoraError, match=rf"^{re.escape(key)} must be "):
        check(cfg)


def test_a_renamed_field_keeps_its_check():
    """The range is the field's, not a table's: a dataclass made with another name for the field checks it."""

    @dataclasses.dataclass
    class Before(Settings):
        depth: int = setting(4, ge=1)

    renamed = dataclasses.make_dataclass("After", [("num_layers", int, dataclasses.fields(Before)[0])],
                                         bases=(Settings,))
    with pytest.raises(SoraError, match="num_layers must be >= 1, got 0"):
        renamed(num_layers=0)
    with pytest.raises(SoraError, match="model.num_layers must be >= 1, got 0"):
        check_settings(type("Node", (), {"num_layers": 0})(), renamed, "model.")  # a config node read by attribute


def test_setting_without_a_range_is_refused():
    with pytest.raises(TypeError, match="needs a range"):
        setting(3)


def test_strings_become_enum_members_and_bad_names_fail_in_one_line():
    from sora.models.vae import VAEArgs, VAEKind

    assert VAEArgs(kind="causal3d", latent_channels=4, temporal_compression=4, spatial_compression=8).kind is \
        VAEKind.causal3d
    with pytest.raises(SoraError, match="kind must be one of pixel, causal3d, diffusers, got 'gan'"):
        VAEArgs(kind="gan")


def test_schema_defaults_are_the_quick_start():
    """`python train.py` with no override is what the dataclasses say: train.yaml only picks the groups."""
    from omegaconf import OmegaConf

    cfg = compose_config("train")
    defaults = OmegaConf.structured(TrainConfig)
    for section in ("vae", "text", "objective", "conditioning", "sampler", "optim", "train", "val", "provenance"):
        assert cfg[section] == defaults[section], section
