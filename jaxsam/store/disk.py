"""What a run will write, and whether the disk can take it; what a directory occupies.

:func:`estimate_disk` is a pure function of the config, the pool's shapes and the models'
state size: the plan step (:func:`jaxsam.plan.make_plan`) checks it (:func:`check_disk`)
before anything is written, and the training loop checks it again when a run (or a wave)
starts training, less what its checkpoints already occupy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from jaxsam import hooks
from jaxsam.errors import RunDirError, option

if TYPE_CHECKING:
    from jaxsam.config import Config
    from jaxsam.data.pool import Pool

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
        state (:func:`jaxsam.plan.memory.estimate`).
      checkpoint_models: models in one checkpoint (a wave's size; default ``num_models``).
      waves: the logits are written twice (per wave, then assembled).
      masks: count the masks (False when they are already on disk).
    """
    from jaxsam.store.checkpoints import KEEP_CHECKPOINTS  # local: checkpoints import jax

    n, t = pool.size, int(pool.test_x.shape[0])
    a, c = config.data.query_augment, pool.num_classes
    per_ckpt = (checkpoint_models or num_models) * state_bytes_per_model
    logits = _orbax(4 * num_models * (n + t) * a * c + 4 * (n + t))
    return DiskEstimate(
        checkpoints=(KEEP_CHECKPOINTS + 1) * _orbax(per_ckpt),
        logits=logits * (2 if waves else 1),
        masks=_orbax(num_models * n + 12 * n) if masks else 0,
    )


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
    check_free_space(path, need, what)


def check_free_space(path: Path, need_bytes: int, what: str) -> None:
    """Raises :class:`RunDirError` when the disk holding ``path`` has under ``need_bytes`` free.

    Args:
      path: an existing directory on the disk to check.
      need_bytes: the estimated bytes the run will still write.
      what: what those bytes are, for the message.
    """
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:  # the directory may not exist yet
        probe = probe.parent
    free = hooks.fire("free_space", shutil.disk_usage(probe).free, path=path)
    if free < need_bytes:
        raise RunDirError(
            f"not enough disk space in {path}: the run needs about {need_bytes / 2**20:.1f} MiB "
            f"({what}) but {free / 2**20:.1f} MiB are free; free space or choose another "
            f"{option('out', None)}"
        )


def dir_bytes(path: str | Path) -> int:
    """Bytes the files under ``path`` occupy on disk (links not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                total += st.st_blocks * 512
    return total
