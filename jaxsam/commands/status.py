"""``jaxsam status RUN``: what is done in a run directory (waves, checkpoints, complete).

Exit status 0; 1 when a complete run is DAMAGED (a file of digests.json missing or of another
size, config.json or run.json unreadable); 2 when RUN holds no run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxsam.cli_options import command
from jaxsam.store import models_words

HELP = "show what is done in a run directory: waves done / missing, checkpoints"


def add_parser(subparsers) -> None:
    p = command(subparsers, "status", HELP, __doc__, run=run)
    p.add_argument("run_dir", type=Path, metavar="RUN", help="the run directory to inspect")
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def run(args: argparse.Namespace) -> int:
    from jaxsam.pipeline.waves import status

    st = status(args.run_dir)
    damage = _damage(args.run_dir) if st["complete"] else []
    if args.json:
        print(json.dumps({**st, "damaged": damage}, indent=2))
        return 1 if damage else 0
    if damage:  # a complete run whose files are gone or changed: say what, and the fix
        print(f"{st['path']}: DAMAGED; {damage[0]}")
        for problem in damage[1:]:
            print(f"  also: {problem}")
        print(f"  fix: {_fix(Path(st['path']))}")
        return 1
    state = "COMPLETE" if st["complete"] else "not complete"
    print(
        f"{st['path']}: {state}; {st['models_done']}/{st['models']} models have logits "
        f"({st['examples']} pool examples)"
    )
    if st["waves_done"]:
        print(f"  waves done ({len(st['waves_done'])}): {', '.join(st['waves_done'])}")
    if st["missing"]:
        print(f"  missing models: {', '.join(st['missing'])}")
    for w in st["waves_in_progress"]:
        steps = w["checkpoint_steps"]
        print(f"  wave {w['wave']} in progress, checkpoints at steps {steps or 'none yet'}")
    if st["checkpoint_steps"]:
        print(f"  run checkpoints at steps {st['checkpoint_steps']}")
    if st["failed_models"]:
        print(f"  failed (excluded) models: {st['failed_models']}")
    diverged = st.get("diverged")
    if diverged is not None and not st["complete"]:
        print(f"  stopped: {models_words(diverged['models'])} diverged (a resume diverges again)")
    if not st["complete"]:
        hints = _next_steps(st)
        print(f"  next: {hints[0]}")
        for hint in hints[1:]:
            print(f"        {hint}")
    return 0


def _next_steps(st: dict) -> list[str]:
    """The commands that finish the unfinished run of status ``st``, one a line."""
    path, diverged = st["path"], st.get("diverged")
    if diverged is not None:  # a resume would replay the same steps and diverge again
        retrain = f"jaxsam train --out {path} --overwrite --config {path}/config.json"
        lr = diverged["learning_rate"]
        below = "" if lr is None else f" (LR below {lr:g})"
        hints = [f"{retrain} --set optim.learning_rate=LR{below}"]
        if diverged["on_divergence"] == "stop":
            hints.append(f"or: {retrain} --set train.on_divergence=exclude")
        return hints
    if st["layout"] != "waves":
        return [f"jaxsam train --resume {path}"]
    if st["missing"]:  # one command per missing range (waves may run in parallel)
        hints = [f"jaxsam wave train {path} --models {span}" for span in st["missing"]]
        return [*hints, f"then: jaxsam wave finalize {path}"]
    return [f"jaxsam wave finalize {path}"]


def _fix(path: Path) -> str:
    """How to mend a DAMAGED run: restore it, or retrain it (``--overwrite`` replaces only a
    directory whose config.json still reads as a jaxsam config; otherwise the user removes it)."""
    from jaxsam.errors import JaxsamError
    from jaxsam.store import read_config

    try:
        read_config(path)
    except JaxsamError:
        return (
            f"restore {path} from a copy, or remove it and retrain "
            f"(jaxsam train --config CONFIG --out {path}): with its config.json unreadable, "
            "--overwrite does not replace it"
        )
    return (
        f"restore {path} from a copy, or retrain it "
        f"(jaxsam train --config {path}/config.json --out {path} --overwrite)"
    )


def _damage(path: Path) -> list[str]:
    """What is wrong with a complete run, cheaply (:func:`jaxsam.store.run_problems`)."""
    from jaxsam.store import run_problems

    return run_problems(path)
