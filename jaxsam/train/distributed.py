"""Multi-host training on JAX's own multi-controller runtime (``jax.distributed``).

The model axis is split over processes: with P processes, process p trains the contiguous
block of models ``[a + p*k, a + (p+1)*k)`` of a wave ``[a, b)`` (``k = (b - a) / P``) on its
own local devices. Models are independent, so training needs no cross-host communication at
all; the only collective is the orbax save of the wave's logits as one global ``jax.Array``
sharded over a ``'model'`` mesh axis (one device per process), which every process joins and
in which each process writes its own shard. The run directory therefore looks exactly like
a single-host run once :func:`jaxsam.pipeline.waves.finalize` has assembled it.

Multi-host start sits behind a flag (big_vision style): :func:`maybe_initialize_distributed`
with ``flag=True`` (the CLI's ``--distributed``, see :mod:`jaxsam.cli_options`) or the
environment variable ``JAXSAM_DISTRIBUTED=1`` calls ``jax.distributed.initialize()``, which
reads the coordinator, process count and process id from the SLURM or TPU-VM environment, or
from the arguments ``coordinator``, ``num_processes`` and ``process_id`` when given.
"""

from __future__ import annotations

import os

import numpy as np

from jaxsam.errors import ConfigError, option

ENV_FLAG = "JAXSAM_DISTRIBUTED"


def wants_distributed(flag: bool = False) -> bool:
    """Whether ``flag`` is set or the environment variable ``JAXSAM_DISTRIBUTED`` is 1/true."""
    return flag or os.environ.get(ENV_FLAG, "").lower() in ("1", "true", "yes")


def maybe_initialize_distributed(
    flag: bool = False,
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Calls ``jax.distributed.initialize`` when asked to; returns whether it did.

    Args:
      flag: start it (as does ``JAXSAM_DISTRIBUTED=1``, see :func:`wants_distributed`).
      coordinator: ``HOST:PORT`` of process 0 (default: ``JAXSAM_COORDINATOR``, else the
        cluster's).
      num_processes: the process count (default: ``JAXSAM_NUM_PROCESSES``, else the cluster's).
      process_id: this process's index (default: ``JAXSAM_PROCESS_ID``, else the cluster's).

    Idempotent: a second call does nothing. On a CPU-only platform it selects the gloo
    collectives, which ``jax.distributed`` needs on CPU (jax 0.10).
    """
    if not wants_distributed(flag):
        return False
    import jax

    if is_initialized():
        return True
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    coordinator = coordinator or os.environ.get("JAXSAM_COORDINATOR")
    num, pid = num_processes, process_id
    if num is None and os.environ.get("JAXSAM_NUM_PROCESSES"):
        num = int(os.environ["JAXSAM_NUM_PROCESSES"])
    if pid is None and os.environ.get("JAXSAM_PROCESS_ID"):
        pid = int(os.environ["JAXSAM_PROCESS_ID"])
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num, process_id=pid
        )
    except (ValueError, RuntimeError) as e:
        raise ConfigError(
            f"jax.distributed.initialize failed ({str(e).splitlines()[0][:200]}); run under "
            f"srun / on every TPU-VM worker, or pass {option('coordinator', 'HOST:PORT')} "
            f"{option('num_processes', 'N')} {option('process_id', 'I')}"
        ) from e
    return True


def is_initialized() -> bool:
    """Whether ``jax.distributed`` is up in this process."""
    import jax

    try:
        from jax._src import distributed as _dist

        return _dist.global_state.client is not None
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return jax.process_count() > 1


def process_index() -> int:
    import jax

    return int(jax.process_index())


def process_count() -> int:
    import jax

    return int(jax.process_count())


def process_block(first: int, stop: int, index: int | None = None, count: int | None = None):
    """This process's contiguous block ``(lo, hi)`` of the models ``[first, stop)``.

    Raises:
      ConfigError: when the number of models is not a multiple of the process count.
    """
    index = process_index() if index is None else index
    count = process_count() if count is None else count
    n = stop - first
    if n <= 0 or n % count:
        raise ConfigError(
            f"models {first}:{stop} ({n} models) cannot be split evenly over {count} processes; "
            f"make the wave size a multiple of {count}"
        )
    k = n // count
    return first + index * k, first + (index + 1) * k


def model_mesh():
    """A 1-D ``'model'`` mesh with one device per process (process order)."""
    import jax
    from jax.sharding import Mesh

    first = {}
    for d in jax.devices():
        first.setdefault(d.process_index, d)
    devices = [first[p] for p in sorted(first)]
    return Mesh(np.array(devices), ("model",))


def global_model_array(local: np.ndarray, global_models: int):
    """Assembles the per-process blocks ``local`` [k, ...] into one global [P*k, ...] array.

    Each process passes its own block (process p holds rows ``p*k:(p+1)*k``); the result is
    sharded over :func:`model_mesh` along axis 0 and can be saved by orbax from all processes.
    """
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    sharding = NamedSharding(model_mesh(), P("model"))
    return jax.make_array_from_process_local_data(
        sharding, np.asarray(local), (global_models, *local.shape[1:])
    )


def barrier(name: str) -> None:
    """Waits until every process reaches ``name`` (no-op with one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
