"""``jaxsam bench suite``: every benchmark behind the README's figures, in one command.

    jaxsam bench suite --out DIR [--quick] [--budget-s S] [--sections train,epoch,...]

Sections, in this order (each runs in its own subprocess, so that a crash or a time-out loses
only that section's rows and each section's peak memory is its own):

- ``train``: ``bench train`` at M = 64 for cnn, resnet9, wrn16_4 and resnet18 at their
  standard widths, bf16, on a synthetic CIFAR-shaped pool: the sequential loop of single-model
  jitted calls, ``auto`` (with the plan it chose), and SAM timed on the plan ``auto`` chose for
  SGD. Rows carry examples/s, ``ratio_vs_loop``, ``mfu`` where the device's bf16 peak is known
  and ``sam_over_sgd``. One subprocess per network.
- ``epoch``: a *measured* epoch of 256 resnet9 models on a 25,000-example CIFAR-shaped
  synthetic pool (pkeep 0.5, so 12,500 examples per model) through the real trainer
  (``train_ensemble``, ``auto`` plan), in wall-clock seconds: the whole call (plan, init,
  compile, one epoch) and the steady epoch (the epoch is split into calls; the calls after the
  first, which compiles, give the steady rate). Beside it the FLOP floor (XLA's cost analysis
  of one model's step at the device's dense bf16 peak) and the HBM floor (its bytes accessed at
  the device's memory bandwidth), and a 10-epoch projection from the measured parts.
- ``plan``: ``jaxsam plan``'s prediction for that same epoch (from the ``train`` rows) against
  the measured steady epoch, with the relative error.
- ``chunked``: 1,024 resnet9 models trained a few steps in chunks of 32: peak device memory
  against the ensemble state and against what one un-chunked call would need.
- ``sam``: ``bench sam`` (SAM family vs SGD step time and memory; 16 models x 256 examples).
- ``score``: ``bench score`` at M = 256, N = 50,000, A = 18 on the default device.

``--quick`` shrinks every section (tiny widths, few models and steps; float32) so the whole
suite runs in a few minutes on a 2-core CPU; a test runs it. ``--budget-s`` bounds the wall
time: a section that would start after the budget is spent, or that runs past it, is recorded
as a row with ``status`` ``skipped`` or ``timeout`` instead of figures. Nothing is estimated in
place of a measurement.

Outputs, rewritten after every section: ``DIR/bench.json``, a JSON list of rows, each with at
least ``bench``, ``backend``, ``device``, ``jax_version`` and ``timestamp``; ``DIR/bench.md``,
one table per section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from jaxsam.bench.suite_sections import DEVICE_FIELDS, FULL, QUICK, SECTIONS, run_child

FULL_NETS = ("cnn", "resnet9", "wrn16_4", "resnet18")
QUICK_NETS = ("cnn",)  # resnet9 is timed by the epoch and chunked sections


def _spawn(section: str, quick: bool, timeout: float, net: str | None, rows_path: Path) -> list:
    cmd = [sys.executable, "-m", "jaxsam.bench.suite", "--child", section, "--rows", str(rows_path)]
    if quick:
        cmd.append("--quick")
    if net:
        cmd += ["--net", net]
    t0 = time.perf_counter()
    base = {"bench": section, **({"model": net} if net else {})}
    status = None
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=max(1.0, timeout), env=dict(os.environ)
        )
        stdout, stderr = proc.stdout, proc.stderr
        if proc.returncode != 0:
            status = "error"
    except subprocess.TimeoutExpired as e:
        stdout, stderr, status = _text(e.stdout), _text(e.stderr), "timeout"
    took = round(time.perf_counter() - t0, 1)
    rows = []
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            rows += [{"bench": section, **r, "section_seconds": took}
                     for r in json.loads(line[len("RESULT ") :])]  # fmt: skip
    if status is not None or not rows:
        bad = {**base, "status": status or "error", "seconds": took}
        if status != "timeout":
            bad["error"] = (stderr or stdout)[-1500:]
        rows.append(bad)
    return rows


def _text(b) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


MD_COLUMNS = {
    "train": ["model", "optim", "strategy", "plan", "models", "model_examples_per_s",
              "ratio_vs_loop", "mfu", "sam_over_sgd"],
    "epoch": ["model", "models", "pool", "plan", "epoch_wall_s", "setup_s", "compile_s",
              "epoch_steady_s", "flop_floor_s", "hbm_floor_s", "mfu", "ten_epochs_s_projected",
              "peak_device_bytes"],
    "plan": ["model", "models", "models_per_device", "predicted_epoch_s", "measured_epoch_s",
             "error_pct"],
    "chunked": ["model", "models", "chunk_size", "plan", "steps", "wall_s", "state_bytes",
                "peak_device_bytes", "peak_rss_bytes", "unchunked_estimate_bytes"],
    "sam": ["model", "optimizer", "models", "batch", "step_ms", "step_time_ratio_vs_sgd",
            "extra_memory_param_buffers"],
    "score": ["attack", "models", "examples", "queries", "seconds", "seconds_warm", "floor_s",
              "x_floor", "peak_rss_gib", "ratio_vs_per_target"],
}  # fmt: skip


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/").replace("\n", " ")


def to_markdown(rows: list[dict], header: dict) -> str:
    """One table per section (failed sections as a status line)."""
    out = [
        "# jaxsam bench suite",
        "",
        f"{header.get('device', '?')} ({header.get('backend', '?')}, "
        f"{header.get('devices', '?')} device(s)), "
        f"jax {header.get('jax_version', '?')}, {header['timestamp']}, "
        f"{'quick' if header['quick'] else 'full'} sizes, {header['seconds']:.0f} s in all.",
    ]
    for section in SECTIONS:
        got = [r for r in rows if r.get("bench") == section]
        if not got:
            continue
        out += ["", f"## {section}", ""]
        ok = [r for r in got if "status" not in r]
        for r in got:
            if "status" in r:
                out.append(f"- {r.get('model', section)}: {r['status']}")
        if ok:
            cols = [c for c in MD_COLUMNS[section] if any(c in r for r in ok)]
            out.append("| " + " | ".join(cols) + " |")
            out.append("|" + "---|" * len(cols))
            out += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in ok]
    return "\n".join(out) + "\n"


def run_suite(
    out: Path,
    quick: bool,
    sections: list[str],
    budget_s: float | None,
    nets: list[str] | None = None,
    section_timeout_s: float | None = None,
) -> list[dict]:
    """Runs the sections in order; rewrites ``out/bench.json`` and ``bench.md`` after each.

    This parent process never initialises a JAX backend (a GPU process would hold most of the
    device's memory): the device fields come from the children's rows.
    """
    out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if quick else FULL
    budget = sizes["budget_s"] if budget_s is None else budget_s
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    header = {"timestamp": stamp, "quick": quick}
    rows: list[dict] = []
    t0 = time.perf_counter()
    nets = nets or list(QUICK_NETS if quick else FULL_NETS)
    jobs = []
    for s in sections:
        if s == "train":
            jobs += [("train", n) for n in nets]
        elif s.startswith("train:"):
            jobs.append(("train", s.split(":", 1)[1]))
        else:
            jobs.append((s, None))
    for section, net in jobs:
        left = budget - (time.perf_counter() - t0)
        if section_timeout_s:
            left = min(left, section_timeout_s)
        if left <= 1:
            got = [{"bench": section, **({"model": net} if net else {}), "status": "skipped"}]
        else:
            got = _spawn(section, quick, left, net, out / "bench.json")
        for r in got:
            if "backend" in r:
                for k in DEVICE_FIELDS:
                    header.setdefault(k, r[k])
        rows += [{**header, **r} for r in got]
        _write(out, rows, {**header, "seconds": time.perf_counter() - t0})
        for r in got:
            print(_summary(r), flush=True)
    for r in rows:  # rows of failed sections get the device fields too
        for k in DEVICE_FIELDS:
            r.setdefault(k, header.get(k, "unknown"))
    _write(out, rows, {**header, "seconds": time.perf_counter() - t0})
    return rows


def _write(out: Path, rows: list[dict], header: dict) -> None:
    for name, text in (
        ("bench.json", json.dumps(rows, indent=1)),
        ("bench.md", to_markdown(rows, header)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def _summary(r: dict) -> str:
    head = f"{r['bench']:8s} {r.get('model', r.get('attack', '')):9s}"
    if "status" in r:
        return f"{head} {r['status']}"
    keys = [c for c in MD_COLUMNS[r["bench"]][1:] if c in r][:7]
    return head + "  " + "  ".join(f"{k}={_cell(r[k])}" for k in keys)


def parse(argv: list[str]) -> argparse.Namespace:
    from jaxsam.cli_options import tidy

    p = argparse.ArgumentParser(prog="jaxsam bench suite", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="directory for bench.json and bench.md")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a few minutes on a CPU")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}, run in the order given; "
        "train:NET runs one network of the train section at that place (default: all)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-time budget; later sections are skipped (default 480, quick 280)",
    )
    p.add_argument(
        "--nets",
        default=None,
        help=f"comma-separated networks of the train section (default {','.join(FULL_NETS)}; "
        f"quick: {','.join(QUICK_NETS)})",
    )
    p.add_argument(
        "--section-timeout-s",
        type=float,
        default=None,
        help="wall-time cap of one section (one network of train); default: the budget left",
    )
    p.add_argument("--child", choices=SECTIONS, help=argparse.SUPPRESS)
    p.add_argument("--net", help=argparse.SUPPRESS)
    p.add_argument("--rows", help=argparse.SUPPRESS)
    args = tidy(p).parse_args(argv)
    if args.child is None and args.out is None:
        p.error("--out DIR is required")
    from jaxsam.bench.train import ALL_NETS

    tokens = args.sections.split(",")
    named = [t.split(":", 1)[1] for t in tokens if t.startswith("train:")]
    bad_nets = set((args.nets or "").split(",") + named) - set(ALL_NETS) - {""}
    if bad_nets:
        p.error(f"unknown network(s) {sorted(bad_nets)}; use a subset of {','.join(ALL_NETS)}")
    unknown = {t for t in tokens if not t.startswith("train:")} - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; use a subset of {','.join(SECTIONS)}")
    return args


def run(argv: list[str]) -> int:
    """Entry point of ``jaxsam bench suite``; returns the exit status."""
    args = parse(argv)
    if args.child:
        run_child(args.child, args.quick, args.net, args.rows)
        return 0
    rows = run_suite(
        args.out,
        args.quick,
        list(dict.fromkeys(args.sections.split(","))),
        args.budget_s,
        args.nets.split(",") if args.nets else None,
        args.section_timeout_s,
    )
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'} ({len(rows)} rows)")
    return 0 if all(r.get("status") != "error" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
