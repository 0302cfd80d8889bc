"""Memory and time plan of a study, computed on the CPU before anything runs.

Per model (bytes, from ``jax.eval_shape``: nothing is allocated):

- parameters (float32 master weights), BatchNorm statistics, optimizer state;
- one gradient buffer (param-sized) during the step;
- the SAM family: one more param-sized buffer, the perturbed weights ``w + e(w)``. SAM's
  second gradient reuses the gradient buffer, and its two passes run one after the other, so
  activation memory does not double; compute does (two gradient evaluations per step).

Per example: activation memory of one training step (forward + backward), from XLA's compiled
memory analysis of one model's step on the CPU (the temporary buffers), divided by the batch
size. On GPU/TPU the figure differs somewhat (other fusion decisions): treat it as a guide and
keep a margin (``usable`` below takes 90% of the device).

Models per device: ``floor((0.9 * device_memory - pool) / (state + B * activation))`` for the
``vmap`` strategy, where all models' batches are live at once.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxsam.config import Config
from jaxsam.optim import registry

GiB = 1024**3

# Device memory in GiB as the device reports it (roughly).
KNOWN_DEVICES: dict[str, float] = {
    "h100-80gb": 79.1,
    "h200-141gb": 139.8,
    "a100-80gb": 79.2,
    "a100-40gb": 39.4,
    "l4-24gb": 22.0,
    "v100-32gb": 31.7,
    "tpu-v4": 32.0,
    "tpu-v5e": 16.0,
    "tpu-v5p": 95.0,
}

# dataset -> (input shape, classes, train split size, test split size); avoids loading data.
KNOWN_DATASETS: dict[str, tuple[tuple[int, ...], int, int, int]] = {
    "digits": ((8, 8, 1), 10, 1437, 360),
    "mnist": ((28, 28, 1), 10, 60000, 10000),
    "fashion_mnist": ((28, 28, 1), 10, 60000, 10000),
    "cifar10": ((32, 32, 3), 10, 50000, 10000),
    "cifar100": ((32, 32, 3), 100, 50000, 10000),
    "svhn_cropped": ((32, 32, 3), 10, 73257, 26032),
}

NO_TABLE = "no benchmark table: run jaxsam bench train --json > table.json"


@dataclasses.dataclass
class MemoryPlan:
    """Bytes per model and per example, and the step counts of the study."""

    num_params: int
    param_bytes: int
    batch_stats_bytes: int
    opt_state_bytes: int
    grad_bytes: int
    sam_bytes: int
    activation_bytes_per_example: float | None
    activation_source: str
    pool_bytes: int
    num_models: int
    pool_size: int
    batch_size: int
    steps_per_epoch: int
    steps: int
    gradient_evaluations_per_step: int

    @property
    def state_bytes(self) -> int:
        """Per model: params + BatchNorm stats + optimizer state + gradient (+ SAM buffer)."""
        return (
            self.param_bytes
            + self.batch_stats_bytes
            + self.opt_state_bytes
            + self.grad_bytes
            + self.sam_bytes
        )

    @property
    def bytes_per_model(self) -> float:
        """State plus one batch of activations (all models' batches are live under vmap)."""
        act = self.activation_bytes_per_example or 0.0
        return self.state_bytes + act * self.batch_size

    @property
    def model_examples(self) -> int:
        """Model-examples of the whole study: M x steps x B (one gradient pass each)."""
        return self.num_models * self.steps * self.batch_size

    def models_per_device(self, device_gib: float, fraction: float = 0.9) -> int:
        usable = fraction * device_gib * GiB - self.pool_bytes
        return max(0, int(usable // self.bytes_per_model))


def tree_bytes(tree) -> int:
    """Total bytes of a pytree of arrays or ``ShapeDtypeStruct``s."""
    import jax

    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def tree_size(tree) -> int:
    import jax

    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def _pool_shape(config: Config) -> tuple[tuple[int, ...], int, int, bool]:
    """(input shape, classes, pool size, is uint8 image) without loading data where known."""
    d = config.data
    if d.dataset in KNOWN_DATASETS and d.pool_split == "train":
        shape, classes, n_train, _ = KNOWN_DATASETS[d.dataset]
        n = min(d.pool_size or n_train, n_train)
        return shape, classes, n, True
    from jaxsam.data import load_pool

    pool = load_pool(d)
    return pool.input_shape, pool.num_classes, pool.size, pool.kind == "image"


def _steps_per_epoch(config: Config, n: int) -> int:
    from jaxsam.data import make_masks
    from jaxsam.train.batches import steps_per_epoch

    m, b, p = config.masks.models, config.train.batch_size, config.masks.pkeep
    if m * n <= 20_000_000:  # exact: the masks are cheap to draw
        return steps_per_epoch(make_masks(m, n, p, config.masks.seed), b)
    # The largest of M subset sizes ~ N p + 3 sd (hypergeometric-like spread).
    biggest = n * p + 3.0 * math.sqrt(n * p * (1 - p))
    return max(1, math.ceil(min(n, biggest) / b))


def memory_plan(config: Config, *, activations: bool = True) -> MemoryPlan:
    """The memory and step plan of ``config`` (CPU only; nothing is trained)."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxsam.models import make_model
    from jaxsam.optim.factory import from_config

    shape, classes, n, is_image = _pool_shape(config)
    mo, o, t = config.model, config.optim, config.train
    model = make_model(mo.name, classes, width=mo.width, depth=mo.depth, dtype=mo.dtype)
    tx = from_config(o, optax.constant_schedule(o.learning_rate))
    dummy = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), dummy)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    opt_state = jax.eval_shape(tx.init, params)
    param_bytes = tree_bytes(params)
    sam = registry.is_sam_family(o.name)
    act, source = None, "not computed"
    if activations:
        act, source = _activation_bytes(model, params, batch_stats, shape, t.batch_size)
    pool_bytes = n * math.prod(shape) * (1 if is_image else 4) + 4 * n
    spe = _steps_per_epoch(config, n)
    return MemoryPlan(
        num_params=tree_size(params),
        param_bytes=param_bytes,
        batch_stats_bytes=tree_bytes(batch_stats),
        opt_state_bytes=tree_bytes(opt_state),
        grad_bytes=param_bytes,
        sam_bytes=param_bytes if sam else 0,
        activation_bytes_per_example=act,
        activation_source=source,
        pool_bytes=int(pool_bytes),
        num_models=config.masks.models,
        pool_size=n,
        batch_size=t.batch_size,
        steps_per_epoch=spe,
        steps=spe * t.epochs,
        gradient_evaluations_per_step=2 if sam else 1,
    )


def _activation_bytes(model, params, batch_stats, shape, batch_size: int):
    """Temporary bytes per example of one model's forward+backward, from XLA on the CPU."""
    import jax
    import jax.numpy as jnp
    import optax

    has_bn = bool(jax.tree.leaves(batch_stats))

    def loss(p, bs, x, y):
        variables = {"params": p}
        if has_bn:
            variables["batch_stats"] = bs
            logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        else:
            logits = model.apply(variables, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    x = jax.ShapeDtypeStruct((batch_size, *shape), jnp.float32)
    y = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    try:
        cpu = jax.devices("cpu")[0]
        with jax.default_device(cpu):
            compiled = jax.jit(jax.grad(loss)).lower(params, batch_stats, x, y).compile()
        stats = compiled.memory_analysis()
        temp = float(stats.temp_size_in_bytes)
    except Exception as e:  # memory analysis is not available on every jax build
        return None, f"unavailable ({type(e).__name__})"
    return temp / batch_size, "XLA memory analysis of one CPU step (temporaries / batch)"


def device_table(plan: MemoryPlan, device_gib: float | None = None) -> list[tuple[str, float, int]]:
    """(device, GiB, models that fit) for ``device_gib`` or every known device."""
    if device_gib is not None:
        return [("given", device_gib, plan.models_per_device(device_gib))]
    return [(k, g, plan.models_per_device(g)) for k, g in KNOWN_DEVICES.items()]


def time_estimates(plan: MemoryPlan, model_name: str, sam: bool, rows: list[dict]) -> list[dict]:
    """Estimated training time of the study from ``jaxsam bench train --json`` rows.

    Uses the rows for ``model_name`` (every backend; the ``auto`` strategy when present, else
    the fastest). A row measured with SGD is doubled for the SAM family (two gradient
    evaluations per step). The benchmark's input size may differ from this study's: the
    figure scales with the per-example cost.
    """
    by_backend: dict[str, dict] = {}
    for row in rows:
        if row.get("model") != model_name or not row.get("model_examples_per_s"):
            continue
        backend = str(row.get("backend", "?"))
        best = by_backend.get(backend)
        if (
            row.get("strategy") == "auto"
            or best is None
            or (
                best.get("strategy") != "auto"
                and row["model_examples_per_s"] > best["model_examples_per_s"]
            )
        ):
            by_backend[backend] = row
    out = []
    for backend, row in sorted(by_backend.items()):
        rate = float(row["model_examples_per_s"])
        measured_sam = registry.is_sam_family(str(row.get("optimizer", "sgd")))
        factor = 2.0 if sam and not measured_sam else 1.0
        seconds = plan.model_examples * factor / rate
        out.append(
            {
                "backend": backend,
                "strategy": row.get("strategy"),
                "model_examples_per_s": rate,
                "sam_factor": factor,
                "seconds": seconds,
            }
        )
    return out


def human_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
