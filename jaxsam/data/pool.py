"""The Pool: the examples membership is defined over, in a fixed order, with stable ids."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from jaxsam.errors import DataError


@dataclasses.dataclass(frozen=True)
class Pool:
    """Pool examples plus held-out test points that no model trains on.

    Attributes:
      x: [N, H, W, C] uint8 images or [N, D] float32 features.
      y: [N] int32 labels in [0, num_classes).
      ids: [N] int64 stable ids (the index within ``origin_split`` of the source).
      test_x, test_y, test_ids: held-out points, same layout ([T, ...], may have T = 0).
      num_classes: C.
      mean, std: [channels] float32 per-channel normalisation (images: of x / 255).
      kind: ``image`` or ``tabular``.
      dataset: source name; ``pool_split`` / ``test_split``: the split names they came from.
    """

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_ids: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    kind: str
    dataset: str
    pool_split: str
    test_split: str | None

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def fingerprint(self) -> str:
        """sha256 over dataset name, ids and labels: detects a pool that changed under a run."""
        h = hashlib.sha256()
        h.update(f"{self.dataset}/{self.pool_split}".encode())
        h.update(np.ascontiguousarray(self.ids, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.y, dtype=np.int32).tobytes())
        return h.hexdigest()

    def inputs_fingerprint(self) -> str:
        """sha256 over the inputs: pool and held-out features (dtype, shape, bytes), held-out
        ids and labels. :meth:`fingerprint` covers what membership is defined over (ids and
        labels); this covers what the models see, so features that changed under a run are
        caught too."""
        h = hashlib.sha256()
        for a in (self.x, self.test_x, self.test_ids, self.test_y):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a)
        return h.hexdigest()

    def origin(self) -> dict:
        """JSON-able description of where the pool came from (stored in the run directory)."""
        return {
            "dataset": self.dataset,
            "pool_split": self.pool_split,
            "test_split": self.test_split,
            "pool_size": self.size,
            "test_size": int(self.test_x.shape[0]),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "kind": self.kind,
            "fingerprint": self.fingerprint(),
            "inputs_fingerprint": self.inputs_fingerprint(),
        }


def channel_stats(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of images scaled to [0, 1] (or of tabular features).

    Returns two float32 arrays [channels] ([D] for tabular data); std is floored at 1e-6.
    """
    if kind != "image":  # two-pass: exact for features with a large mean
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        mean = flat.mean(axis=0)
        std = np.maximum(flat.std(axis=0), 1e-6)
        return mean.astype(np.float32), std.astype(np.float32)
    flat = x.reshape(-1, x.shape[-1])
    scale = 255.0
    # float64 accumulators without a float64 copy of the data.
    mean = flat.mean(axis=0, dtype=np.float64)
    mean_sq = np.einsum("nc,nc->c", flat, flat, dtype=np.float64) / max(flat.shape[0], 1)
    var = np.maximum(mean_sq - mean**2, 0.0)
    mean, std = mean / scale, np.maximum(np.sqrt(var) / scale, 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def _check_arrays(x: np.ndarray, y: np.ndarray, what: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{what}: {x.shape[0]} inputs but {y.shape[0]} labels; images and labels must have "
            "the same length (check the source files)"
        )
    if y.ndim != 1:
        raise DataError(f"{what}: labels must be 1-D [N], got shape {y.shape}")


def check_finite(x: np.ndarray, what: str) -> None:
    """Refuses inputs with NaN or infinite values, naming how many and the first one.

    Args:
      x: [N, ...] inputs (integer images pass at once: they cannot hold NaN).
      what: the dataset and split, for the message.

    Raises:
      DataError: otherwise training would report the first NaN loss as a divergence and blame
        the learning rate.
    """
    if not np.issubdtype(x.dtype, np.floating) or x.size == 0:
        return
    bad = ~np.isfinite(x.reshape(x.shape[0], -1))
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        raise DataError(
            f"{what}: {int(bad.sum()):,} input value(s) are NaN or infinite (the first at row "
            f"{row}, feature {col}); clean or impute the features (e.g. numpy.nan_to_num, or "
            "drop those rows) before training"
        )


def select_indices(
    n_pool: int,
    pool_size: int | None,
    n_test: int,
    test_size: int | None,
    *,
    seed: int = 0,
    same_split: bool = False,
    what: tuple[str, str] = ("pool split", "test split"),
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded choice of the pool and test rows, each kept in source order.

    With ``same_split`` the pool and the test points come from one split of ``n_pool`` rows:
    the test rows are drawn from the rows the pool did not take, so no test point is ever a
    pool point (``n_test`` is ignored; ``test_size=None`` then means all remaining rows).

    Args:
      n_pool: rows in the pool's split.
      pool_size: rows to take (``None``: all of them).
      n_test: rows in the test split.
      test_size: test rows to take (``None``: all of them).
      seed: the choice is a pure function of the sizes and the seed.
      same_split: pool and test share one split (see above).
      what: split names for error messages.

    Returns:
      (sel, tsel): sorted int64 row indices [pool_size] and [test_size].
    """
    rng = np.random.default_rng(seed)

    def subsample(n_total: int, n: int | None, split: str) -> np.ndarray:
        if n is None:
            return np.arange(n_total, dtype=np.int64)
        if n > n_total:
            raise DataError(
                f"asked for {n} examples from {split}, which has only {n_total}; "
                f"set the size to at most {n_total}"
            )
        return np.sort(rng.choice(n_total, size=n, replace=False)).astype(np.int64)

    sel = subsample(n_pool, pool_size, what[0])
    if not same_split:
        return sel, subsample(n_test, test_size, what[1])
    rest = np.setdiff1d(np.arange(n_pool, dtype=np.int64), sel)
    tsel = rest[subsample(rest.size, test_size, f"{what[1]} (rows not in the pool)")]
    return sel, tsel


def _check_splits(x, y, test_x, test_y, dataset: str, pool_split: str, test_split):
    """Checks the pool and held-out arrays (none: an empty split); returns the held-out ones."""
    _check_arrays(x, y, f"{dataset}/{pool_split}")
    if test_x is None:
        test_x = x[:0]
        test_y = y[:0]
    _check_arrays(test_x, test_y, f"{dataset}/{test_split}")
    if test_x.shape[0] and test_x.shape[1:] != x.shape[1:]:
        raise DataError(
            f"{dataset}: test inputs have shape {test_x.shape[1:]} but pool inputs "
            f"{x.shape[1:]}; both splits must share one input shape"
        )
    if x.shape[0] == 0:
        raise DataError(f"{dataset}/{pool_split} is empty; choose a split with examples")
    return test_x, test_y


def check_held_out_classes(
    y: np.ndarray, test_y: np.ndarray, pool_what: str, test_what: str, fix: str
) -> None:
    """Refuses held-out labels above every pool label, where the class count is inferred.

    The number of classes of a source that does not store it is the pool's largest label + 1;
    a held-out label above it is a class no model trains on (it used to widen the logits and
    give a held-out accuracy of 0).

    Args:
      y: [N] pool labels; test_y: [T] held-out labels.
      pool_what, test_what: what the two label arrays are, for the message.
      fix: what to do instead (the end of the message).

    Raises:
      DataError: naming the labels that never occur in the pool, and ``fix``.
    """
    if not (y.size and test_y.size):
        return
    above = test_y[test_y > y.max()]
    if above.size:
        raise DataError(
            f"{test_what} holds labels {int(above.min())}..{int(above.max())} that never occur "
            f"in {pool_what} ({int(y.min())}..{int(y.max())}); {fix}"
        )


def make_pool(
    x: np.ndarray,
    y: np.ndarray,
    *,
    test_x: np.ndarray | None = None,
    test_y: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    test_ids: np.ndarray | None = None,
    num_classes: int | None = None,
    kind: str | None = None,
    dataset: str = "arrays",
    pool_split: str = "train",
    test_split: str | None = "test",
    pool_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
) -> Pool:
    """Builds a :class:`Pool` from arrays, checking shapes and subsampling reproducibly.

    ``pool_size`` / ``test_size`` take a seeded random subset (kept in source order, so ids
    stay sorted). Images must be uint8 [N, H, W, C]; anything else is treated as tabular
    float32 [N, D].
    """
    test_x, test_y = _check_splits(x, y, test_x, test_y, dataset, pool_split, test_split)
    if kind is None:
        kind = "image" if (x.dtype == np.uint8 and x.ndim == 4) else "tabular"
    if kind == "tabular":
        width = int(np.prod(x.shape[1:]))
        x = x.reshape(x.shape[0], width).astype(np.float32)
        test_x = test_x.reshape(test_x.shape[0], width).astype(np.float32)
    check_finite(x, f"{dataset}/{pool_split}")
    check_finite(test_x, f"{dataset}/{test_split}")
    ids = np.arange(x.shape[0], dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    if test_ids is None:
        test_ids = np.arange(test_x.shape[0], dtype=np.int64)
    sel, tsel = select_indices(
        x.shape[0],
        pool_size,
        test_x.shape[0],
        test_size,
        seed=seed,
        what=(f"{dataset}/{pool_split}", f"{dataset}/{test_split or 'test'}"),
    )
    x, y, ids = x[sel], y[sel], ids[sel]
    test_x, test_y, test_ids = test_x[tsel], test_y[tsel], test_ids[tsel]
    y = y.astype(np.int32)
    test_y = test_y.astype(np.int32)
    if num_classes is None:  # the pool's classes: a held-out label above them is refused
        check_held_out_classes(
            y,
            test_y,
            f"the pool's labels of {dataset}/{pool_split}",
            f"{dataset}/{test_split}",
            "fix the held-out labels, or pass num_classes=C when the pool lacks classes",
        )
        num_classes = int(y.max(initial=0)) + 1
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{dataset}: labels must lie in [0, {num_classes}); got {y.min()}..{y.max()}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{dataset}/{pool_split} is empty; choose a split with examples")
    mean, std = channel_stats(x, kind)
    return Pool(
        x=x,
        y=y,
        ids=ids,
        test_x=test_x,
        test_y=test_y,
        test_ids=test_ids,
        num_classes=int(num_classes),
        mean=mean,
        std=std,
        kind=kind,
        dataset=dataset,
        pool_split=pool_split,
        test_split=test_split,
    )
