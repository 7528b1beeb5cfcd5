"""Evaluate a checkpoint: `python -m sora.eval ckpt=PATH out=FILE.json [metrics=[...]] [data.eval_shards=...]`.

Hydra-style overrides as the entry points take them; the keys are sora/config/schema.py:EvalConfig, and
sora/eval/evaluate.py says what each metric is.
"""

import json
import logging
from pathlib import Path

import hydra

from sora.config import register_schemas
from sora.config.checks import check_eval_config
from sora.config.overrides import one_line_override_errors
from sora.devices import resolve_device
from sora.errors import SoraError, exit_on_user_error

log = logging.getLogger("sora.eval")
register_schemas()


@one_line_override_errors(Path(__file__).parents[2] / "configs", "eval")
@hydra.main(version_base=None, config_path="../../configs", config_name="eval")
@exit_on_user_error
def main(cfg) -> None:
    from sora.data.video_io import check_writable
    from sora.eval.evaluate import evaluate
    from sora.inference.bundle import ModelBundle
    from sora.inference.checkpoint import load_checkpoint

    check_eval_config(cfg)
    if not str(cfg.ckpt).strip():
        raise SoraError("ckpt='' is empty: give a training checkpoint (.ckpt) or an export (.safetensors)")
    check_writable(cfg.out, "out")  # before the evaluation, not after it
    device = resolve_device(cfg.device)
    bundle = ModelBundle.from_checkpoint(cfg.ckpt, ema=cfg.ema).to(device)
    step = load_checkpoint(cfg.ckpt).get("global_step") if str(cfg.ckpt).endswith(".ckpt") else None
    result = evaluate(bundle, cfg, device, step)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
