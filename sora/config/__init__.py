"""Typed configs: the schema of every key (schema.py) and every check of a user's values (checks.py).

Hydra merges the YAML under `configs/` into the schemas registered here (`train_schema`, `sample_schema`);
OmegaConf then rejects a value that does not convert to its field's type, and `checks` the rest.
"""

from hydra.core.config_store import ConfigStore

from sora.config.checks import check_against_vae, check_sample_config, check_train_config
from sora.config.schema import EvalConfig, SampleConfig, TrainConfig, to_plain, typed
from sora.data.data_args import DataArgs
from sora.data.moving_shapes import MovingShapesArgs

__all__ = ["DataArgs", "EvalConfig", "MovingShapesArgs", "SampleConfig", "TrainConfig", "check_against_vae",
           "check_sample_config", "check_train_config", "register_schemas", "to_plain", "typed"]


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="sample_schema", node=SampleConfig)
    cs.store(name="eval_schema", node=EvalConfig)
