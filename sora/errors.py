"""One exception type for mistakes the user can fix (bad config, path, checkpoint, prompt)."""

import functools
import sys


class SoraError(Exception):
    """A user-facing error: entry points print its message on one line, with no stack trace."""


def exit_on_user_error(main):
    """Wrap an entry point so a SoraError prints `error: ...` and exits with status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SoraError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper
