"""Checks of the values a run's ``logits/`` folder holds: shapes, label ranges, finiteness.

The digests (``digests.json``) catch a file changed after the run was written; these checks
catch what a damaged run read past them (``verify=False``, or an old run without digests)
would otherwise feed to the attacks: held-out logits of another number of models, labels
outside ``[0, C)``, NaN logits of a model that run.json does not list as failed, or more
query names than views. Each refusal is one line naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from jaxsam.errors import RunDirError

_DAMAGED = "the run is damaged: restore it from a copy or retrain it"


def nonfinite_models(
    blocks: Iterable[tuple[int, np.ndarray]], skip: Sequence[int] = ()
) -> list[tuple[int, int, int]]:
    """``(model, count, first example)`` of each model with a NaN or infinite value.

    Args:
      blocks: ``(first model, array [b, R, ...])`` pairs covering the models in order (e.g.
        :meth:`jaxsam.store.blocks.ModelBlocks.blocks`).
      skip: models not to check (failed models, whose logits are NaN by design).
    """
    found = []
    skipped = set(int(i) for i in skip)
    for a, block in blocks:
        for i in range(block.shape[0]):
            if a + i in skipped:
                continue
            bad = ~np.isfinite(block[i])
            if bad.any():
                found.append((a + i, int(bad.sum()), int(np.argwhere(bad)[0][0])))
    return found


def describe_nonfinite(found: Sequence[tuple[int, int, int]], limit: int = 3) -> str:
    """Words for :func:`nonfinite_models`'s result, e.g. ``model 3 (first at example 7)``."""
    parts = [f"{m} (first at example {ex})" for m, _, ex in found[:limit]]
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    total = sum(count for _, count, _ in found)
    noun = "model" if len(found) == 1 else "models"
    return f"{total} NaN or infinite value(s) for {noun} {', '.join(parts)}{more}"


def _check_labels(labels: np.ndarray, where: Path, name: str, classes: int) -> None:
    if labels.size == 0:
        return
    if not np.issubdtype(labels.dtype, np.integer):
        raise RunDirError(f"{where} holds {name} of dtype {labels.dtype}, not integers; {_DAMAGED}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= classes:
        bad = lo if lo < 0 else hi
        raise RunDirError(
            f"{where} holds {name} with label {bad}, outside [0, {classes}) for logits of "
            f"{classes} classes; {_DAMAGED}"
        )


def check_logit_arrays(
    path: Path, arrays: dict[str, np.ndarray], views: int, failed: Sequence[int]
) -> None:
    """Refuses the arrays of ``path/logits`` when their shapes, labels or values are wrong.

    Args:
      path: the run directory.
      arrays: ``logits`` [M, N, A, C] (already checked against the masks), ``labels`` [N],
        ``test_logits`` [M, T, A, C], ``test_labels`` [T].
      views: the number of query names in ``logits.json`` (A).
      failed: run.json's failed models, whose logits may be NaN.

    Raises:
      RunDirError: one line naming the file, what is wrong and the fix.
    """
    where = path / "logits"
    lg, tl, tlab = arrays["logits"], arrays["test_logits"], arrays["test_labels"]
    m, _, a, c = lg.shape
    if views != a:
        raise RunDirError(
            f"{path / 'logits.json'} names {views} query view(s) but {where} holds logits of "
            f"{a}; {_DAMAGED}"
        )
    if tl.ndim != 4 or tl.shape[0] != m or tl.shape[2:] != (a, c):
        raise RunDirError(
            f"{where} holds held-out logits (test_logits) of shape {tl.shape} but pool logits "
            f"of shape {lg.shape}: they must be [M={m}, T, A={a}, C={c}]; {_DAMAGED}"
        )
    if tlab.shape != (tl.shape[1],):
        raise RunDirError(
            f"{where} holds held-out labels (test_labels) of shape {tlab.shape} for "
            f"{tl.shape[1]} held-out examples; {_DAMAGED}"
        )
    _check_labels(arrays["labels"], where, "pool labels", c)
    _check_labels(tlab, where, "held-out labels (test_labels)", c)
    for name, arr in (("pool logits", lg), ("held-out logits (test_logits)", tl)):
        found = nonfinite_models([(0, arr)], skip=failed)  # one model at a time
        if found:
            raise RunDirError(
                f"{where} holds {name} with {describe_nonfinite(found)}, not listed as failed "
                "in run.json: the model diverged or the file is damaged; restore the run from "
                "a copy or retrain it (train.on_divergence = 'exclude' drops diverged models)"
            )
