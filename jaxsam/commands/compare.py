"""``jaxsam compare RUN...``: scored runs side by side in the paper's format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxsam.cli_options import add_no_verify_option, command

HELP = "print scored runs side by side (OUT and held-out accuracy, AUC, TPR at low FPR, ...)"
DESCRIPTION = """\
Print the reports of RUN... side by side. Runs not yet scored are scored first (from their saved
logits)."""


def add_parser(subparsers) -> None:
    p = command(subparsers, "compare", HELP, DESCRIPTION, run=run)
    p.add_argument(
        "runs", nargs="+", type=Path, metavar="RUN", help="scored run directories to compare"
    )
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="also write a log-log ROC comparison (LiRA online) to FILE (.png, .pdf or .svg)",
    )
    p.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write the comparison as one self-contained HTML page (tables, ROC embedded) "
        "to FILE (.html or .htm)",
    )
    add_no_verify_option(p)


def run(args: argparse.Namespace) -> int:
    from jaxsam import report
    from jaxsam.pipeline import compare

    if args.plot is not None:  # before any run is scored: a bad path writes nothing
        compare.check_output_file(args.plot, "plot", compare.PLOT_SUFFIXES)
    if args.html is not None:
        compare.check_output_file(args.html, "html", compare.HTML_SUFFIXES)
    named = compare.load_reports(args.runs, verify=not args.no_verify)
    mismatch = compare.pool_mismatch(named)
    if mismatch:
        print(f"warning: {mismatch}", file=sys.stderr)
    print(report.compare_table([(n, rep) for n, rep, _ in named], markdown=args.markdown))
    if args.plot is not None:
        print(f"wrote {compare.plot_comparison(named, args.plot)}")
    if args.html is not None:
        print(f"wrote {compare.write_compare_html(named, args.html)}")
    return 0
