"""Memory and time plan of a study, computed on the CPU before anything runs.

Everything is built on the trainer's own pieces: its setup (:func:`jaxsam.train.setup.make_setup`:
model, optimizer, schedule) and its one-model training step, measured by the estimator the
``auto`` strategy also uses (:func:`jaxsam.train.memory.step_memory`). Nothing is allocated or
trained, and known datasets are not even loaded (their shapes are in :data:`KNOWN_DATASETS`).

Per model (bytes, from ``jax.eval_shape`` of the trainer's initialisation):

- parameters (float32 master weights), BatchNorm statistics, optimizer state;
- one gradient buffer (param-sized) during the step;
- the SAM family: one more param-sized buffer, the perturbed weights ``w + e(w)``. SAM's
  second gradient reuses the gradient buffer, and its two passes run one after the other, so
  activation memory does not double; compute does (two gradient evaluations per step).

Per example: activation memory of one training step, from XLA's compiled memory analysis of
the trainer's forward and backward pass of one model on the CPU (its temporary buffers),
divided by the batch size. On GPU/TPU the figure differs somewhat
(other fusion decisions): treat it as a guide and keep a margin (``usable`` below takes 90% of
the device).

Models per device: ``floor((0.9 * device_memory - pool) / (state + B * activation))`` for the
``vmap`` strategy, where all models' batches are live at once.

DP-SGD (``optim.dp``): per-example gradients are computed ``optim.dp.microbatch_size``
examples at a time (default: the whole batch). Per model that holds one gradient per example
of the microbatch plus the noise tree (``dp_bytes = (microbatch + 1) * params``), and the
activations of one microbatch instead of one batch; the batch has ``capacity`` slots with
Poisson sampling (the expected size B plus a margin, see docs/recipes.md). A smaller microbatch
trades memory for sequential steps.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxsam.config import Config
from jaxsam.data.pool import Pool
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


@dataclasses.dataclass
class MemoryEstimate:
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
    # DP-SGD: per-example gradients of one microbatch + the noise tree, per model (0 without).
    dp_bytes: int = 0
    # DP-SGD: examples whose activations and gradients are live at once (None without DP).
    dp_microbatch: int | None = None
    # DP-SGD: example slots per step (the Poisson capacity, or B when shuffled).
    dp_capacity: int | None = None

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
    def live_examples(self) -> int:
        """Examples whose activations are live at once per model: the batch, or the DP
        microbatch."""
        return self.dp_microbatch if self.dp_microbatch is not None else self.batch_size

    @property
    def bytes_per_model(self) -> float:
        """State plus one batch (or DP microbatch) of activations, plus DP's per-example
        gradients (all models' batches are live under vmap)."""
        act = self.activation_bytes_per_example or 0.0
        return self.state_bytes + act * self.live_examples + self.dp_bytes

    @property
    def model_examples(self) -> int:
        """Model-examples of the whole study: M x steps x B (one gradient pass each)."""
        return self.num_models * self.steps * self.batch_size

    def models_per_device(self, device_gib: float, fraction: float = 0.9) -> int:
        usable = fraction * device_gib * GiB - self.pool_bytes
        return max(0, int(usable // self.bytes_per_model))


def pool_shapes(config: Config) -> Pool:
    """The pool as the trainer sees it, without loading data where the dataset is known.

    For a dataset in :data:`KNOWN_DATASETS` (pool from its train split) the arrays are
    ``jax.ShapeDtypeStruct``s (uint8 images, int32 labels) with unit normalisation: shapes
    are all the trainer's setup and step need to be built. Other datasets are loaded. An
    audited run's added canaries (``noise``, ``duplicate``) are in the pool either way, so
    the estimates count them.
    """
    import jax

    from jaxsam.data import canaries

    d = config.data
    if d.dataset not in KNOWN_DATASETS or d.pool_split != "train":
        from jaxsam.data import load_pool

        return canaries.add_canaries(load_pool(d), config.audit)
    shape, classes, n_train, _ = KNOWN_DATASETS[d.dataset]
    n = min(d.pool_size or n_train, n_train) + canaries.num_added(config.audit)
    x = jax.ShapeDtypeStruct((n, *shape), np.uint8)
    y = jax.ShapeDtypeStruct((n,), np.int32)
    empty = jax.ShapeDtypeStruct((0, *shape), np.uint8)
    channels = shape[-1]
    return Pool(
        x=x,
        y=y,
        ids=y,
        test_x=empty,
        test_y=jax.ShapeDtypeStruct((0,), np.int32),
        test_ids=jax.ShapeDtypeStruct((0,), np.int64),
        num_classes=classes,
        mean=np.zeros(channels, np.float32),
        std=np.ones(channels, np.float32),
        kind="image",
        dataset=d.dataset,
        pool_split="train",
        test_split=None,
    )


def steps_per_epoch_estimate(config: Config, n: int) -> int:
    """Steps per epoch of ``config`` on a pool of ``n`` examples (without the added canaries,
    which this counts itself), without keeping the masks."""
    from jaxsam.data import canaries, make_masks
    from jaxsam.data.masks import steps_per_epoch

    m, b, p = config.masks.models, config.train.batch_size, config.masks.pkeep
    if m * n <= 20_000_000:  # exact: the masks are cheap to draw (with the run's canaries)
        keep = make_masks(m, n, p, config.masks.seed, config.masks.design)
        return steps_per_epoch(canaries.audit_masks(keep, config.audit), b)
    # The largest of M subset sizes ~ N p + 3 sd (hypergeometric-like spread).
    biggest = n * p + 3.0 * math.sqrt(n * p * (1 - p))
    return max(1, math.ceil(min(n, biggest) / b))


def memory_estimate(config: Config, *, activations: bool = True) -> MemoryEstimate:
    """The memory and step plan of ``config`` (CPU only; nothing is trained): the ``memory``
    of its study plan made from the dataset's shapes (:func:`jaxsam.plan.make_plan`).

    Args:
      config: the study's config.
      activations: compile the trainer's step for the activation memory (a few seconds);
        False leaves ``activation_bytes_per_example`` None.
    """
    from jaxsam.plan.study import make_plan

    return make_plan(config, load_data=False, activations=activations).memory


def estimate(config: Config, setup, pool: Pool, *, activations: bool) -> tuple[MemoryEstimate, int]:
    """The memory of ``config``'s study with ``setup`` on ``pool``, and one model's checkpointed
    state in bytes (params, BatchNorm statistics, optimizer state: what the disk estimate
    counts).

    Args:
      config: the study's config.
      setup: its training setup (:func:`jaxsam.train.setup.make_setup`).
      pool: the pool, or one of ``ShapeDtypeStruct`` arrays (:func:`pool_shapes`).
      activations: compile one training pass on the CPU for the activation memory.
    """
    import jax

    from jaxsam.train.memory import dp_bytes, step_memory, tree_bytes, tree_size

    n, t = pool.size, config.train
    spe = setup.steps_per_epoch
    with jax.default_device(jax.devices("cpu")[0]):
        mem = step_memory(setup, pool, t.batch_size, compile_step=activations)
    param_bytes = tree_bytes(mem.params)
    sam = registry.is_sam_family(config.optim.name)
    act = None if mem.temp_bytes is None else mem.temp_bytes / t.batch_size
    is_image = pool.kind == "image"
    pool_bytes = n * math.prod(pool.input_shape) * (1 if is_image else 4) + 4 * n
    dp = setup.dp  # DP-SGD's static shape (capacity, microbatch), or None
    plan = MemoryEstimate(
        num_params=tree_size(mem.params),
        param_bytes=param_bytes,
        batch_stats_bytes=tree_bytes(mem.batch_stats),
        opt_state_bytes=tree_bytes(mem.opt_state),
        grad_bytes=param_bytes,
        sam_bytes=param_bytes if sam else 0,
        activation_bytes_per_example=act,
        activation_source=mem.note + ("" if act is None else " on the CPU (temporaries / batch)"),
        pool_bytes=int(pool_bytes),
        num_models=config.masks.models,
        pool_size=n,
        batch_size=t.batch_size,
        steps_per_epoch=spe,
        steps=spe * t.epochs,
        gradient_evaluations_per_step=2 if sam else 1,
        dp_bytes=dp_bytes(dp.microbatch_size, mem.params) if dp is not None else 0,
        dp_microbatch=dp.microbatch_size if dp is not None else None,
        dp_capacity=dp.capacity if dp is not None else None,
    )
    return plan, mem.state_bytes


def device_table(
    plan: MemoryEstimate, device_gib: float | None = None
) -> list[tuple[str, float, int]]:
    """(device, GiB, models that fit) for ``device_gib`` or every known device."""
    if device_gib is not None:
        return [("given", device_gib, plan.models_per_device(device_gib))]
    return [(k, g, plan.models_per_device(g)) for k, g in KNOWN_DEVICES.items()]


def time_estimates(
    plan: MemoryEstimate, model_name: str, sam: bool, rows: list[dict]
) -> list[dict]:
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
