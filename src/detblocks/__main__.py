"""Command line of detblocks: ``detblocks demo`` (also ``python -m detblocks demo``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """\
usage: detblocks <command> [options]

commands:
  demo    train, evaluate and export an SSD detector built from detblocks
          (synthetic shapes by default; `detblocks demo --help` for options)
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``detblocks`` command; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        from detblocks.demo.cli import main as demo_main

        return demo_main(rest)
    print(f"detblocks: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
