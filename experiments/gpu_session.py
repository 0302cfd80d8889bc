"""One accelerator slot's measurements, in two calls that each fit the device tool's limits.

    python -m experiments.gpu_session --dry-run            # on any machine: the plan, no jax
    python -m experiments.gpu_session --call 1 OUTDIR [--idx DIR]
    python -m experiments.gpu_session --call 2 OUTDIR [--idx DIR]

``experiments/gpu_session.sh`` is the same with the shell's defaults. A lent slot is 15 minutes
of device time for everything (the machine's start counts), and one command may run at most
10 minutes; each call here is capped at :data:`CALL_LIMIT_S` (8 minutes) of wall time, step by
step, so that two calls and a start fit the slot.

- **Call 1** takes what no slot has measured yet: ``bench suite`` sections ``train:resnet18``
  and ``train:wrn16_4`` (bf16 MFU at M = 64), ``epoch`` (256 resnet9 models on a 25k pool
  through the real trainer, measured) and ``plan`` (``jaxsam plan`` against that epoch).
- **Call 2** takes the Fashion-MNIST ResNet-9 study's SAM arm (seed 0; its SGD arm was measured
  in an earlier slot) and then the rest of the suite: ``train:cnn``, ``train:resnet9``,
  ``sam``, ``score`` and ``chunked``.

Each step runs under its own time cap (a step cut short loses only itself), and everything a
step finishes is written to OUTDIR at once: the suite rewrites ``OUTDIR/callN/bench.json`` and
``bench.md`` after every section, and the study's table, results and per-arm metrics are copied
out when it ends. ``OUTDIR/callN/steps.json`` records each step's exit status and seconds, and
``OUTDIR/callN/log.txt`` everything printed. XLA calibration is capped per call
(``JAXSAM_CALIBRATION_BUDGET_S``) so that the ``auto`` plan's measurement cannot eat a section.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CALL_LIMIT_S = 480  # one call's wall-time cap (8 minutes), inside the tool's 10-minute limit
MARGIN_S = 20  # kept free in every call for start-up, copies and the summary
STUDY_SPEC = "experiments/configs/fashion_mnist_resnet_sam_vs_sgd.json"
CALIBRATION_BUDGET_S = 40


@dataclasses.dataclass(frozen=True)
class Step:
    """One capped step of a call: ``argv`` runs with at most ``cap_s`` seconds of wall time."""

    name: str
    cap_s: int
    argv: tuple[str, ...]
    what: str


def _suite(out: str, sections: str, cap_s: int, section_cap_s: int) -> tuple[str, ...]:
    return (
        sys.executable, "-m", "jaxsam", "bench", "suite", "--out", out,
        "--sections", sections, "--budget-s", str(cap_s - 5),
        "--section-timeout-s", str(section_cap_s),
    )  # fmt: skip


def calls(out: Path, idx: str, work: Path) -> dict[int, list[Step]]:
    """The two calls' steps, in order, with their caps (seconds)."""
    c1, c2 = str(out / "call1"), str(out / "call2")
    study = (
        sys.executable, "-m", "experiments.run", STUDY_SPEC, "--out", str(work / "study"),
        "--no-progress", "--seeds", "0", "--arms", "SAM", "--no-baseline",
        "--set", f"data.dataset=idx:{idx}",
    )  # fmt: skip
    return {
        1: [
            Step(
                "suite: never measured",
                440,
                _suite(c1, "train:resnet18,train:wrn16_4,epoch,plan", 440, 150),
                "resnet18 and wrn16_4 bf16 MFU at M=64 (<=150 s each), the measured "
                "256-model resnet9 epoch (<=150 s), plan vs measured",
            ),
        ],
        2: [
            Step(
                "study: SAM arm",
                270,
                study,
                "Fashion-MNIST ResNet-9 study, seed 0, SAM arm alone (32 models, 12 epochs)",
            ),
            Step(
                "suite: the rest",
                170,
                _suite(c2, "train:cnn,train:resnet9,sam,score,chunked", 170, 60),
                "cnn and resnet9 train rows, bench sam, bench score, chunked memory "
                "(<=60 s each, 165 s in all)",
            ),
        ],
    }


def dry_run(out: Path, idx: str) -> int:
    """Prints each call's steps with their caps; fails if a call exceeds its limit."""
    ok = True
    for n, steps in calls(out, idx, Path("$WORK")).items():
        total = sum(s.cap_s for s in steps) + MARGIN_S
        fits = total <= CALL_LIMIT_S
        ok &= fits
        print(f"call {n}: {total} s of {CALL_LIMIT_S} s ({'fits' if fits else 'OVER BUDGET'})")
        for s in steps:
            print(f"  {s.cap_s:4d} s  {s.name}: {s.what}")
            argv = ["python3" if a == sys.executable else a for a in s.argv]
            print(f"         {' '.join(argv)}")
        print(f"  {MARGIN_S:4d} s  margin: start-up, copies, summary")
    print(f"device tool: run each call with timeout_s >= {CALL_LIMIT_S + 30}")
    return 0 if ok else 1


def _copy_study(work: Path, dest: Path) -> None:
    study = work / "study"
    for src, name in (
        (study / "table.md", "study_table.md"),
        (study / "results.json", "study_results.json"),
    ):
        if src.exists():
            shutil.copy(src, dest / name)
    for metrics in sorted(study.glob("seed*/*/metrics.json")):
        shutil.copy(metrics, dest / f"study_metrics_{metrics.parent.name}.json")
    for report in sorted(study.glob("seed*/*/report.json")):
        shutil.copy(report, dest / f"study_report_{report.parent.name}.json")


def run_call(n: int, out: Path, idx: str, runner=subprocess.run) -> int:
    """Runs call ``n``'s steps in order, each under its cap; returns 0 if every step finished."""
    dest = out / f"call{n}"
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_session_"))
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "JAXSAM_CACHE_DIR": str(work / "cache"),
        "JAXSAM_CALIBRATION_BUDGET_S": str(CALIBRATION_BUDGET_S),
    }
    env.setdefault("PYTHONPATH", os.getcwd())
    t0 = time.monotonic()
    record = []
    with open(dest / "log.txt", "a") as log:
        for step in calls(out, idx, work)[n]:
            left = CALL_LIMIT_S - MARGIN_S - (time.monotonic() - t0)
            cap = min(step.cap_s, left)
            s0 = time.monotonic()
            if cap < 5:
                status = "skipped"
            else:
                log.write(f"\n== {step.name} (cap {cap:.0f} s)\n")
                log.flush()
                try:
                    proc = runner(
                        step.argv, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=cap
                    )
                    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
                except subprocess.TimeoutExpired:
                    status = "timeout"
            record.append(
                {"step": step.name, "status": status, "seconds": round(time.monotonic() - s0, 1)}
            )
            if step.name.startswith("study"):
                _copy_study(work, dest)
            (dest / "steps.json").write_text(json.dumps(record, indent=1))
            print(f"call {n}: {step.name}: {status} after {record[-1]['seconds']} s", flush=True)
    print(f"call {n}: {time.monotonic() - t0:.0f} s; results in {dest}", flush=True)
    return 0 if all(r["status"] == "ok" for r in record) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.gpu_session", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "out", nargs="?", type=Path, default=Path("gpu_out"), help="results folder (e.g. $OUT)"
    )
    p.add_argument("--call", type=int, choices=(1, 2), help="which call to run")
    p.add_argument("--dry-run", action="store_true", help="print both calls' steps and budgets")
    p.add_argument("--idx", default=".devdata/fashion-mnist", help="Fashion-MNIST IDX folder")
    args = p.parse_args(argv)
    if args.dry_run:
        return dry_run(args.out, args.idx)
    if args.call is None:
        p.error("name --call 1 or --call 2 (or --dry-run)")
    return run_call(args.call, args.out, args.idx)


if __name__ == "__main__":
    sys.exit(main())
