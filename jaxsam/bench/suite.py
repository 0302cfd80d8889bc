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
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SECTIONS = ("train", "epoch", "plan", "chunked", "sam", "score")
FULL_NETS = ("cnn", "resnet9", "wrn16_4", "resnet18")
QUICK_NETS = ("cnn",)  # resnet9 is timed by the epoch and chunked sections

# Memory bandwidth (bytes/s) by device kind, from the vendors' datasheets (H100 SXM, H200).
HBM_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}

FULL = {
    "train": {
        "models": 64,
        "dtype": "bfloat16",
        "batch": 128,
        "steps": 4,
        "repeats": 3,
        "pool": 2048,
        "image": 32,
        "width": None,
    },
    "epoch": {
        "net": "resnet9",
        "models": 256,
        "pool": 25_000,
        "image": 32,
        "batch": 128,
        "dtype": "bfloat16",
        "width": None,
        "calls": 4,
    },
    "chunked": {
        "net": "resnet9",
        "models": 1024,
        "pool": 512,
        "image": 32,
        "batch": 128,
        "dtype": "bfloat16",
        "width": None,
        "chunk": 32,
    },
    "sam": ["--models", "16", "--batch", "256"],
    "score": [],
    "budget_s": 480.0,
}
QUICK = {
    "train": {
        "models": 4,
        "dtype": "float32",
        "batch": 32,
        "steps": 2,
        "repeats": 1,
        "pool": 128,
        "image": 16,
        "width": 8,
    },
    "epoch": {
        "net": "cnn",  # XLA:CPU takes minutes to compile resnet9's init; cnn tests the path
        "models": 4,  # as the train section: its calibration is reused from the table
        "pool": 256,
        "image": 16,
        "batch": 32,
        "dtype": "float32",
        "width": 8,
        "calls": 4,
    },
    "chunked": {
        "net": "cnn",
        "models": 16,
        "pool": 64,
        "image": 16,
        "batch": 16,
        "dtype": "float32",
        "width": 4,
        "chunk": 4,
    },
    "sam": ["--quick", "--only", "mlp"],  # the cnn's fused row alone compiles for minutes here
    "score": ["--quick"],
    "budget_s": 280.0,
}


# ----------------------------------------------------------------------------- children


DEVICE_FIELDS = ("backend", "device", "devices", "jax_version")


def _device_fields() -> dict:
    import jax

    d = jax.local_devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(d, "device_kind", "?"),
        "devices": jax.local_device_count(),
        "jax_version": jax.__version__,
    }


def _peak_device_bytes() -> int | None:
    """Peak bytes in use on the first device in this process (None where not reported)."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return int(peak) if peak else None


def _process_peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _trainer_config(size: dict, net: str, models: int, **over):
    from jaxsam import config as config_lib

    values = {
        "model.name": net,
        "model.dtype": size["dtype"],
        "masks.models": models,
        "train.batch_size": size["batch"],
        "train.epochs": 1,
        "train.progress": False,
        "train.strategy": "auto",
        **over,
    }
    if size.get("width") is not None:
        values["model.width"] = size["width"]
    return config_lib.replace(config_lib.Config(), **values)


def emit(rows: list[dict]) -> None:
    """Hands finished rows to the parent at once (a later time-out keeps them)."""
    fields = _device_fields()
    print("RESULT " + json.dumps([{**fields, **r} for r in rows]), flush=True)


def child_train(size: dict, net: str) -> list[dict]:
    """Loop vs ``auto`` for SGD on ``net``, then SAM on the plan ``auto`` chose."""
    from jaxsam.bench import train as bench_train
    from jaxsam.train.strategies import Plan

    argv = [
        "--models", str(size["models"]), "--nets", net, "--strategies", "loop", "auto",
        "--dtype", size["dtype"], "--batch-size", str(size["batch"]),
        "--steps", str(size["steps"]), "--repeats", str(size["repeats"]),
        "--pool-size", str(size["pool"]), "--image-size", str(size["image"]),
    ]  # fmt: skip
    if size.get("width") is not None:
        argv += ["--width", str(size["width"])]
    args = bench_train.parse(argv)
    pool = bench_train.synthetic_pool(args.pool_size, args.image_size)
    rows = bench_train.bench_net(args, net, "sgd", pool)
    emit(rows)
    auto = next(r for r in rows if r["strategy"] == "auto")
    plan = Plan(auto["plan_strategy"], auto["plan_conv_impl"], auto["plan_chunk_size"], "sgd-auto")
    sam_rows = bench_train.bench_net(args, net, "sam", pool, fixed_plan=plan)
    for r in sam_rows:
        r["sam_over_sgd"] = r["model_examples_per_s"] / auto["model_examples_per_s"]
    return sam_rows


def _timed_training(config, pool, keep) -> dict:
    """Trains through ``train_ensemble``; wall time, per-call times and peak memory."""
    from jaxsam.train.loop import train_ensemble

    calls: list[tuple[int, int, float]] = []
    t0 = time.perf_counter()
    result = train_ensemble(
        config, pool, keep, progress=False, on_call=lambda s, n, t: calls.append((s, n, t))
    )
    wall = time.perf_counter() - t0
    return {"result": result, "calls": calls, "wall": wall}


def steady_step_seconds(calls: list[tuple[int, int, float]]) -> tuple[float | None, float]:
    """(seconds per step in steady state, seconds spent compiling) from the trainer's calls.

    ``calls`` holds ``(step0, num_steps, seconds since the first call started)`` per call.
    The first call of each distinct ``num_steps`` compiles; later calls of a length already
    seen are steady. The steady step time comes from those alone, and the compile time is what
    each compiling call took beyond its steps at that rate. ``None`` when no call repeats a
    length.
    """
    seen: set[int] = set()
    steady_t, steady_n, compiling = 0.0, 0, []
    prev = 0.0
    for _, n, t in calls:
        if n in seen:
            steady_t, steady_n = steady_t + t - prev, steady_n + n
        else:
            seen.add(n)
            compiling.append((n, t - prev))
        prev = t
    if steady_n == 0:
        return None, 0.0
    step = steady_t / steady_n
    return step, sum(max(0.0, dt - n * step) for n, dt in compiling)


def child_epoch(size: dict) -> list[dict]:
    """One measured epoch of ``size['models']`` resnet9 models (see the module docstring)."""
    import jax

    from jaxsam.bench import train as bench_train
    from jaxsam.data.masks import make_masks, steps_per_epoch
    from jaxsam.train.setup import make_setup

    m = size["models"]
    pool = bench_train.synthetic_pool(size["pool"], size["image"])
    keep = make_masks(m, pool.size, 0.5, 0)
    spe = steps_per_epoch(keep, size["batch"])
    per_call = max(1, math.ceil(spe / size["calls"]))
    config = _trainer_config(size, size["net"], m, **{"train.steps_per_call": per_call})
    run = _timed_training(config, pool, keep)
    result, calls = run["result"], run["calls"]
    setup = result.setup
    row = {
        "model": size["net"],
        "width": config.model.width,
        "dtype": size["dtype"],
        "models": m,
        "pool": pool.size,
        "pkeep": 0.5,
        "batch_size": size["batch"],
        "steps_per_epoch": setup.steps_per_epoch,
        "calls": len(calls),
        "plan": setup.plan.describe(),
        "epoch_wall_s": round(run["wall"], 3),
        "setup_s": round(run["wall"] - result.seconds, 3),
        "first_call_s": round(calls[0][2], 3),
    }
    model_examples = m * setup.steps_per_epoch * size["batch"]
    row["model_examples_per_epoch"] = model_examples
    step_s, compile_s = steady_step_seconds(calls)
    if step_s is not None:
        steady_epoch = step_s * setup.steps_per_epoch
        row.update(
            epoch_steady_s=round(steady_epoch, 3),
            compile_s=round(compile_s, 3),
            model_examples_per_s=model_examples / steady_epoch,
            ten_epochs_s_projected=round(row["setup_s"] + compile_s + 10 * steady_epoch, 1),
        )
    cost = bench_train.step_cost(make_setup(config, pool, keep), config, pool, keep)
    peak = bench_train._peak()
    bandwidth = bench_train.device_figure(HBM_BANDWIDTH)
    if "flops" in cost:
        row["train_flops_per_example"] = cost["flops"]
        if peak:
            row["flop_floor_s"] = round(model_examples * cost["flops"] / peak, 3)
            if "model_examples_per_s" in row:
                row["mfu"] = row["model_examples_per_s"] * cost["flops"] / peak
    if "bytes_accessed" in cost and bandwidth:
        row["hbm_floor_s"] = round(model_examples * cost["bytes_accessed"] / bandwidth, 3)
    row["peak_device_bytes"] = _peak_device_bytes()
    row["peak_rss_bytes"] = _process_peak_rss()
    jax.clear_caches()
    return [row]


def child_chunked(size: dict) -> list[dict]:
    """Many models in chunks: peak memory against the state and an un-chunked call."""
    import jax

    from jaxsam.bench import train as bench_train
    from jaxsam.data.masks import make_masks
    from jaxsam.train.calibrate import per_model_bytes
    from jaxsam.train.setup import make_setup

    m = size["models"]
    pool = bench_train.synthetic_pool(size["pool"], size["image"])
    keep = make_masks(m, pool.size, 0.5, 0)
    config = _trainer_config(
        size, size["net"], m, **{"train.strategy": "chunked", "train.chunk_size": size["chunk"]}
    )
    run = _timed_training(config, pool, keep)
    result = run["result"]
    state = result.state
    state_bytes = sum(
        a.nbytes for a in jax.tree.leaves((state.params, state.batch_stats, state.opt_state))
    )
    one = per_model_bytes(make_setup(config, pool, keep), config, pool, keep)
    return [
        {
            "model": size["net"],
            "width": config.model.width,
            "dtype": size["dtype"],
            "models": m,
            "chunk_size": size["chunk"],
            "plan": result.setup.plan.describe(),
            "steps": result.setup.total_steps,
            "wall_s": round(run["wall"], 3),
            "state_bytes": int(state_bytes),
            "peak_device_bytes": _peak_device_bytes(),
            "peak_rss_bytes": _process_peak_rss(),
            "unchunked_estimate_bytes": int(one * m),
            "per_model_estimate_bytes": int(one),
        }
    ]


def child_plan(size: dict, rows_path: str) -> list[dict]:
    """``jaxsam plan``'s models per device and epoch time vs the measured epoch."""
    import jax

    from jaxsam import config as config_lib
    from jaxsam import plan as plan_lib

    path = Path(rows_path) if rows_path else None
    rows = json.loads(path.read_text()) if path is not None and path.exists() else []
    epoch = next((r for r in rows if r.get("bench") == "epoch" and "epoch_steady_s" in r), None)
    train = [r for r in rows if r.get("bench") == "train"]
    values = {
        "data.dataset": "cifar10",
        "data.pool_size": size["pool"],
        "masks.models": size["models"],
        "model.name": size["net"],
        "model.dtype": size["dtype"],
        "train.batch_size": size["batch"],
        "train.epochs": 1,
    }
    if size.get("width") is not None:
        values["model.width"] = size["width"]
    config = config_lib.replace(config_lib.Config(), **values)
    mp = plan_lib.memory_plan(config)
    stats = jax.local_devices()[0].memory_stats() or {}
    gib = stats.get("bytes_limit", 0) / plan_lib.GiB or None
    row: dict = {
        "model": size["net"],
        "models": size["models"],
        "pool": size["pool"],
        "bytes_per_model": mp.bytes_per_model,
        "models_per_device": mp.models_per_device(gib) if gib else None,
        "device_gib": gib,
    }
    estimates = [e for e in plan_lib.time_estimates(mp, size["net"], False, train)
                 if e["backend"] == jax.default_backend()]  # fmt: skip
    if estimates:
        row["predicted_epoch_s"] = round(estimates[0]["seconds"], 3)
        row["predicted_from"] = f"bench train {size['net']} {estimates[0]['strategy']} row"
    if epoch is not None and "predicted_epoch_s" in row:
        row["measured_epoch_s"] = epoch["epoch_steady_s"]
        row["error_pct"] = round(100 * (row["predicted_epoch_s"] / epoch["epoch_steady_s"] - 1), 1)
    return [row]


def _bench_module_rows(name: str, argv: list[str]) -> list[dict]:
    """Runs ``jaxsam bench NAME --json ...`` in this process and parses its rows."""
    import contextlib
    import importlib
    import io

    module = importlib.import_module(f"jaxsam.bench.{name}")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        module.run(["--json", *argv])
    text = buf.getvalue().strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_child(section: str, quick: bool, net: str | None, rows_path: str | None) -> None:
    """Runs one section in this process and emits its rows."""
    sizes = QUICK if quick else FULL
    if section == "train":
        rows = child_train(sizes["train"], net)
    elif section == "epoch":
        rows = child_epoch(sizes["epoch"])
    elif section == "chunked":
        rows = child_chunked(sizes["chunked"])
    elif section == "plan":
        rows = child_plan(sizes["epoch"], rows_path)
    elif section in ("sam", "score"):
        rows = _bench_module_rows(section, sizes[section])
    else:
        raise ValueError(f"unknown section {section!r}; use one of {SECTIONS}")
    emit(rows)


# ----------------------------------------------------------------------------- parent


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
