"""The children of ``jaxsam bench suite``: each section's measurement, run in its own process.

``python -m jaxsam.bench.suite --child SECTION`` runs :func:`run_child`, which prints its rows as
one ``RESULT [...]`` line per batch (:func:`emit`), so that a section cut short by its time-out
keeps the rows it finished. :data:`FULL` and :data:`QUICK` are the sections' sizes (the module
docstring of :mod:`jaxsam.bench.suite` says what each section measures).
"""

from __future__ import annotations

import json
import math
import resource
import time
from pathlib import Path

SECTIONS = ("train", "epoch", "plan", "chunked", "sam", "score")
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
    from jaxsam.train.strategies import Execution

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
    plan = Execution(
        auto["plan_strategy"], auto["plan_conv_impl"], auto["plan_chunk_size"], "sgd-auto"
    )
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
        "plan": setup.execution.describe(),
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
            "plan": result.setup.execution.describe(),
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
    mp = plan_lib.memory_estimate(config)
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
