"""Shape and value checks shared by the attacks (raise DataError with the fix)."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsam.attacks import _kernels
from jaxsam.errors import ConfigError, DataError, option


def check_logits(logits: Any, labels: Any, keep: Any) -> tuple[int, int, int, int]:
    """Checks ``logits [M, N, A, C]``, ``labels [N]``, ``keep [M, N]``; returns (M, N, A, C)."""
    if getattr(logits, "ndim", None) != 4:
        raise DataError(
            f"logits must be [M, N, A, C], got shape {getattr(logits, 'shape', None)}; "
            "add a query axis of size 1 if you have a single query"
        )
    m, n, a, c = logits.shape
    if np.shape(labels) != (n,):
        raise DataError(
            f"labels must be [N={n}], got shape {np.shape(labels)}; pass one label per example"
        )
    check_keep(keep, m, n)
    if c < 2:
        raise DataError(f"logits need at least 2 classes, got C={c}; pass the full logit vector")
    return m, n, a, c


def check_keep(keep: Any, m: int, n: int) -> np.ndarray:
    """Checks that ``keep`` is a boolean-like ``[M, N]`` mask with M >= 2; returns it as bool."""
    keep = np.asarray(keep)
    if keep.shape != (m, n):
        raise DataError(
            f"keep must be [M={m}, N={n}], got shape {keep.shape}; pass the run's masks"
        )
    if n == 0:
        raise DataError("there are no examples to score (N=0); pass the pool's masks and signal")
    if keep.dtype != bool:
        if not np.isin(keep, (0, 1)).all():
            raise DataError(
                "keep must be boolean (True = model trained on example); got other values"
            )
        keep = keep.astype(bool)
    if m < 2:
        raise DataError(f"leave-one-out scoring needs M >= 2 models, got M={m}; train more models")
    return keep


def check_signal(signal: Any, keep: Any, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Checks ``signal [M, N, A]`` (finite, unless ``finite=False``: the caller's own pass
    checks it, :func:`check_finite`) and ``keep [M, N]``; returns float32 and bool arrays."""
    signal = np.asarray(signal)
    if signal.ndim != 3:
        raise DataError(f"signal must be [M, N, A], got shape {signal.shape}; add a query axis")
    keep = check_keep(keep, signal.shape[0], signal.shape[1])
    signal = signal.astype(np.float32, copy=False)
    if finite:
        check_finite(signal)
    return signal, keep


def check_finite(signal: np.ndarray, finite: bool | None = None) -> None:
    """Raises DataError when the float32 ``signal`` has a NaN or infinite value (``finite``:
    what a pass over it already found; None: look)."""
    if finite is None:
        finite = _kernels.all_finite(signal) if _kernels.available() else np.isfinite(signal).all()
    if not finite:
        raise DataError(f"signal has {_where_nonfinite(signal)}")


def _where_nonfinite(signal: np.ndarray, limit: int = 3) -> str:
    """Words for where ``signal`` [M, N, ...] is not finite: how many values, the models (the
    first ``limit``) and each one's first example, and the fix. Runs only on that error path."""
    bad = ~np.isfinite(signal)
    if bad.ndim < 2:
        return f"{int(bad.sum())} NaN or infinite value(s); check the logits"
    models = np.nonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0]
    firsts = [
        f"{int(m)} (first at example {int(np.argwhere(bad[m])[0][0])})" for m in models[:limit]
    ]
    more = f" and {models.size - limit} more" if models.size > limit else ""
    noun = "model" if models.size == 1 else "models"
    return (
        f"{int(bad.sum())} NaN or infinite value(s) for {noun} {', '.join(firsts)}{more} "
        "(indices among the models scored): their logits diverged or are damaged; recompute "
        f"them, or leave them out with {option('exclude_models', 'MODELS')}"
    )


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is unknown; choose one of {', '.join(choices)}")
