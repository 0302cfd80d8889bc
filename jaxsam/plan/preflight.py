"""Checks that run before a run directory is created or replaced: everything that can fail early.

:func:`check_study` is called with the config, the loaded pool and the masks, before the run
directory is touched (``jaxsam train``, ``--overwrite``, ``wave init``). It refuses:

- data the config cannot train on: query views beyond the identity (``data.query_augment`` 2
  or 18 mirror and shift images) or a convolutional model on tabular data;
- labels of the wrong dtype or outside ``[0, num_classes)``, in the pool or the held-out split;
- a model, optimizer or DP-SGD setup that cannot be built (:func:`jaxsam.train.setup.make_setup`);
- a disk that cannot hold what the run will write (:func:`jaxsam.store.estimate_disk`).

The same estimate is checked again by the training loop when a run (or a wave) starts
training, less what its checkpoints already occupy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxsam.config import Config
from jaxsam.data.pool import Pool
from jaxsam.plan.checks import check_compatible
from jaxsam.store.disk import DiskEstimate, check_disk, estimate_disk
from jaxsam.train.memory import step_memory
from jaxsam.train.setup import make_setup


def state_bytes_per_model(setup, pool: Pool) -> int:
    """Bytes of one model's training state (shapes only; nothing is allocated)."""
    return step_memory(setup, pool, 1, compile_step=False).state_bytes


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
