"""``jaxsam bench train``: ensemble training throughput per model and execution strategy.

For each built-in model (or your own, ``--nets package.module:attr``, at its factory's
default size: ``--width`` and ``--dtype`` apply to the built-in models only) and each strategy
it trains M models for a few steps on a synthetic CIFAR-shaped pool (random uint8
[N, 32, 32, 3], 10 classes) through the product's own path (``make_setup`` ->
``make_train_steps`` -> ``make_ensemble_fn``), and prints model-examples per second and the
ratio to the sequential loop of single-model jitted calls measured in the same run. Where the
device's peak is known (H100 / H200: 989 TFLOP/s dense bf16) it adds the model-FLOP
utilisation, with FLOPs from XLA's cost analysis of one model's lowered step
(:func:`step_cost` says why not the compiled one).

``--epoch-estimate`` adds, per row, the time for 256 models x 25,000 examples x 1 epoch
EXTRAPOLATED from the measured throughput (labelled as such), next to the FLOP-based physical
limit on one H100 (989 TFLOP/s).

Examples::

  python -m jaxsam.bench.train --json --quick
  python -m jaxsam.bench.train --json --models 64 --dtype bfloat16 --epoch-estimate
  python -m jaxsam.bench.train --optim sgd sam --nets cnn resnet9
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam.optim import registry as optim_registry

H100_BF16_PEAK = 989e12
PEAKS = {"H100": H100_BF16_PEAK, "H200": H100_BF16_PEAK}
EPOCH_MODELS, EPOCH_EXAMPLES = 256, 25_000
ALL_NETS = ("mlp", "cnn", "resnet9", "resnet18", "wrn16_4", "wrn28_2")
QUICK_NETS = ("mlp", "cnn")
STRATEGIES = ("loop", "vmap", "vmap_matmul", "chunked", "sharded", "auto")
QUICK_STRATEGIES = ("loop", "vmap", "vmap_matmul", "auto")


def synthetic_pool(n: int, size: int, seed: int = 0):
    """A CIFAR-shaped pool: uint8 [n, size, size, 3] noise, 10 balanced-at-random labels."""
    from jaxsam.data.pool import make_pool

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    return make_pool(x, y, num_classes=10, kind="image", dataset="synthetic", test_split=None)


def step_cost(setup, config, pool, keep) -> dict[str, float]:
    """XLA cost analysis of one model's training step, per example of the batch.

    Returns ``{"flops": ..., "bytes_accessed": ...}`` (an entry is missing where the backend
    does not report it). FLOPs come from the *lowered* (unoptimised) program: there every
    convolution is still an HLO convolution, so they count the model's arithmetic on every
    backend. The compiled program's count would not: on GPUs convolutions become cuDNN custom
    calls that XLA's cost analysis skips (measured on an H200: 10.8 MFLOP per example for
    resnet9 against 1,976 MFLOP counted before compilation). Bytes come from the compiled
    program (after fusion); on GPUs they too miss the custom calls' traffic, so the HBM floor
    built on them is a lower bound.
    """
    from jaxsam.train.calibrate import ensemble_inputs, train_fn

    fn = train_fn(setup, pool, config.train.batch_size)
    ms, md, shared = ensemble_inputs(setup, config, pool, keep, 1)
    take = lambda t: jax.tree.map(lambda a: a[0], t)  # noqa: E731
    b = config.train.batch_size
    out = {}
    try:
        lowered = jax.jit(fn, static_argnums=(4,)).lower(
            take(ms), take(md), shared, jnp.int32(0), 1
        )
        for key, name, stage in (
            ("flops", "flops", lowered),
            ("bytes accessed", "bytes_accessed", None),
        ):
            cost = (stage or lowered.compile()).cost_analysis()
            if isinstance(cost, list | tuple):
                cost = cost[0]
            value = float((cost or {}).get(key, 0.0) or 0.0)
            if value > 0:
                out[name] = value / b
    except Exception:  # noqa: BLE001 - backends without cost analysis
        pass
    return out


def _flops_per_example(setup, config, pool, keep) -> float | None:
    """XLA cost-analysis FLOPs of one model's training step, per example (None if unknown)."""
    return step_cost(setup, config, pool, keep).get("flops")


def device_figure(table: dict[str, float]) -> float | None:
    """``table``'s figure for the local device kind (matched by name) times the device count.

    ``None`` where the kind is not in the table (CPUs, unknown accelerators).
    """
    kind = getattr(jax.local_devices()[0], "device_kind", "")
    for name, value in table.items():
        if name in kind:
            return value * jax.local_device_count()
    return None


def _peak() -> float | None:
    """Dense bf16 FLOP/s of the local devices (None where unknown)."""
    return device_figure(PEAKS)


def _config(args, net: str, optim: str):
    from jaxsam import config as config_lib
    from jaxsam.models import custom

    own = custom.is_import_path(net)  # a custom model: its size and dtype are its kwargs
    over = {
        "model.name": net,
        **({} if own else {"model.dtype": args.dtype}),
        "masks.models": args.models,
        "train.batch_size": args.batch_size,
        "train.progress": False,
        "optim.name": optim,
        "train.strategy": "auto",
        "optim.fused_passes": bool(args.fused_passes),
    }
    if args.width is not None and not own:
        over["model.width"] = args.width
    if args.chunk_size is not None:
        over["train.chunk_size"] = args.chunk_size
    return config_lib.replace(config_lib.Config(), **over)


def bench_net(args, net: str, optim: str, pool, fixed_plan=None) -> list[dict]:
    """Rows for one (net, optimizer): every requested strategy, loop first.

    With ``fixed_plan`` (a :class:`~jaxsam.train.strategies.Execution`) the loop is skipped and the
    ``auto`` row times that plan instead of choosing one: the suite times SAM on the plan that
    ``auto`` chose for SGD, so that SAM/SGD compares the same execution. Its
    ``ratio_vs_loop`` is then ``None``.
    """
    import dataclasses

    from jaxsam.data.masks import make_masks
    from jaxsam.train.calibrate import (
        auto_execution,
        calibration_models,
        ensemble_inputs,
        explicit_execution,
        memory_cap,
        record,
        time_execution,
    )
    from jaxsam.train.setup import make_setup

    m = args.models
    keep = make_masks(m, pool.size, 0.5, 0)
    base_cfg = _config(args, net, optim)
    setup = make_setup(base_cfg, pool, keep)
    peak = _peak()
    flops = _flops_per_example(setup, base_cfg, pool, keep) if peak or args.epoch_estimate else None
    inputs = ensemble_inputs(setup, base_cfg, pool, keep, m)
    strategies = [s for s in args.strategies if s != "loop"]
    if "sharded" in strategies and jax.local_device_count() == 1 and not args.sharded_on_one:
        strategies.remove("sharded")  # identical to vmap+matmul on one device
    rows = []
    loop_rate = None
    measured: dict[str, float] = {}  # candidate name -> rate, fed to the auto table
    for strategy in strategies if fixed_plan is not None else ["loop", *strategies]:
        cfg = dataclasses.replace(
            base_cfg, train=dataclasses.replace(base_cfg.train, strategy=strategy)
        )
        t0 = time.perf_counter()
        if strategy == "auto" and fixed_plan is not None:
            plan = fixed_plan
        elif strategy == "auto":
            if measured and jax.local_device_count() == 1:
                # Hand auto what this run measured, so that its calibration does not time it
                # again: all rates when it calibrates on the same M, else the loop's alone
                # (one model at a time: its rate does not depend on M).
                k = calibration_models(m, memory_cap(setup, cfg, pool, keep))
                reuse = measured if k == m else {"loop+lax": measured.get("loop+lax")}
                if any(reuse.values()):
                    record(cfg, pool, k, {n: r for n, r in reuse.items() if r})
            plan = auto_execution(setup, cfg, pool, keep)
        else:
            plan = explicit_execution(cfg)
        choose_s = time.perf_counter() - t0
        timing = time_execution(setup, cfg, pool, keep, plan, m, args.steps, args.repeats, inputs)
        if strategy == "loop":
            loop_rate = timing.rate
        if strategy in ("loop", "vmap", "vmap_matmul"):
            measured[f"{plan.strategy}+{plan.conv_impl}"] = timing.rate
        row = _row(args, net, optim, cfg, strategy, plan, timing, loop_rate)
        if strategy == "auto":
            row["auto_choice_s"] = choose_s
            row["auto_source"] = plan.source
        _add_flop_figures(row, args, flops, peak)
        rows.append(row)
        if not args.json:
            print(_fmt(row), flush=True)
    return rows


def _row(args, net, optim, cfg, strategy, plan, timing, loop_rate) -> dict:
    """One strategy's row: the plan, the steady rate and its compile time, the device."""
    return {
        "model": net,
        "width": cfg.model.width,
        "optim": optim,
        "fused_passes": optim_registry.runs_fused_passes(cfg.optim),
        "dtype": args.dtype,
        "strategy": strategy,
        "plan": plan.describe(),
        "plan_strategy": plan.strategy,
        "plan_conv_impl": plan.conv_impl,
        "plan_chunk_size": plan.chunk_size,
        "models": args.models,
        "batch_size": args.batch_size,
        "model_examples_per_s": timing.rate,
        "compile_s": round(timing.compile_s, 3),
        "ratio_vs_loop": None if loop_rate is None else timing.rate / loop_rate,
        "backend": jax.default_backend(),
        "device": getattr(jax.local_devices()[0], "device_kind", "?"),
        "devices": jax.local_device_count(),
    }


def _add_flop_figures(row: dict, args, flops: float | None, peak: float | None) -> None:
    """MFU where the peak is known; the 256-model epoch extrapolation where asked for."""
    rate = row["model_examples_per_s"]
    if flops:
        row["train_flops_per_example"] = flops
        if peak:
            row["mfu"] = rate * flops / peak
    if args.epoch_estimate:
        row["epoch256_s_extrapolated"] = EPOCH_MODELS * EPOCH_EXAMPLES / rate
        if flops:
            row["epoch256_s_physical_limit_h100"] = (
                EPOCH_MODELS * EPOCH_EXAMPLES * flops / H100_BF16_PEAK
            )


def _fmt(r: dict) -> str:
    s = (
        f"{r['model']:9s} {r['optim']:4s} {r['strategy']:12s} {r['plan']:22s} M={r['models']:<4d}"
        f" {r['model_examples_per_s']:12.1f} ex/s"
    )
    if r["ratio_vs_loop"] is not None:
        s += f"  {r['ratio_vs_loop']:6.2f}x loop"
    if "mfu" in r:
        s += f"  mfu {100 * r['mfu']:.1f}%"
    if "epoch256_s_extrapolated" in r:
        s += f"  256x25k epoch: {r['epoch256_s_extrapolated']:.0f} s (extrapolated)"
        if "epoch256_s_physical_limit_h100" in r:
            s += f", H100 limit {r['epoch256_s_physical_limit_h100']:.1f} s"
    return s


def _add_sam_ratios(rows: list[dict]) -> None:
    """Adds ``sam_over_sgd`` (throughput ratio; goal >= 0.475) to SAM rows with an SGD twin."""
    sgd = {(r["model"], r["strategy"]): r for r in rows if r["optim"] == "sgd"}
    for r in rows:
        if r["optim"] == "sam" and (r["model"], r["strategy"]) in sgd:
            base = sgd[(r["model"], r["strategy"])]["model_examples_per_s"]
            r["sam_over_sgd"] = r["model_examples_per_s"] / base


def _net(name: str) -> str:
    """``--nets`` value: a built-in model, or a custom model's import path (docs/recipes.md)."""
    from jaxsam.models import custom

    if name in ALL_NETS or custom.is_import_path(name):
        return name
    raise argparse.ArgumentTypeError(
        f"{name!r} is not a model; use one of {list(ALL_NETS)} or package.module:attr"
    )


def parse(argv: list[str]) -> argparse.Namespace:
    from jaxsam.cli_options import tidy

    p = argparse.ArgumentParser(prog="jaxsam bench train", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON list of rows")
    p.add_argument("--quick", action="store_true", help="tiny widths, few steps, mlp+cnn (<1 min)")
    p.add_argument("--models", type=int, default=None, help="M, models trained at once")
    p.add_argument(
        "--nets",
        nargs="+",
        type=_net,
        default=None,
        help=f"models: {', '.join(ALL_NETS)}, or your own as package.module:attr",
    )
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=None, help="default: all")
    p.add_argument("--optim", nargs="+", choices=("sgd", "sam"), default=["sgd"], help="optimizers")
    p.add_argument("--width", type=int, default=None, help="model width (default: standard)")
    p.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32", help="model dtype"
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: per net")
    p.add_argument("--chunk-size", type=int, default=None, help="models per chunk of chunked")
    p.add_argument("--steps", type=int, default=None, help="steps fused per timed call")
    p.add_argument("--repeats", type=int, default=None, help="timed calls (best is kept)")
    p.add_argument("--pool-size", type=int, default=None, help="examples in the pool")
    p.add_argument("--image-size", type=int, default=None, help="default 32 (quick: 16)")
    p.add_argument("--epoch-estimate", action="store_true", help="256x25k epoch, extrapolated")
    p.add_argument("--sharded-on-one", action="store_true", help="time sharded on 1 device too")
    p.add_argument("--fused-passes", action="store_true", help="SAM: both passes in one scan body")
    args = tidy(p).parse_args(argv)
    q = args.quick
    args.models = args.models or (4 if q else 16)
    args.nets = args.nets or list(QUICK_NETS if q else ALL_NETS)
    args.width = args.width if args.width is not None else (8 if q else None)
    args.batch_size = args.batch_size or (32 if q else 128)
    args.steps = args.steps or 4
    args.strategies = args.strategies or list(QUICK_STRATEGIES if q else STRATEGIES)
    args.repeats = args.repeats or (2 if q else 3)
    args.pool_size = args.pool_size or (128 if q else 2048)
    args.image_size = args.image_size or (16 if q else 32)
    return args


def run(argv: list[str]) -> int:
    """Entry point; prints rows (``--json``: one JSON list). Returns the exit status."""
    args = parse(argv)
    pool = synthetic_pool(args.pool_size, args.image_size)
    rows: list[dict] = []
    for net in args.nets:
        for optim in args.optim:
            rows.extend(bench_net(args, net, optim, pool))
    _add_sam_ratios(rows)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            if "sam_over_sgd" in r:
                print(
                    f"{r['model']:9s} {r['strategy']:12s} SAM/SGD throughput "
                    f"{r['sam_over_sgd']:.3f} (goal: within 5% of 0.5)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
