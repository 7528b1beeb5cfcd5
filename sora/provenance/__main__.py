"""python -m sora.provenance verify FILE [FILE ...] [--json]"""

import sys

from sora.provenance.verify import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "verify":
        what = f"unknown command {args[0]!r}" if args else "no command"
        print(f"error: {what} (usage: python -m sora.provenance verify FILE [FILE ...] [--json])", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args[1:]))
