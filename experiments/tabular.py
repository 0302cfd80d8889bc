"""Convert the Purchase-100 and Texas-100 text files into the ``npz:`` layout jaxsam reads.

The two benchmarks (Shokri et al., 2017) are usually taken from the preprocessed copies that
Nasr et al. distribute (``dataset_purchase.tgz`` and ``dataset_texas.tgz`` in the
``privacytrust/datasets`` GitHub repository). Their layout:

- Purchase-100: one text file, one row per example, comma-separated: the class label (1..100)
  then 600 binary features.
- Texas-100: ``texas/100/feats`` (comma-separated, 6,169 binary features per row) and
  ``texas/100/labels`` (one class label, 1..100, per row).

Usage::

    python -m experiments.tabular purchase dataset_purchase data/purchase100.npz
    python -m experiments.tabular texas texas/100/feats texas/100/labels data/texas100.npz

The output holds ``x`` uint8 [N, D] (0/1 features; jaxsam reads rank-2 arrays as tabular and
turns them into float32) and ``y`` int32 [N] in 0..C-1 (labels starting at 1 are shifted down),
plus ``num_classes``. There is no test split in the file: the experiment configs hold out rows of
the same split (``data.test_split = "train"`` with a ``data.test_size``), disjoint from the pool.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from jaxsam.errors import DataError


def _read_matrix(path: Path) -> np.ndarray:
    if not Path(path).is_file():
        raise DataError(f"{path} does not exist; download and unpack the dataset first")
    try:
        a = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as e:
        raise DataError(
            f"{path} is not a comma-separated numeric table ({e}); check the file"
        ) from e
    return a


def _labels(y: np.ndarray, path: Path) -> np.ndarray:
    if not np.all(y == np.round(y)):
        raise DataError(f"{path}: labels must be integers; is this the right column/file?")
    y = y.astype(np.int32)
    if y.min() == 1:
        y = y - 1
    if y.min() < 0:
        raise DataError(f"{path}: labels must start at 0 or 1, got minimum {y.min()}")
    return y


def _features(x: np.ndarray, path: Path) -> np.ndarray:
    if np.all((x == 0) | (x == 1)):
        return x.astype(np.uint8)
    return x.astype(np.float32)


def purchase_to_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Purchase-100 rows ``label,f1,...,f600`` -> {"x": [N, 600], "y": [N], "num_classes"}."""
    a = _read_matrix(Path(path))
    if a.shape[1] < 2:
        raise DataError(f"{path}: expected a label column then features; got {a.shape[1]} column")
    y = _labels(a[:, 0], Path(path))
    return {"x": _features(a[:, 1:], Path(path)), "y": y, "num_classes": np.int64(y.max() + 1)}


def texas_to_arrays(feats: str | Path, labels: str | Path) -> dict[str, np.ndarray]:
    """Texas-100 ``feats`` and ``labels`` files -> {"x": [N, 6169], "y": [N], "num_classes"}."""
    x = _read_matrix(Path(feats))
    y = _read_matrix(Path(labels)).reshape(-1)
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{feats} has {x.shape[0]} rows but {labels} has {y.shape[0]}; use the matching pair"
        )
    y = _labels(y, Path(labels))
    return {"x": _features(x, Path(feats)), "y": y, "num_classes": np.int64(y.max() + 1)}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m experiments.tabular", description=__doc__)
    sub = p.add_subparsers(dest="which", required=True)
    pp = sub.add_parser("purchase", help="Purchase-100 text file -> npz")
    pp.add_argument("raw", type=Path)
    pp.add_argument("out", type=Path)
    pt = sub.add_parser("texas", help="Texas-100 feats + labels -> npz")
    pt.add_argument("feats", type=Path)
    pt.add_argument("labels", type=Path)
    pt.add_argument("out", type=Path)
    args = p.parse_args(argv)
    try:
        arrays = (
            purchase_to_arrays(args.raw)
            if args.which == "purchase"
            else texas_to_arrays(args.feats, args.labels)
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    x, y = arrays["x"], arrays["y"]
    print(
        f"wrote {args.out}: x {x.dtype} {x.shape}, y {y.shape}, "
        f"{int(arrays['num_classes'])} classes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
