"""Benchmark: scoring all targets (leave-one-out) vs a straightforward per-target NumPy loop.

``jaxsam bench score [--quick] [--json]``. Synthetic logits [M, N, A, C] (default scale case
M=256, N=50,000, A=18, C=10) are generated a few models at a time with jax.random, so the full
float32 logits (9.2 GB at scale) never sit in memory; the logit-scaled confidence [M, N, A] is
kept. Each attack runs in its own subprocess so that its peak RSS (``ru_maxrss``) is its own;
the peak includes generating the synthetic logits and the signal array.

Rows: ``signal`` (host logits -> logit-scaled confidence through ``signals.compute_signals``, as
``jaxsam score`` computes it; generation excluded; after one untimed warm-up call on a small
block that compiles the kernel or loads it from numba's cache, its time in ``compile_s``; each
chunk of models is written in place into the [M, N, A] signal through ``out=``),
``lira_online``,
``lira_offline``, ``rmia`` (online, all pool points as population). ``seconds`` is the first
call (jit compilation included), ``seconds_warm`` a second identical call.
``ratio_vs_per_target`` = (per-target NumPy baseline time on ``--baseline-targets`` targets and
the first ``--baseline-examples`` examples, scaled by M / targets and N / examples) / ``seconds``,
both measured in the same process.

Every row also carries the hardware's **floor** for its step, measured in the same process:
``floor_s`` is the time of one read pass over that step's input (the logits for ``signal``,
summed over the chunks it reads; the signal array for an attack), the faster of a NumPy and a
jitted XLA reduction, best of three. ``x_floor`` = ``seconds_warm`` (the signal: ``seconds``)
over ``floor_s``: how many read passes' worth of time the step costs. ``peak_bytes`` is the
child's peak resident memory in bytes and ``signal_bytes`` the signal array's size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def read_pass_seconds(x, repeats: int = 3) -> float:
    """Seconds of one read pass over ``x`` (numpy or jax): the faster of ``np.max`` and a jitted
    ``jnp.max`` (the device copy is made before timing), best of ``repeats``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    xd = jax.device_put(x)
    f = jax.jit(jnp.max)
    f(xd).block_until_ready()
    host = np.asarray(x) if isinstance(x, np.ndarray) else None
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(xd).block_until_ready()
        best = min(best, time.perf_counter() - t)
        if host is not None:
            t = time.perf_counter()
            np.max(host)
            best = min(best, time.perf_counter() - t)
    return best


def _signal(m: int, n: int, a: int, c: int, seed: int, chunk: int = 8):
    """Synthetic logits -> (lsc [M, N, A] float32, keep [M, N], seconds spent on the signal,
    seconds of one read pass over the logits, chunk by chunk, seconds of the untimed warm-up
    call that compiles the signal's code)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsam.attacks import signals

    rng = np.random.default_rng(seed)
    keep = np.argsort(rng.random((m, n)), axis=0) < m // 2
    labels = rng.integers(0, c, n)
    hard = rng.normal(size=n).astype(np.float32)

    @jax.jit
    def gen(key, kin):
        z = jax.random.normal(key, (kin.shape[0], n, a, c), jnp.float32)
        bump = 2.0 + hard[None, :, None] + 1.5 * kin[..., None]
        onehot = jax.nn.one_hot(labels, c)[None, :, None, :]
        return z + onehot * bump[..., None]

    out = np.empty((m, n, a), np.float32)
    spent = floor = 0.0
    key = jax.random.key(seed)
    compile_s = 0.0
    for s0 in range(0, m, chunk):
        key, sub = jax.random.split(key)
        logits = gen(sub, jnp.asarray(keep[s0 : s0 + chunk], jnp.float32)).block_until_ready()
        host = np.array(logits)  # what scoring reads: writable logits on the host (not timed)
        if s0 == 0:  # compile (or load from numba's cache) on a few examples: timed apart
            t = time.perf_counter()
            few = min(n, 512)
            signals.compute_signals(["logit_scaled_confidence"], host[:, :few], labels[:few])
            compile_s = time.perf_counter() - t
        t = time.perf_counter()
        dest = {"logit_scaled_confidence": out[s0 : s0 + chunk]}  # written in place
        signals.compute_signals(["logit_scaled_confidence"], host, labels, out=dest)
        spent += time.perf_counter() - t
        floor += read_pass_seconds(host)
    return out, keep, spent, floor, compile_s


def _child(spec: dict) -> dict:
    import numpy as np

    from jaxsam.attacks import lira_from_signal, naive, rmia_from_signal

    m, n, a, c = spec["models"], spec["examples"], spec["queries"], spec["classes"]
    sig, keep, sig_seconds, logits_floor, compile_s = _signal(m, n, a, c, spec["seed"])
    what = spec["what"]
    out: dict = {"signal_bytes": int(sig.nbytes)}
    if what == "signal":
        out["seconds"] = sig_seconds
        out["floor_s"] = logits_floor
        out["compile_s"] = compile_s
    else:
        prob = 1.0 / (1.0 + np.exp(-sig)) if what == "rmia" else None
        call = {
            "lira_online": lambda: lira_from_signal(sig, keep, online=True),
            "lira_offline": lambda: lira_from_signal(sig, keep, online=False),
            "rmia": lambda: rmia_from_signal(prob, keep),
        }[what]
        t = time.perf_counter()
        call()
        out["seconds"] = time.perf_counter() - t  # first call: includes jit compilation
    out["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["peak_rss_gib"] = out["peak_bytes"] / 2**30
    if what != "signal":
        t = time.perf_counter()
        call()
        out["seconds_warm"] = time.perf_counter() - t
        out["floor_s"] = read_pass_seconds(prob if what == "rmia" else sig)
        # Baseline on k targets and the first nb examples (per-target cost is linear in N).
        k, nb = spec["targets"], min(n, spec["baseline_examples"])
        t = time.perf_counter()
        for tgt in range(k):
            if what == "rmia":
                naive.rmia_one_target(prob[:, :nb], tgt)
            else:
                naive.lira_one_target(sig[:, :nb], keep[:, :nb], tgt, online=what == "lira_online")
        out["baseline_seconds_scaled"] = (time.perf_counter() - t) * (m / k) * (n / nb)
    return out


def _spawn(spec: dict) -> dict:
    code = (
        "import json,sys; from jaxsam.bench.score import _child; "
        "print('RESULT', json.dumps(_child(json.loads(sys.argv[1]))))"
    )
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {spec['what']} failed:\n{proc.stderr[-2000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _sig(x: float) -> float:
    """``x`` to four significant digits (seconds span microseconds to minutes)."""
    return float(f"{x:.4g}")


def run(argv: list[str]) -> int:
    from jaxsam.cli_options import tidy

    p = argparse.ArgumentParser(prog="jaxsam bench score", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small case M=32, N=2000, A=4 (<1 min)")
    p.add_argument("--json", action="store_true", help="print one JSON object per row")
    p.add_argument("--models", type=int, default=256, help="M, shadow models")
    p.add_argument("--examples", type=int, default=50_000, help="N, pool examples")
    p.add_argument("--queries", type=int, default=18, help="A, augmented queries")
    p.add_argument("--classes", type=int, default=10, help="C, classes")
    p.add_argument(
        "--baseline-targets", type=int, default=2, help="targets the NumPy baseline scores"
    )
    p.add_argument(
        "--baseline-examples", type=int, default=10_000, help="examples the NumPy baseline scores"
    )
    p.add_argument(
        "--attacks", default="lira_online,lira_offline,rmia", help="comma-separated attacks"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic logits")
    args = tidy(p).parse_args(argv)
    if args.quick:
        args.models, args.examples, args.queries = 32, 2000, 4
    base = {
        "models": args.models,
        "examples": args.examples,
        "queries": args.queries,
        "classes": args.classes,
        "seed": args.seed,
        "targets": args.baseline_targets,
        "baseline_examples": args.baseline_examples,
    }
    rows = []
    for what in ["signal", *args.attacks.split(",")]:
        r = _spawn({**base, "what": what})
        ratio = None
        if what != "signal":
            scaled = r["baseline_seconds_scaled"]
            ratio = scaled / r["seconds"]
        row = {
            "attack": what,
            "models": args.models,
            "examples": args.examples,
            "queries": args.queries,
            "seconds": _sig(r["seconds"]),
            "floor_s": _sig(r["floor_s"]),
            "x_floor": round(r.get("seconds_warm", r["seconds"]) / r["floor_s"], 1),
            "peak_bytes": int(r["peak_bytes"]),
            "signal_bytes": r["signal_bytes"],
            "peak_rss_gib": round(r["peak_rss_gib"], 3),
            "ratio_vs_per_target": None if ratio is None else round(ratio, 1),
        }
        if "compile_s" in r:
            row["compile_s"] = _sig(r["compile_s"])
        if ratio is not None:
            row["seconds_warm"] = _sig(r["seconds_warm"])
            row["baseline_seconds_scaled"] = round(scaled, 2)
            row["baseline_targets"] = args.baseline_targets
            row["baseline_examples"] = min(args.examples, args.baseline_examples)
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(
                f"{what:14s} M={args.models} N={args.examples} A={args.queries}  "
                f"{row['seconds']:9.2f} s  x{row['x_floor']:.1f} floor ({row['floor_s']:.3f} s)  "
                f"peak {row['peak_rss_gib']:.2f} GiB  "
                + ("" if ratio is None else f"x{ratio:.1f} vs per-target NumPy"),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
