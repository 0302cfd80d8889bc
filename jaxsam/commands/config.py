"""``jaxsam config [--config FILE] [--set KEY=VALUE ...]``: the resolved config as JSON.

Prints every key with its value (defaults filled in, overrides applied, everything checked as
``jaxsam train`` would), so a first config starts from the printed one. ``--keys`` prints the
reference of every key with its default and meaning instead (docs/config.md).
"""

from __future__ import annotations

import argparse
import json

from jaxsam import config as config_lib
from jaxsam.cli_options import add_config_options, command, load_config

HELP = "print the resolved config as JSON (every key with its value), or the key reference"
DESCRIPTION = """\
Print the config that `jaxsam train --config FILE --set ...` would use, as JSON with every key:
the defaults, FILE's values and the --set overrides, checked. Save it, edit it and pass it back
with --config."""


def add_parser(subparsers) -> None:
    p = command(subparsers, "config", HELP, DESCRIPTION, run=run)
    add_config_options(p, "JSON config file to start from (default: none)")
    p.add_argument(
        "--keys",
        action="store_true",
        help="print every key with its default and meaning (Markdown) instead",
    )


def run(args: argparse.Namespace) -> int:
    if args.keys:
        from jaxsam.config_keys import keys_markdown

        print(keys_markdown(), end="")
        return 0
    cfg = load_config(args.config, args.set)
    print(json.dumps(config_lib.to_dict(cfg), indent=2))
    return 0
