"""The ``auto`` strategy: choose how the model axis runs, by measurement, within device memory.

:func:`resolve_execution` turns ``config.train.strategy`` into an execution plan
(:class:`~jaxsam.train.strategies.Execution`) and returns the setup with the model switched to
its convolution form.

For ``auto``:

1. **Memory.** One model's training step is compiled once; XLA's ``memory_analysis`` gives its
   temporary (activation) bytes plus its argument bytes. Models per device are capped so that a
   chunk uses at most ``MEMORY_FRACTION`` of the device's free memory (GPU: ``memory_stats``;
   CPU: ``MemAvailable``). A larger M runs in chunks, never all at once.
2. **Measurement.** Nets without convolutions batch perfectly under vmap (a batched matmul):
   they get ``vmap`` without measuring. Conv nets time a few real training steps (the same
   train step, optimizer and data) of ``k`` models under each candidate: the loop of
   single-model jitted calls, vmap with ``lax`` (grouped) convolutions, vmap with matmul-form
   convolutions. The fastest in model-examples per second wins. Timing stops after
   ``CALIBRATION_BUDGET_S`` (the best of the candidates measured by then wins); rates already
   in the table are reused, not timed again. A custom model
   (``model.name = "package.module:attr"``) counts as a conv net when its traced forward pass
   has a convolution (``TrainSetup.conv_net``); without a ``conv_impl`` field it cannot take
   the matmul form, and only ``loop`` and ``vmap`` are timed.
3. **Devices.** With several local devices the model axis is sharded over all of them, and the
   measured choice runs inside each device (``loop`` becomes an in-program loop, chunk 1).
4. **Cache.** Results are stored per (backend, device kind, model, width, depth, dtype,
   a custom model's kwargs, optimizer, batch, input shape, k) in
   ``$JAXSAM_CACHE_DIR/strategy_table.json`` (default ``~/.cache/jaxsam``), so each
   configuration is measured once per machine. A custom model is keyed by its import path:
   after changing its code, delete its entries (or the file) to measure again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam.config import Config
from jaxsam.data.pool import Pool
from jaxsam.models import CONV_MODELS, with_conv_impl
from jaxsam.optim import registry
from jaxsam.train.memory import dp_bytes, step_memory
from jaxsam.train.setup import TrainSetup
from jaxsam.train.state import init_ensemble, model_keys
from jaxsam.train.strategies import Execution, make_ensemble_fn

MEMORY_FRACTION = 0.5
CALIBRATION_MODELS = {"cpu": 8}  # k per backend; others: 32
TABLE_NAME = "strategy_table.json"


def cache_path() -> Path:
    """``$JAXSAM_CACHE_DIR/strategy_table.json`` (default ``~/.cache/jaxsam``)."""
    root = os.environ.get("JAXSAM_CACHE_DIR") or Path.home() / ".cache" / "jaxsam"
    return Path(root) / TABLE_NAME


def _read_table(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_table(path: Path, table: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs a re-measurement next time


def free_device_memory(device: jax.Device | None = None) -> int:
    """Bytes the device can still allocate (GPU/TPU: ``memory_stats``; CPU: MemAvailable)."""
    device = device or jax.local_devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without stats
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def ensemble_inputs(setup: TrainSetup, config: Config, pool: Pool, keep: np.ndarray, k: int):
    """Fresh training inputs of the first ``k`` models, as the trainer builds them.

    Returns:
      ``(model_state, model_data, shared)``: stacked (params, batch_stats, opt_state) [k, ...];
      (keep bool [k, N], data keys [k], augmentation keys [k]); the pool (x, y) on the device.
    """
    state = init_ensemble(setup.model, setup.tx, k, pool.input_shape, config.train.seed)
    model_state = (state.params, state.batch_stats, state.opt_state)
    model_data = (
        jnp.asarray(keep[:k]),
        model_keys(config.train.seed, k, 1),
        model_keys(config.train.seed, k, 2),
    )
    shared = (jax.device_put(pool.x), jax.device_put(pool.y))
    return model_state, model_data, shared


def train_fn(setup: TrainSetup, pool: Pool, batch_size: int):
    """The one-model trainer of ``setup`` (:func:`jaxsam.train.step.make_train_steps`)."""
    from jaxsam.train.step import make_train_steps

    mean, std = jnp.asarray(pool.mean), jnp.asarray(pool.std)
    return make_train_steps(setup, mean, std, pool.kind, batch_size)


def per_model_bytes(setup: TrainSetup, config: Config, pool: Pool, keep: np.ndarray) -> int:
    """Device bytes one model's training call needs: XLA temporaries + its state, x1.25.

    From :func:`jaxsam.train.memory.step_memory` (the trainer's own initialisation and
    forward/backward pass, compiled for the default device); the state counts twice (input and
    updated output). ``keep`` is unused: the shapes depend on the pool alone.
    """
    b = config.train.batch_size
    mem = step_memory(setup, pool, b)
    temp = mem.temp_bytes or 0
    if temp == 0:  # fallback: a generous per-example activation estimate
        temp = 64 * int(np.prod(pool.input_shape)) * b * 4
    dp = setup.dp
    if dp is not None:
        # DP-SGD (as jaxsam.plan.memory_estimate): one microbatch's activations instead of one
        # batch's, plus that microbatch's per-example gradients and the noise tree.
        temp = temp * dp.microbatch_size / b + dp_bytes(dp.microbatch_size, mem.params)
    return int(1.25 * (temp + 2 * mem.state_bytes))


def memory_cap(setup: TrainSetup, config: Config, pool: Pool, keep: np.ndarray) -> int:
    """Models per device that fit into ``MEMORY_FRACTION`` of its free memory (>= 1)."""
    need = per_model_bytes(setup, config, pool, keep)
    return max(1, int(MEMORY_FRACTION * free_device_memory() // max(need, 1)))


@dataclasses.dataclass(frozen=True)
class Timing:
    """One plan's measurement: ``rate`` in model-examples per second (steady: the best of the
    timed calls after the warm-up), ``compile_s`` the warm-up call's seconds beyond one steady
    call (compilation and first-touch transfers), ``warmup_s`` the warm-up call itself."""

    rate: float
    compile_s: float
    warmup_s: float


def time_execution(
    setup: TrainSetup,
    config: Config,
    pool: Pool,
    keep: np.ndarray,
    plan: Execution,
    num_models: int,
    num_steps: int = 2,
    repeats: int = 2,
    inputs: tuple | None = None,
) -> Timing:
    """Model-examples per second of ``plan`` on ``num_models`` models after one warm-up call,
    with the compile time reported apart from the steady rate.

    ``inputs`` = ``(model_state, model_data, shared)`` for ``num_models`` models may be passed
    to skip the initialisation (it is copied, not donated).
    """
    setup = dataclasses.replace(setup, model=with_conv_impl(setup.model, plan.conv_impl))
    fn = train_fn(setup, pool, config.train.batch_size)
    efn = make_ensemble_fn(fn, plan.strategy, plan.chunk_size)
    if inputs is None:
        inputs = ensemble_inputs(setup, config, pool, keep, num_models)
    ms, md, shared = inputs
    ms = jax.tree.map(jnp.copy, ms)
    num_steps = max(1, min(num_steps, setup.steps_per_epoch))
    t0 = time.perf_counter()
    ms, _ = efn(ms, md, shared, jnp.int32(0), num_steps)
    jax.block_until_ready(ms)
    warmup = time.perf_counter() - t0
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        ms, hist = efn(ms, md, shared, jnp.int32(0), num_steps)
        jax.block_until_ready((ms, hist))
        best = min(best, time.perf_counter() - t0)
    rate = num_models * num_steps * config.train.batch_size / best
    return Timing(rate, max(0.0, warmup - best), warmup)


def _optimizer_key(config: Config) -> str:
    """The optimizer part of a table key; the defaults (``sgd`` base, no DP) keep old keys."""
    o = config.optim
    key = o.name + ("+fused" if registry.runs_fused_passes(o) else "")
    if o.base != "sgd":
        key += f"@{o.base}"
    if o.dp.enabled:  # per-example gradients: another step entirely
        key += f"+dp:{o.dp.sampling}:{o.dp.microbatch_size}"
    return key


def _table_key(config: Config, pool: Pool, k: int) -> str:
    d = jax.local_devices()[0]
    mo = config.model
    return "|".join(
        str(v)
        for v in (
            jax.default_backend(),
            getattr(d, "device_kind", "?"),
            jax.__version__,
            mo.name,
            mo.width,
            mo.depth,
            mo.dtype,
            *([json.dumps(mo.kwargs, sort_keys=True)] if mo.kwargs else []),
            _optimizer_key(config),
            config.train.batch_size,
            "x".join(map(str, pool.input_shape)),
            k,
        )
    )


CANDIDATES = (Execution("loop", "lax"), Execution("vmap", "lax"), Execution("vmap", "matmul"))


def candidates(setup: TrainSetup) -> tuple[Execution, ...]:
    """The plans :func:`calibrate` times: all of :data:`CANDIDATES`, less the matmul form for a
    custom model that has no ``conv_impl`` field (it cannot switch its convolutions)."""
    if hasattr(setup.model, "conv_impl"):
        return CANDIDATES
    return tuple(c for c in CANDIDATES if c.conv_impl == "lax")


CALIBRATION_BUDGET_S = 120.0  # seconds one calibration may spend timing candidates


def calibrate(
    setup: TrainSetup,
    config: Config,
    pool: Pool,
    keep: np.ndarray,
    k: int,
    use_cache: bool = True,
    budget_s: float | None = None,
) -> dict:
    """Measures the candidates on ``k`` models; returns ``{"best": name, "rates": {...}}``.

    Names are ``loop+lax``, ``vmap+lax``, ``vmap+matmul`` (:func:`candidates`); rates are
    model-examples per second. Rates the table already holds for this key are reused and only
    the missing candidates are timed (``jaxsam bench train`` records the loop's rate, which
    does not depend on the number of models, so the loop is never timed twice). Timing stops
    once ``budget_s`` (default ``$JAXSAM_CALIBRATION_BUDGET_S``, else
    :data:`CALIBRATION_BUDGET_S`) is spent: the candidates not
    reached are listed under ``"capped"`` and the best of those measured wins; such an entry
    counts as complete, so a machine does not spend the budget again on the same config.
    The entry also holds ``"compile_s"`` per candidate timed here.
    """
    if budget_s is None:
        budget_s = float(os.environ.get("JAXSAM_CALIBRATION_BUDGET_S", CALIBRATION_BUDGET_S))
    path = cache_path()
    key = _table_key(config, pool, k)
    entry = (_read_table(path) if use_cache else {}).get(key, {})
    names = [f"{c.strategy}+{c.conv_impl}" for c in candidates(setup)]
    rates = {n: float(r) for n, r in entry.get("rates", {}).items() if n in names and _is_rate(r)}
    if set(rates) | set(entry.get("capped", ())) >= set(names) and rates:
        return {**entry, "cached": True}
    compile_s: dict[str, float] = {}
    capped: list[str] = []
    inputs = None
    t0 = time.perf_counter()
    for cand, name in zip(candidates(setup), names, strict=True):
        if name in rates:
            continue
        if rates and time.perf_counter() - t0 > budget_s:
            capped.append(name)
            continue
        inputs = inputs or ensemble_inputs(setup, config, pool, keep, k)
        timing = time_execution(setup, config, pool, keep, cand, k, inputs=inputs)
        rates[name], compile_s[name] = timing.rate, round(timing.compile_s, 3)
    new = {"best": max(rates, key=rates.get), "rates": rates, "compile_s": compile_s}
    if capped:
        new["capped"] = capped
    if use_cache:
        table = _read_table(path)
        table[key] = new
        _write_table(path, table)
    return {**new, "cached": False}


def record(config: Config, pool: Pool, k: int, rates: dict[str, float]) -> dict:
    """Writes measured candidate rates for ``k`` models into the table (what the bench does).

    ``rates`` maps ``loop+lax`` / ``vmap+lax`` / ``vmap+matmul`` (all, or some: a later
    :func:`calibrate` times only the missing ones) to model-examples per second.
    """
    path = cache_path()
    entry = {"best": max(rates, key=rates.get), "rates": dict(rates)}
    table = _read_table(path)
    table[_table_key(config, pool, k)] = entry
    _write_table(path, table)
    return entry


def calibration_models(num_models: int, cap: int) -> int:
    """k: models per device timed by the calibration (bounded by memory and per backend)."""
    per_dev = -(-num_models // jax.local_device_count())
    return max(1, min(per_dev, cap, CALIBRATION_MODELS.get(jax.default_backend(), 32)))


def explicit_execution(config: Config) -> Execution:
    """The plan a non-``auto`` ``train.strategy`` names.

    ``chunked`` and ``sharded`` use matmul-form convolutions (they vmap inside); ``vmap`` keeps
    ``lax`` convolutions (grouped under vmap) and ``vmap_matmul`` switches them to matmuls.
    """
    t = config.train
    # Built-in conv nets switch to matmul-form convolutions; a custom model keeps its own form.
    conv = config.model.name in CONV_MODELS
    if t.strategy == "vmap":
        return Execution("vmap", "lax")
    if t.strategy == "vmap_matmul":
        return Execution("vmap", "matmul")
    if t.strategy == "loop":
        return Execution("loop", "lax")
    if t.strategy == "chunked":
        return Execution("chunked", "matmul" if conv else "lax", t.chunk_size or 8)
    if t.strategy == "sharded":
        return Execution("sharded", "matmul" if conv else "lax", t.chunk_size)
    raise ValueError(f"not an explicit strategy: {t.strategy!r}")


SLOW_FACTOR = 2.0  # warn when an explicit strategy is known to be this much slower


def _candidate_of(plan: Execution) -> str | None:
    """The measured candidate (``loop+lax``, ``vmap+lax``, ``vmap+matmul``) ``plan`` runs, or
    None for ``sharded`` (several devices: not what the table measures on one)."""
    if plan.strategy == "loop":
        return "loop+lax"
    if plan.strategy in ("vmap", "chunked"):
        return f"vmap+{plan.conv_impl}"
    return None


def known_rates(config: Config, pool: Pool, num_models: int) -> tuple[dict[str, float], int]:
    """The strategy table's measured rates for this machine and config, without measuring.

    Returns ``(rates, k)``: model-examples per second by candidate name, measured on ``k``
    models (the entry whose ``k`` is nearest to ``num_models`` per device), or ``({}, 0)``
    when the table holds no entry with two or more rates for this configuration.
    """
    table = _read_table(cache_path())
    prefix = _table_key(config, pool, 0).rsplit("|", 1)[0] + "|"
    names = {f"{c.strategy}+{c.conv_impl}" for c in CANDIDATES}
    per_dev = -(-num_models // jax.local_device_count())
    found = []
    for key, entry in table.items():
        rates = entry.get("rates") if isinstance(entry, dict) else None
        tail = key[len(prefix) :]
        if key.startswith(prefix) and tail.isdigit() and isinstance(rates, dict):
            # A custom model without conv_impl has no matmul candidate: two rates suffice.
            known = {n: float(r) for n, r in rates.items() if n in names and _is_rate(r)}
            if len(known) >= 2:
                found.append((abs(int(tail) - per_dev), int(tail), known))
    if not found:
        return {}, 0
    _, k, rates = min(found, key=lambda f: f[:2])
    return rates, k


def _is_rate(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def describe_execution(plan: Execution) -> str:
    """One line: the plan and how it was chosen, e.g. ``plan: chunked(32)+matmul (measured)``."""
    how = {
        "calibrated": "auto: measured",
        "cache": "auto: cached measurement",
        "rule": "auto: rule",
        "config": "train.strategy",
        "stored": "stored in the run",
    }.get(plan.source, plan.source)
    return f"plan: {plan.describe()} ({how})"


def slow_choice_warning(plan: Execution, config: Config, pool: Pool, num_models: int) -> str | None:
    """A warning when an explicit ``train.strategy`` is known to be much slower than ``auto``.

    Compares the candidate the plan runs with the fastest candidate in the strategy table
    (:func:`known_rates`, cached measurements only: nothing is timed here). Returns None for
    ``auto``, when the table knows nothing of this configuration, or when the choice is within
    :data:`SLOW_FACTOR` of the best.
    """
    if config.train.strategy == "auto" or plan.source != "config":
        return None
    mine = _candidate_of(plan)
    rates, k = known_rates(config, pool, num_models)
    if mine is None or not rates or rates.get(mine, 0) <= 0:
        return None
    best = max(rates, key=rates.get)
    factor = rates[best] / rates[mine]
    if factor <= SLOW_FACTOR:
        return None
    return (
        f"train.strategy={config.train.strategy} ({plan.describe()}) ran {factor:.1f}x slower "
        f"than {best} when this machine measured {k} models of this config (strategy table "
        f"{cache_path()}); train.strategy=auto picks the fastest"
    )


def announce_execution(plan: Execution, config: Config, pool: Pool, num_models: int) -> None:
    """Prints :func:`describe_execution` and, when there is one, :func:`slow_choice_warning`."""
    print(describe_execution(plan), flush=True)
    warning = slow_choice_warning(plan, config, pool, num_models)
    if warning:
        print(f"warning: {warning}", flush=True)


def auto_execution(
    setup: TrainSetup, config: Config, pool: Pool, keep: np.ndarray, use_cache: bool = True
) -> Execution:
    """Chooses the plan for ``train.strategy = 'auto'`` (see the module docstring)."""
    m = keep.shape[0]
    ndev = jax.local_device_count()
    per_dev = -(-m // ndev)
    cap = memory_cap(setup, config, pool, keep)
    if config.train.chunk_size:
        cap = min(cap, config.train.chunk_size)
    k = calibration_models(m, cap)
    if not setup.conv_net:
        best, source = "vmap+lax", "rule"
    elif k == 1:
        best, source = "loop+lax", "rule"
    else:
        result = calibrate(setup, config, pool, keep, k, use_cache)
        best, source = result["best"], "cache" if result["cached"] else "calibrated"
    strategy, conv_impl = best.split("+")
    if strategy == "loop":
        if ndev > 1:
            return Execution("sharded", conv_impl, 1, source)
        return Execution("loop", conv_impl, None, source)
    chunk = None if per_dev <= k else k
    if ndev > 1:
        return Execution("sharded", conv_impl, chunk, source)
    if chunk:
        return Execution("chunked", conv_impl, chunk, source)
    return Execution("vmap", conv_impl, None, source)


def resolve_execution(
    setup: TrainSetup, config: Config, pool: Pool, keep: np.ndarray, use_cache: bool = True
) -> TrainSetup:
    """``setup`` with ``plan`` resolved and the model switched to the plan's conv form."""
    if config.train.strategy == "auto":
        plan = auto_execution(setup, config, pool, keep, use_cache)
    else:
        plan = explicit_execution(config)
    return apply_execution(setup, plan)


def apply_execution(setup: TrainSetup, plan: Execution) -> TrainSetup:
    """``setup`` running under ``plan`` (e.g. one stored in a run directory): the plan set and
    the model switched to its convolution form."""
    return dataclasses.replace(
        setup, execution=plan, model=with_conv_impl(setup.model, plan.conv_impl)
    )
