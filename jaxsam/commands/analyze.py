"""``jaxsam analyze RUN...``: memorization and mechanism statistics of one or more runs.

The work is :func:`jaxsam.pipeline.analyze.analyze_runs`; this module parses and prints.
Writes ``analysis.json`` (run name -> the :func:`jaxsam.analysis.analyze_run` dict) and PNG plots
under ``plots/``: ``memorization_hist.png`` (runs overlaid, e.g. SAM vs SGD),
``out_variance.png``, ``subgroups.png`` and, when the runs hold test logits,
``entropy_buckets.png``. Everything goes to ``--out DIR`` when given, else into the first run
directory. Needs only the run directories (masks, logits, labels, optional test logits).
Per-subgroup attack TPR is reported when the loaded run carries ``[M, N]`` attack scores
(a ``.scores`` array, or a dict of them where ``lira_online`` is preferred); else it is null.

Subgroups (typical / atypical) are defined once, from the memorization averaged over all runs
that share the same pool, so that SAM and SGD are compared on the same examples.

Failed (excluded) models, listed in a run's ``run.json`` ``failed_models``, are dropped before
anything is computed, exactly as ``jaxsam score`` drops them: they are in no statistic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxsam import store
from jaxsam.cli_options import add_no_verify_option, command

_GROUPS_HELP = """\
subgroups: the pool examples with a defined memorization score are ranked by it (the
memorization averaged over the runs when they share a pool). typical = the lowest
--typical-quantile fraction of them (default 0.5: the bottom half), atypical = the highest
1 - --atypical-quantile (default 0.9: the top 10%). Memorization is often tied (with 16 models
it is exactly 0 up to its 0.9 quantile): --ties rank (default) breaks ties by a random order
drawn from --tie-seed, so each group has exactly its requested size; --ties value keeps ties
together and refuses a split whose groups are more than 10% off their requested sizes.
analysis.json's subgroup_rule gives each group's definition, requested and actual size, and
how many examples share its boundary score; the printed table gives the sizes.

subgroup attack TPR (runs scored by jaxsam score): tpr_at_fpr_within sets the threshold
inside each subgroup on its own non-members, so the FPR named is the subgroup's (plotted in
plots/subgroups.png); tpr_at_fpr uses the attack's pooled threshold, and fpr_realised is the
FPR measured inside the subgroup at it (plotted next to it)."""


HELP = "memorization, OUT-variance and subgroup analyses of run directories"


def add_parser(subparsers) -> None:
    """Adds the ``analyze`` sub-command to an argparse ``subparsers`` object."""
    p = command(
        subparsers,
        "analyze",
        HELP,
        __doc__.split("\n\n")[0],
        epilog=_GROUPS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        run=run,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (e.g. sgd/ sam/)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where analysis.json and plots/ go (default: the first run directory)",
    )
    p.add_argument(
        "--typical-quantile",
        type=float,
        default=0.5,
        help="typical = this fraction of the examples, lowest memorization first (default 0.5)",
    )
    p.add_argument(
        "--atypical-quantile",
        type=float,
        default=0.9,
        help="atypical = the examples ranked above this quantile of memorization (default "
        "0.9: the top 10%%)",
    )
    p.add_argument(
        "--ties",
        choices=("rank", "value"),
        default="rank",
        help="tied memorization at a group's edge: rank = seeded tie-break, exact sizes; "
        "value = keep ties together, refuse groups more than 10%% off (default rank)",
    )
    p.add_argument(
        "--tie-seed", type=int, default=0, help="seed of the tie-break order (default 0)"
    )
    p.add_argument(
        "--min-influence",
        type=float,
        default=0.0,
        help="entropy ignores influences <= this, in [0, 1) (default 0)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier analysis in --out (never files analyze did not write)",
    )
    add_no_verify_option(p)


def _cell(v) -> str:
    if v is None:
        return "-"
    return v if isinstance(v, str) else f"{v:.4f}"


def _size(g: dict) -> str:
    return f"{g['n']} (asked {g.get('requested_n', g['n'])})"


def _tpr_rows(result: dict, names: list[str]) -> list:
    """Rows of the subgroup TPRs at the first FPR, each way (when the runs have scores)."""
    subs = [result[n]["subgroups"] for n in names]
    first = next(
        (s["all"].get("tpr_at_fpr_within") for s in subs if s["all"].get("tpr_at_fpr_within")), None
    )
    if not first:
        return []
    key = next(iter(first))
    pct = f"{100 * float(key):g}%"

    def within(g):
        def get(s):
            sub = s["subgroups"][g]
            t = (sub.get("tpr_at_fpr_within") or {}).get(key)
            ok = (sub.get("within_supported") or {}).get(key, True)
            return t if t is None or ok else f"{t:.4f} *"

        return get

    def pooled(g):
        def get(s):
            sub = s["subgroups"][g]
            t = (sub.get("tpr_at_fpr") or {}).get(key)
            f = (sub.get("fpr_realised") or {}).get(key)
            if t is None or f is None:
                return t
            return f"{t:.4f} @{100 * f:.2g}%"

        return get

    rows = []
    for g in ("typical", "atypical"):
        rows.append((f"TPR@{pct} {g}, own thr.", within(g)))
    for g in ("typical", "atypical"):
        rows.append((f"TPR {g}, pooled {pct} thr.", pooled(g)))
    return rows


def _print_table(result: dict) -> None:
    names = [k for k in result if not k.startswith("_")]
    rows = [
        ("examples (typical)", lambda s: _size(s["subgroups"]["typical"])),
        ("examples (atypical)", lambda s: _size(s["subgroups"]["atypical"])),
        ("mean memorization", lambda s: s["memorization"]["mean"]),
        ("median OUT var. (recipe scale)", lambda s: s["out_variance"]["median"]),
        ("OUT var. / IN-OUT gap² (free)", lambda s: s.get("out_variance_relative_to_gap")),
        ("OUT acc (typical)", lambda s: s["subgroups"]["typical"]["accuracy"]["out"]),
        ("OUT acc (atypical)", lambda s: s["subgroups"]["atypical"]["accuracy"]["out"]),
        ("held-out acc", lambda s: s["heldout_accuracy"]),
        *_tpr_rows(result, names),
    ]
    width = max(18, *(len(n) + 2 for n in names))
    print(f"{'':30s}" + "".join(f"{n:>{width}s}" for n in names))
    for label, get in rows:
        vals = [get(result[n]) for n in names]
        print(f"{label:30s}" + "".join(f"{_cell(v):>{width}s}" for v in vals))
    if any(label.startswith("TPR ") for label, _ in rows):
        print(
            "own thr.: threshold set inside the subgroup (its FPR is the one named; * fewer "
            "than one false positive allowed among the subgroup's non-members: the TPR at zero "
            "false positives); pooled thr.: the attack's pooled threshold, @ the FPR measured "
            "inside the subgroup"
        )


def run(args: argparse.Namespace) -> int:
    """Entry point: loads ``args.runs`` with ``jaxsam.store.load_run`` and analyses them."""
    out = Path(args.out) if args.out else Path(args.runs[0])
    if args.out:  # before the lock file goes in (a run directory is checked when it loads)
        store.check_analysis_out(out, overwrite=args.overwrite)
    with store.run_lock(out, "analyze", create=bool(args.out)):  # one writer of out at a time
        runs = [store.load_run(Path(p), verify=not args.no_verify) for p in args.runs]
        return _analyze(runs, out, args)


def _analyze(runs: list, out: Path, args: argparse.Namespace) -> int:
    from jaxsam.pipeline.analyze import analyze_runs

    options = ("typical_quantile", "atypical_quantile", "ties", "tie_seed", "min_influence")
    options += ("overwrite",)
    result = analyze_runs(runs, out, **{name: getattr(args, name) for name in options})
    _print_table(result)
    print(f"wrote {out / 'analysis.json'} and {', '.join(result['_plots'])}")
    return 0
