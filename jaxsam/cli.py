"""``jaxsam`` command line: demo / train / score / compare / analyze / bench / plan / status /
import-logits.

Each subcommand lives in ``jaxsam.commands.<name>`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Bad input (a :class:`jaxsam.errors.JaxsamError`) is printed on one line,
without a traceback, and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxsam import __version__
from jaxsam.errors import Interrupted, JaxsamError

COMMANDS = (
    "demo",
    "train",
    "score",
    "compare",
    "analyze",
    "bench",
    "plan",
    "status",
    "prepare",
    "wave",
    "import_logits",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxsam",
        description="Membership-inference audits of training recipes (SGD vs SAM) with many "
        "shadow models trained at once.",
    )
    parser.add_argument("--version", action="version", version=f"jaxsam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"jaxsam.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except JaxsamError as e:
        print(f"jaxsam {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"jaxsam {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"jaxsam {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
