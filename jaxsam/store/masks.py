"""``RUN/masks``: the membership masks with the pool ids and labels, and their fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from jaxsam.errors import RunDirError
from jaxsam.store.arrays import load_arrays, save_arrays
from jaxsam.store.files import error_words, move_aside_damaged, quiet_failed_reads


def load_masks(path: str | Path) -> dict[str, np.ndarray]:
    """``RUN/masks``: ``keep`` bool [M, N], pool ``ids`` int64 [N], ``labels`` int32 [N]."""
    return load_arrays(Path(path) / "masks", "masks")


def repair_masks(path: Path, keep: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> bool:
    """Checks ``RUN/masks`` against the masks rebuilt from the config; rewrites them if damaged.

    The masks, pool ids and labels are pure functions of the config, and the caller has checked
    the rebuilt ones against the fingerprint in ``run.json``
    (:func:`check_same_study`). So when ``RUN/masks`` cannot be read, or reads back different
    from them, the rebuilt masks are the right ones: they are written in place of the damaged
    directory (the damaged one is moved to ``RUN/damaged/``) with a warning, before the
    resumed run writes anything else.

    Returns:
      Whether the masks were repaired.
    """
    problem = None
    try:
        with quiet_failed_reads():
            stored = load_masks(path)
    except RunDirError as e:
        problem = f"they cannot be read ({error_words(e, 160)})"
    else:
        for key, want, dtype in (
            ("keep", keep, bool),
            ("ids", ids, np.int64),
            ("labels", labels, np.int32),
        ):
            got = stored.get(key)
            if (
                got is None
                or got.shape != np.shape(want)
                or not np.array_equal(got.astype(dtype), np.asarray(want, dtype))
            ):
                problem = f"their '{key}' array differs from the one the config defines"
                break
    if problem is None:
        return False
    moved = move_aside_damaged(path, "masks")
    print(
        f"warning: {path / 'masks'} is damaged: {problem}; the masks are a pure function of the "
        f"config and were rebuilt and rewritten (the damaged copy is in {moved})",
        flush=True,
    )
    save_arrays(path / "masks", {"keep": keep, "ids": ids, "labels": labels})
    return True


def masks_fingerprint(pool_fingerprint: str, keep: np.ndarray) -> str:
    """sha256 over the pool's fingerprint and the mask bits: ties logits to their masks."""
    h = hashlib.sha256(pool_fingerprint.encode())
    h.update(np.packbits(np.asarray(keep, bool), axis=None).tobytes())
    h.update(str(keep.shape).encode())
    return h.hexdigest()
