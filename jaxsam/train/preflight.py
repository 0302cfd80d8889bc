"""Checks that run before a run directory is created or replaced: everything that can fail early.

:func:`check_study` is called with the config, the loaded pool and the masks, before the run
directory is touched (``jaxsam train``, ``--overwrite``, ``wave init``). It refuses:

- data the config cannot train on: query views beyond the identity (``data.query_augment`` 2
  or 18 mirror and shift images) or a convolutional model on tabular data;
- labels of the wrong dtype or outside ``[0, num_classes)``, in the pool or the held-out split;
- a model, optimizer or DP-SGD setup that cannot be built (:func:`make_setup`);
- a disk that cannot hold what the run will write (:func:`estimate_disk`).

The same estimate is checked again by the training loop when a run (or a wave) starts
training, less what its checkpoints already occupy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxsam import store
from jaxsam.config import Config
from jaxsam.data.pool import Pool
from jaxsam.errors import ConfigError, DataError
from jaxsam.models import CONV_MODELS
from jaxsam.store import checkpoints as ckpt_lib

_MIB = 2**20
# Orbax writes metadata files beside the arrays and the file system rounds every file up to
# its block size: a fixed allowance per orbax directory on top of the array bytes.
ORBAX_OVERHEAD_BYTES = _MIB
ORBAX_OVERHEAD_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class DiskEstimate:
    """Bytes a run will write at its peak.

    Attributes:
      checkpoints: ``KEEP_CHECKPOINTS + 1`` checkpoints (while a new one is written, the
        previous ones stay until it is whole).
      logits: float32 logits of the pool and the held-out points with their labels; twice for a
        study trained in waves (each wave's logits, then the assembled ones).
      masks: the bool [M, N] masks, pool ids and labels.
    """

    checkpoints: int
    logits: int
    masks: int

    @property
    def total(self) -> int:
        return self.checkpoints + self.logits + self.masks

    def describe(self) -> str:
        return (
            f"{self.checkpoints / _MIB:.1f} MiB of checkpoints, {self.logits / _MIB:.1f} MiB of "
            f"logits, {self.masks / _MIB:.1f} MiB of masks"
        )


def _orbax(nbytes: float) -> int:
    return int(nbytes * (1 + ORBAX_OVERHEAD_FRACTION)) + ORBAX_OVERHEAD_BYTES


def estimate_disk(
    config: Config,
    pool: Pool,
    num_models: int,
    state_bytes_per_model: int,
    *,
    checkpoint_models: int | None = None,
    waves: bool = False,
    masks: bool = True,
) -> DiskEstimate:
    """What a run of ``num_models`` models of ``config`` on ``pool`` writes, at its peak.

    Args:
      config: the run config (``data.query_augment`` views per point).
      pool: the pool (N points, T held-out points, C classes).
      num_models: M, the models whose logits are written.
      state_bytes_per_model: bytes of one model's params, BatchNorm statistics and optimizer
        state (:func:`state_bytes_per_model`).
      checkpoint_models: models in one checkpoint (a wave's size; default ``num_models``).
      waves: the logits are written twice (per wave, then assembled).
      masks: count the masks (False when they are already on disk).
    """
    n, t = pool.size, int(pool.test_x.shape[0])
    a, c = config.data.query_augment, pool.num_classes
    per_ckpt = (checkpoint_models or num_models) * state_bytes_per_model
    logits = _orbax(4 * num_models * (n + t) * a * c + 4 * (n + t))
    return DiskEstimate(
        checkpoints=(ckpt_lib.KEEP_CHECKPOINTS + 1) * _orbax(per_ckpt),
        logits=logits * (2 if waves else 1),
        masks=_orbax(num_models * n + 12 * n) if masks else 0,
    )


def state_bytes_per_model(setup, pool: Pool) -> int:
    """Bytes of one model's training state (shapes only; nothing is allocated)."""
    from jaxsam.train.memory import step_memory

    return step_memory(setup, pool, 1, compile_step=False).state_bytes


def check_disk(path: Path, estimate: DiskEstimate, *, freed: int = 0, present: int = 0) -> None:
    """Raises :class:`jaxsam.errors.RunDirError` when ``path``'s disk cannot take ``estimate``.

    Args:
      path: the run directory (or where it will be created).
      estimate: from :func:`estimate_disk`.
      freed: bytes that will be freed first (an old run that ``--overwrite`` replaces).
      present: bytes of the estimate already on disk (a resumed run's checkpoints).
    """
    need = max(estimate.total - freed - present, 0)
    what = estimate.describe()
    if freed:
        what += f", less {freed / _MIB:.1f} MiB of the run it replaces"
    if present:
        what += f", less {present / _MIB:.1f} MiB already written"
    store.check_free_space(path, need, what)


def check_compatible(config: Config, pool: Pool) -> None:
    """Refuses data the config cannot train on, and labels the models cannot learn.

    Raises:
      ConfigError: query views or a convolutional model on tabular data.
      DataError: labels that are not integers or lie outside ``[0, num_classes)``.
    """
    d, name = config.data, pool.dataset
    if pool.kind != "image":
        if d.query_augment != 1:
            raise ConfigError(
                f"data.query_augment = {d.query_augment} queries mirrored and shifted images, "
                f"but {name} is tabular ([N, {int(np.prod(pool.input_shape))}] features); set "
                "data.query_augment = 1"
            )
        if config.model.name in CONV_MODELS:
            raise ConfigError(
                f"model.name = {config.model.name!r} is a convolutional net for images "
                f"[N, H, W, C], but {name} is tabular; use model.name = 'mlp'"
            )
    c = pool.num_classes
    for what, y in (("pool", pool.y), ("held-out", pool.test_y)):
        if not np.issubdtype(np.asarray(y).dtype, np.integer):
            raise DataError(
                f"{name}: the {what} labels are {np.asarray(y).dtype}, not integers; store "
                "class indices 0..C-1"
            )
        if y.size and (int(y.min()) < 0 or int(y.max()) >= c):
            raise DataError(
                f"{name}: the {what} labels must lie in [0, {c}) (num_classes = {c}); got "
                f"{int(y.min())}..{int(y.max())}: fix the labels or num_classes"
            )


def check_study(
    config: Config,
    pool: Pool,
    keep: np.ndarray,
    out: Path,
    *,
    freed: int = 0,
    present: int = 0,
    wave_size: int | None = None,
) -> DiskEstimate:
    """Every check before ``out`` is created or replaced (see the module docstring).

    Args:
      config: the validated config; pool, keep: from :func:`jaxsam.pipeline.build_study`.
      out: the run directory.
      freed: bytes of the old run that ``--overwrite`` replaces.
      present: bytes of the estimate already on disk (resume).
      wave_size: models per wave for a study trained in waves (None: one run).

    Returns:
      The disk estimate that was checked.
    """
    from jaxsam.train.setup import make_setup

    check_compatible(config, pool)
    setup = make_setup(config, pool, keep)  # model, optimizer, DP: errors before any write
    m = int(keep.shape[0])
    estimate = estimate_disk(
        config,
        pool,
        m,
        state_bytes_per_model(setup, pool),
        checkpoint_models=min(wave_size, m) if wave_size else None,
        waves=wave_size is not None,
    )
    check_disk(Path(out), estimate, freed=freed, present=present)
    return estimate
