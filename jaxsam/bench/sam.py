"""Benchmark: step time and peak memory of the SAM family relative to SGD, in one run.

    python -m jaxsam.bench.sam [--quick] [--json] [--models M]

For each model (a small MLP and a small CNN, both defined here) and each optimizer it jit-compiles
``jax.vmap`` of one training step over M models, times it, and prints the step time as a ratio to
the SGD step of the same model measured in the same run. Optimizers: ``sgd`` (baseline), jaxsam's
``sam``, ``sam_fused`` (the same SAM with both passes in one body, :func:`fused_update`, as the
trainer runs it), ``asam``, ``gsam``, ``looksam`` (k=5) and ``optax_contrib_sam``
(optax.contrib.sam with ``opaque_mode=True``, the one-call mode). Under vmap LookSAM's
``lax.cond`` becomes a select, so its row shows the cost of a SAM step on every step.

Memory is XLA's own account of the compiled step (``compiled.memory_analysis()``: arguments +
outputs - aliased + temporaries), reported as the extra over SGD in units of one parameter-sized
buffer per model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxsam.optim import asam, base_sgd, fused_update, gsam, looksam, sam

PyTree = Any


class MLP(nn.Module):
    """784 -> 256 -> 256 -> 10 with ReLU."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(256)(x))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(10)(x)


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (16, 32 channels) with 2x2 average pooling, then a dense head."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


MODELS: dict[str, tuple[nn.Module, tuple[int, ...]]] = {
    "mlp": (MLP(), (28, 28, 1)),
    "cnn": (SmallCNN(), (16, 16, 3)),
}


def optimizers() -> dict[str, optax.GradientTransformation]:
    base = lambda: base_sgd(0.05, momentum=0.9)
    adv = optax.chain(optax.contrib.normalize(), optax.sgd(0.05))
    return {
        "sgd": optax.with_extra_args_support(base()),
        "sam": sam(base(), 0.05),
        "sam_fused": sam(base(), 0.05),
        "asam": asam(base(), 0.5, eta=0.01),
        "gsam": gsam(base(), 0.05, alpha=0.1),
        "looksam": looksam(base(), 0.05, k=5),
        "optax_contrib_sam": optax.contrib.sam(base(), adv, sync_period=2, opaque_mode=True),
    }


def build_step(
    model: nn.Module, tx: optax.GradientTransformation, opaque: bool, fused: bool = False
) -> Callable:
    """One per-model training step; the caller vmaps it over models.

    ``fused``: both gradient passes through one ``lax.scan`` body (:func:`fused_update`).
    """

    def step(params: PyTree, opt_state: PyTree, x: jax.Array, y: jax.Array):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        if fused:
            updates, opt_state, loss = fused_update(
                tx, jax.value_and_grad(loss_fn), opt_state, params
            )
            return optax.apply_updates(params, updates), opt_state, loss
        loss, g = jax.value_and_grad(loss_fn)(params)
        grad_fn = (lambda p, _: jax.grad(loss_fn)(p)) if opaque else jax.grad(loss_fn)
        updates, opt_state = tx.update(g, opt_state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def peak_bytes(compiled: Any) -> float | None:
    """arguments + outputs - aliased + temporaries, from XLA's memory analysis (None if absent)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - backends without the analysis
        return None
    if m is None:
        return None
    return float(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )


def measure(
    model_name: str, n_models: int, batch: int, iters: int, rounds: int
) -> list[dict[str, Any]]:
    model, shape = MODELS[model_name]
    key = jax.random.key(0)
    k_init, k_x, k_y = jax.random.split(key, 3)
    x = jax.random.normal(k_x, (n_models, batch, *shape))
    y = jax.random.randint(k_y, (n_models, batch), 0, 10)
    init = jax.vmap(lambda k: model.init(k, x[0, :1])["params"])
    params0 = init(jax.random.split(k_init, n_models))
    param_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(params0))

    runs = {}
    for name, tx in optimizers().items():
        step = build_step(
            model, tx, opaque=name == "optax_contrib_sam", fused=name.endswith("_fused")
        )
        fn = jax.jit(jax.vmap(step), donate_argnums=(0, 1))
        params = jax.tree.map(jnp.copy, params0)
        state = jax.vmap(tx.init)(params)
        compiled = fn.lower(params, state, x, y).compile()
        params, state, loss = compiled(params, state, x, y)  # warm-up
        jax.block_until_ready(loss)
        runs[name] = {
            "fn": compiled,
            "carry": (params, state),
            "times": [],
            "peak": peak_bytes(compiled),
        }

    for _ in range(rounds):  # interleave optimizers so that load changes hit all of them alike
        for run in runs.values():
            params, state = run["carry"]
            t0 = time.perf_counter()
            for _ in range(iters):
                params, state, loss = run["fn"](params, state, x, y)
            jax.block_until_ready((params, loss))
            run["times"].append((time.perf_counter() - t0) / iters)
            run["carry"] = (params, state)

    sgd_t = statistics.median(runs["sgd"]["times"])
    sgd_peak = runs["sgd"]["peak"]
    rows = []
    for name, run in runs.items():
        t = statistics.median(run["times"])
        extra = extra_bytes = None
        if run["peak"] is not None and sgd_peak is not None:
            extra_bytes = int(run["peak"] - sgd_peak)
            extra = round(extra_bytes / param_bytes, 2)
        rows.append(
            {
                "model": model_name,
                "optimizer": name,
                "step_ms": round(1e3 * t, 3),
                "step_time_ratio_vs_sgd": round(t / sgd_t, 3),
                "extra_memory_param_buffers": extra,
                "extra_memory_bytes": extra_bytes,
                "param_bytes_all_models": int(param_bytes),
                "models": n_models,
                "batch": batch,
                "params_per_model": sum(a.size for a in jax.tree.leaves(params0)) // n_models,
                "backend": jax.default_backend(),
            }
        )
    return rows


def run(argv: list[str]) -> int:
    """Entry point of ``jaxsam bench sam``; returns the exit status."""
    from jaxsam.cli_options import tidy

    parser = argparse.ArgumentParser(prog="jaxsam bench sam", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows")
    parser.add_argument("--quick", action="store_true", help="few models and iterations")
    parser.add_argument("--models", type=int, default=None, help="models per step (vmapped)")
    parser.add_argument("--batch", type=int, default=None, help="examples per model per step")
    parser.add_argument("--iters", type=int, default=None, help="steps per timing round")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (median taken)")
    parser.add_argument("--only", choices=sorted(MODELS), action="append", help="model subset")
    args = tidy(parser).parse_args(argv)
    n_models = args.models or (2 if args.quick else 4)
    batch = args.batch or (32 if args.quick else 128)
    iters = args.iters or (5 if args.quick else 20)
    rounds = args.rounds or (3 if args.quick else 7)

    rows = []
    for model_name in args.only or list(MODELS):
        rows.extend(measure(model_name, n_models, batch, iters, rounds))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"backend={jax.default_backend()} devices={jax.device_count()} models={n_models} "
        f"batch={batch} (median of {rounds} rounds x {iters} steps)"
    )
    print(f"{'model':6} {'optimizer':18} {'step ms':>9} {'/ sgd':>7} {'extra mem':>10}")
    for r in rows:
        mem = r["extra_memory_param_buffers"]
        print(
            f"{r['model']:6} {r['optimizer']:18} {r['step_ms']:9.3f} "
            f"{r['step_time_ratio_vs_sgd']:7.3f} {'-' if mem is None else mem:>10}"
        )
    print("extra mem: peak bytes over the SGD step, in parameter-sized buffers per model")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
