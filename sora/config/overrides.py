"""Command-line overrides that Hydra cannot apply (a wrong type, an unknown key, broken syntax) as one line.

Hydra reports them itself before an entry point's function runs: several lines, a hint about HYDRA_FULL_ERROR,
exit status 1. `one_line_override_errors` composes the same config from the same overrides first and reports a
failure as every other user error is reported: `error: ...` on one line, exit status 2.

    @one_line_override_errors(CONFIGS, "sample")
    @hydra.main(version_base=None, config_path="configs", config_name="sample")
    @exit_on_user_error
    def main(cfg): ...
"""

import functools
import sys
from pathlib import Path


def override_problem(config_dir: Path, config_name: str, overrides: list[str]) -> str | None:
    """None when Hydra composes `config_name` with `overrides`, else its complaint on one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
            compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        said = str(e).splitlines()[0].rstrip(".") if str(e).strip() else type(e).__name__
        cause = str(e.__cause__).splitlines()[0] if e.__cause__ is not None and str(e.__cause__).strip() else None
        return f"{said}: {cause}" if cause else said
    return None


def one_line_override_errors(config_dir: Path, config_name: str):
    """Wrap a hydra.main entry point: when it is run from the command line (called without arguments) and its
    plain `key=value` overrides do not compose, print `error: ...` and exit 2 before Hydra runs. Hydra's own
    flags (--multirun, --cfg, --help, ...) leave the check to Hydra."""

    def wrap(main):
        @functools.wraps(main)
        def run(*args, **kwargs):
            overrides = sys.argv[1:]
            if not args and not kwargs and not any(a.startswith("-") for a in overrides):
                problem = override_problem(config_dir, config_name, overrides)
                if problem is not None:
                    print(f"error: {problem}", file=sys.stderr, flush=True)
                    sys.exit(2)
            return main(*args, **kwargs)

        return run

    return wrap
