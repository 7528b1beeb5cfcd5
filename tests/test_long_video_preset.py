"""configs/experiment/long_video.yaml: the long-video preset states only what it changes, keeps its own copy of the
built-in dataset, and a shrunk run of it trains on bouncing clips and gives a checkpoint every long.* switch
accepts."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sora.config.schema import flat_keys
from tests.conftest import compose_config, shrunk_overrides, train_in_process

PRESET = "+experiment=long_video"


def test_the_preset_changes_only_the_long_video_settings():
    quick = flat_keys(OmegaConf.to_container(compose_config("train"), resolve=True))
    long = flat_keys(OmegaConf.to_container(compose_config("train", [PRESET]), resolve=True))
    changed = {k for k in quick.keys() | long.keys() if quick.get(k) != long.get(k)}
    assert changed == {
        "data.shards", "data.moving_shapes.root", "data.moving_shapes.bouncing_share",
        "data.moving_shapes.occluder_share", "text.vocab", "objective.frame_timesteps.synchronous",
        "objective.frame_timesteps.independent", "objective.frame_timesteps.non_decreasing",
        "objective.history_noise", "train.max_steps", "train.final_drift"}
    # its own copy: running it never rewrites the quick start's dataset (the writer rebuilds on changed settings)
    assert Path(long["data.moving_shapes.root"]) != Path(quick["data.moving_shapes.root"])
    assert Path(long["data.shards"]).parent == Path(long["data.moving_shapes.root"])
    assert long["text.vocab"] == quick["text.vocab"][:2] + ["bouncing"] + quick["text.vocab"][2:]


@pytest.fixture(scope="module")
def bouncing_dir(tmp_path_factory) -> Path:
    """The fixture dataset with the preset's bouncing and occluder shares."""
    from sora.config import MovingShapesArgs
    from sora.data.moving_shapes import write_moving_shapes

    root = tmp_path_factory.mktemp("data") / "moving_shapes_long"
    write_moving_shapes(MovingShapesArgs(root=str(root), clips_per_combo=2, clips_per_shard=32, num_frames=16,
                                         size_px=32, bouncing_share=0.5, occluder_share=0.25))
    return root


def test_a_shrunk_run_of_the_preset_scores_drift_and_takes_every_long_switch(bouncing_dir, tmp_path):
    from dataclasses import replace

    from sora.config.schema import LongVideoConfig
    from sora.inference.bundle import ModelBundle
    from sora.inference.pipeline import SampleSettings, check_long

    run = tmp_path / "run"
    done = train_in_process(PRESET, *shrunk_overrides(bouncing_dir, run), "train.max_steps=2", "val.drift_windows=2")
    assert done.returncode == 0, done.stderr[-3000:]
    drift = json.loads((run / "results.json").read_text())["drift"]
    assert set(drift["by_verb"]) == {"moving", "bouncing"} and drift["by_verb"]["bouncing"]["n"] == 8
    bundle = ModelBundle.from_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    settings = replace(SampleSettings.of(bundle.cfg), sampler="euler")
    for switch in ({"latent_context": True}, {"context_noise": 0.05}, {"history_guidance": 1.5}, {"ar_step": 1}):
        check_long(bundle, replace(settings, long=LongVideoConfig(**switch)))  # raises for an untrained switch


@pytest.mark.parametrize("override, named", [("train.final_samples=false", "train.final_samples=true"),
                                             ("conditioning=text", "set conditioning=mixed")])
def test_final_drift_without_what_it_needs_is_refused_at_start(override, named):
    from sora.config.checks import check_train_config
    from sora.errors import SoraError

    with pytest.raises(SoraError, match=named):
        check_train_config(compose_config("train", [PRESET, override]))
