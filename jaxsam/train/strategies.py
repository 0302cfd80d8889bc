"""Execution strategies for the model axis: how a one-model function runs for M models.

A strategy turns ``fn(state, data, shared, *static)`` written for ONE model into a function
over the stacked ensemble: ``state`` and ``data`` carry a leading model axis M (``state`` may be
donated: the training state), ``shared`` is the same for every model (the pool, the step
number, an input batch) and is never copied per model, ``static`` are hashable Python values.
Outputs are stacked along M in the same order.

- ``vmap``: one jitted ``jax.vmap`` over all M models. A conv net's convolutions become grouped
  convolutions unless the model uses ``conv_impl="matmul"`` (the ``vmap_matmul`` strategy).
- ``chunked``: ``lax.map`` over chunks of ``chunk_size`` models, vmapped inside a chunk. Bounds
  activation memory to one chunk; M is padded up to a multiple of the chunk size (the padding
  models repeat the last one and are dropped from the outputs). ``chunk_size=1`` is a
  sequential loop inside one compiled program.
- ``loop``: the baseline, a Python loop over M calls of one jitted single-model function.
- ``sharded``: the model axis split over every local device with ``jax.shard_map`` over a
  1-D ``'model'`` mesh; inside a device, ``vmap`` (or ``chunked`` when ``chunk_size`` is set).
  M not divisible by the device count is padded like ``chunked``. Activations never cross
  devices: the compiled program has no collectives when M divides evenly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, PartitionSpec

from jaxsam.errors import ConfigError

STRATEGY_NAMES = ("auto", "vmap", "vmap_matmul", "chunked", "loop", "sharded")
MESH_AXIS = "model"


@dataclasses.dataclass(frozen=True)
class Execution:
    """A resolved execution plan.

    Attributes:
      strategy: ``vmap``, ``chunked``, ``loop`` or ``sharded`` (never ``auto``).
      conv_impl: ``lax`` or ``matmul``, the convolution form the model must use.
      chunk_size: models per chunk (``chunked``; ``sharded`` chunks within a device when set).
      source: how it was chosen (``config``, ``rule``, ``calibrated``, ``cache``).
    """

    strategy: str
    conv_impl: str = "lax"
    chunk_size: int | None = None
    source: str = "config"

    def describe(self) -> str:
        chunk = f"({self.chunk_size})" if self.chunk_size else ""
        return f"{self.strategy}{chunk}+{self.conv_impl}"

    def to_dict(self) -> dict:
        """JSON form (``RUN/plan.json``), with the backend and devices it was resolved on."""
        d = jax.local_devices()[0]
        return {
            **dataclasses.asdict(self),
            "backend": jax.default_backend(),
            "device_kind": getattr(d, "device_kind", "?"),
            "local_devices": jax.local_device_count(),
        }

    @classmethod
    def from_dict(cls, d: object, where: str = "plan.json") -> Execution:
        """The plan :meth:`to_dict` wrote (``source`` becomes ``stored``).

        Raises:
          ConfigError: ``d`` is not a plan (a damaged file), naming ``where``.
        """
        from jaxsam.models.layers import CONV_IMPLS

        ok = isinstance(d, dict)
        chunk = d.get("chunk_size") if ok else None
        ok = (
            ok
            and d.get("strategy") in ("vmap", "chunked", "loop", "sharded")
            and d.get("conv_impl") in CONV_IMPLS
            and (chunk is None or (type(chunk) is int and chunk >= 1))
        )
        if not ok:
            raise ConfigError(
                f"{where} does not hold an execution plan (strategy, conv_impl, chunk_size); "
                "it is damaged: delete it to choose the plan again"
            )
        return cls(d["strategy"], d["conv_impl"], chunk, "stored")


def _num_models(tree) -> int:
    return int(jax.tree.leaves(tree)[0].shape[0])


def _pad_models(tree, pad: int):
    if not pad:
        return tree
    return jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), tree)


def _vmapped(fn: Callable, num_static: int) -> Callable:
    """Un-jitted vmap over (state, data); shared and static broadcast."""

    def run(state, data, shared, *static):
        assert len(static) == num_static
        return jax.vmap(lambda s, d: fn(s, d, shared, *static))(state, data)

    return run


def _chunked_body(fn: Callable, chunk_size: int, num_static: int) -> Callable:
    """Un-jitted lax.map over chunks of a vmap; pads M up to a multiple of ``chunk_size``."""
    inner = _vmapped(fn, num_static)

    def run(state, data, shared, *static):
        m = _num_models(state)
        chunks = -(-m // chunk_size)
        pad = chunks * chunk_size - m
        split = lambda a: a.reshape(chunks, chunk_size, *a.shape[1:])  # noqa: E731
        st = jax.tree.map(split, _pad_models(state, pad))
        dt = jax.tree.map(split, _pad_models(data, pad))
        out = jax.lax.map(lambda args: inner(args[0], args[1], shared, *static), (st, dt))
        return jax.tree.map(lambda a: a.reshape(chunks * chunk_size, *a.shape[2:])[:m], out)

    return run


def _jit(run: Callable, num_static: int, donate: bool) -> Callable:
    static = tuple(range(3, 3 + num_static))
    return jax.jit(run, static_argnums=static, donate_argnums=(0,) if donate else ())


def model_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh over ``devices`` (default: all local devices) with one Auto axis ``'model'``.

    ``jax.make_mesh`` defaults to Explicit axes in jax 0.10, under which a vmapped conv net
    fails with ``ShardingTypeError``; the axis here is Auto and is only used by shard_map.
    """
    devices = list(devices or jax.local_devices())
    return jax.make_mesh(
        (len(devices),), (MESH_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


def _sharded_body(fn: Callable, chunk_size: int | None, num_static: int, mesh) -> Callable:
    n = mesh.devices.size
    per_device = (
        _chunked_body(fn, chunk_size, num_static) if chunk_size else _vmapped(fn, num_static)
    )
    spec_m, spec_rep = PartitionSpec(MESH_AXIS), PartitionSpec()

    def run(state, data, shared, *static):
        m = _num_models(state)
        pad = (-m) % n
        body = jax.shard_map(
            lambda s, d, sh: per_device(s, d, sh, *static),
            mesh=mesh,
            in_specs=(spec_m, spec_m, spec_rep),
            out_specs=spec_m,
            check_vma=False,
        )
        out = body(_pad_models(state, pad), _pad_models(data, pad), shared)
        if pad:
            out = jax.tree.map(lambda a: a[:m], out)
        return out

    return run


def _loop(fn: Callable, num_static: int) -> Callable:
    single = jax.jit(fn, static_argnums=tuple(range(3, 3 + num_static)))

    def run(state, data, shared, *static):
        outs = []
        for i in range(_num_models(state)):
            take = lambda a, i=i: a[i]  # noqa: E731
            outs.append(
                single(jax.tree.map(take, state), jax.tree.map(take, data), shared, *static)
            )
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    return run


def model_map(
    fn: Callable,
    strategy: str,
    *,
    chunk_size: int | None = None,
    num_static: int = 0,
    donate_state: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable:
    """Maps a one-model ``fn(state, data, shared, *static)`` over a leading model axis.

    Args:
      fn: function of ONE model's ``state`` and ``data`` pytrees plus ``shared`` (same for all
        models) and ``num_static`` trailing static arguments.
      strategy: ``vmap`` / ``vmap_matmul`` (same mapping; the model decides the conv form),
        ``chunked``, ``loop`` or ``sharded``.
      chunk_size: models per chunk (``chunked``: default 8; ``sharded``: chunk inside a device).
      num_static: number of trailing static (hashable) arguments.
      donate_state: donate the stacked ``state`` buffers (training).
      mesh: the ``'model'`` mesh for ``sharded`` (default :func:`model_mesh`).

    Returns:
      ``g(state [M, ...], data [M, ...], shared, *static)`` -> outputs stacked [M, ...].
    """
    if strategy in ("vmap", "vmap_matmul"):
        return _jit(_vmapped(fn, num_static), num_static, donate_state)
    if strategy == "chunked":
        body = _chunked_body(fn, max(1, chunk_size or 8), num_static)
        return _jit(body, num_static, donate_state)
    if strategy == "loop":
        return _loop(fn, num_static)
    if strategy == "sharded":
        body = _sharded_body(fn, chunk_size, num_static, mesh or model_mesh())
        return _jit(body, num_static, donate_state)
    if strategy == "auto":
        raise ConfigError(
            "strategy 'auto' must be resolved first; call jaxsam.train.calibrate.resolve_execution"
        )
    raise ConfigError(f"unknown strategy {strategy!r}; use one of {list(STRATEGY_NAMES)}")


def make_ensemble_fn(
    fn: Callable,
    strategy: str,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable:
    """Wraps the one-model trainer ``fn`` into an ensemble function under ``strategy``.

    ``fn(model_state, model_data, shared, step0, num_steps)`` is what
    :func:`jaxsam.train.step.make_train_steps` returns. The result has the same signature over
    stacked ``model_state`` / ``model_data`` [M, ...] (``model_state`` is donated) and returns
    the new stacked state and per-model histories [M, num_steps]. ``strategy`` is a resolved
    one (:func:`jaxsam.train.calibrate.resolve_execution` chooses for ``auto``).
    """

    def one(state, data, shared, num_steps):
        pool, step0 = shared
        return fn(state, data, pool, step0, num_steps)

    g = model_map(one, strategy, chunk_size=chunk_size, num_static=1, donate_state=True, mesh=mesh)

    def run(model_state, model_data, shared, step0, num_steps):
        return g(model_state, model_data, (shared, step0), num_steps)

    return run
