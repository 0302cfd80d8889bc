"""``jaxsam audit RUN``: what the attacks prove about a defense, as lower bounds on epsilon.

The work is :func:`jaxsam.audit.report.audit_run`; this module parses and prints. The run must
have canaries (``audit.canaries > 0`` when it was trained; docs/audit.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxsam.cli_options import add_no_verify_option, command

ATTACKS = ("lira", "rmia", "loss")
THRESHOLDS = ("split", "multisplit", "bonferroni")


HELP = "lower bounds on epsilon from a run's canaries (DP auditing)"
DESCRIPTION = """\
Score RUN's canaries on every target model with a reference-only attack and turn the guesses
into lower bounds on epsilon: the one-run bound (pooled over targets), the multi-run Clopper-
Pearson bound per canary over the targets, and the one-run f-DP bound, each with its ceiling.
Writes RUN/audit.json and the audit section of RUN/report.md. RUN must be trained with
audit.canaries > 0."""


def add_parser(subparsers) -> None:
    p = command(subparsers, "audit", HELP, DESCRIPTION, run=run)
    p.add_argument("run", type=Path, metavar="RUN", help="a finished run with canaries")
    p.add_argument(
        "--attack",
        default="lira",
        choices=ATTACKS,
        help="reference-only attack: offline LiRA, offline RMIA, or the loss",
    )
    p.add_argument(
        "--significance",
        type=float,
        default=0.05,
        help="each bound holds with probability at least 1 - significance, in (0, 0.5)",
    )
    p.add_argument(
        "--threshold",
        default="split",
        choices=THRESHOLDS,
        help="how the score threshold is chosen and paid for (docs/audit.md)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split strategies' splits")
    add_no_verify_option(p)


def run(args: argparse.Namespace) -> int:
    from jaxsam.audit.report import audit_run, summary_lines, write_audit
    from jaxsam.store import load_run, run_lock

    with run_lock(args.run, "audit", create=False):
        r = load_run(args.run, verify=not args.no_verify)
        audit = audit_run(
            r,
            attack=args.attack,
            significance=args.significance,
            threshold=args.threshold,
            seed=args.seed,
        )
        out = write_audit(r, audit)
    for line in summary_lines(audit):
        print(line)
    print(f"wrote {out} and the audit section of {r.path / 'report.md'}")
    return 0
