"""One exception type for mistakes the user can fix (bad config, path, checkpoint, prompt)."""

import argparse
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


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are a SoraError: one line, `error: ...`, exit 2 (argparse prints two lines)."""

    def error(self, message):
        usage = " ".join(self.format_usage().split())  # argparse wraps long usages over several lines
        raise SoraError(f"{message} ({usage}; --help lists the options)")
