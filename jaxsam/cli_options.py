"""Command-line options that several ``jaxsam`` commands share (one definition each)."""

from __future__ import annotations

import argparse


def add_no_verify_option(parser: argparse.ArgumentParser) -> None:
    """``--no-verify``: read run directories whose files differ from their recorded digests.

    Commands pass ``verify=not args.no_verify`` to :func:`jaxsam.store.load_run`.
    """
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="read runs whose files differ from the digests recorded when they finished",
    )
