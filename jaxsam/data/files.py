"""Local file sources: IDX directories (MNIST layout) and ``.npz`` archives (tabular data).

``idx:DIR``
  ``DIR`` holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``)
  and with ``.`` instead of the last ``-`` also accepted (``train-images.idx3-ubyte``). Splits:
  ``train`` and ``test`` (the ``t10k`` files).

``npz:FILE``
  ``numpy.savez`` archive with ``x`` [N, ...] and ``y`` [N] (split ``train``) and optionally
  ``x_test`` / ``y_test`` (split ``test``) and a scalar ``num_classes``. uint8 ``x`` of rank 4
  ([N, H, W, C]) or 3 ([N, H, W], given one channel) are images; anything else is tabular and
  flattened to float32 [N, D]. Read with ``allow_pickle=False``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from jaxsam.errors import DataError

IDX_SPLITS = {"train": "train", "test": "t10k"}
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file (gzipped when its name ends in ``.gz``) into a numpy array.

    The IDX format: two zero bytes, a dtype code, the rank ``d``, ``d`` big-endian uint32 sizes,
    then the data in C order. Returns the array with its stored dtype (native byte order).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path} ({e}); replace it with an intact copy") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); check the file")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(
            f"{path}: header says shape {shape} but the file holds {len(raw) - header} data "
            "bytes; the file is truncated or damaged, replace it"
        )
    data = np.frombuffer(raw, dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(directory: Path, stem: str, kind: str, rank: int) -> Path:
    names = [f"{stem}-{kind}-idx{rank}-ubyte", f"{stem}-{kind}.idx{rank}-ubyte"]
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(
        f"{directory} has no {names[0]} (or .gz); an idx: directory needs the MNIST file layout "
        "(see docs/data.md)"
    )


def load_idx_split(directory: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of an IDX directory.

    Returns:
      x: uint8 [n, H, W, 1] (or [n, H, W, C] for rank-4 files); y: int32 [n].
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"idx: directory {directory} does not exist; pass an existing directory")
    if split not in IDX_SPLITS:
        raise DataError(f"idx: sources have splits {list(IDX_SPLITS)}, not {split!r}")
    stem = IDX_SPLITS[split]
    x = read_idx(_find_idx(directory, stem, "images", 3))
    y = read_idx(_find_idx(directory, stem, "labels", 1))
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.dtype != np.uint8:
        raise DataError(
            f"{directory}/{stem} images must be uint8 [N, H, W]; got {x.dtype} {x.shape}"
        )
    if y.ndim != 1:
        raise DataError(f"{directory}/{stem} labels must be 1-D [N]; got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{directory}/{stem}: {x.shape[0]} images but {y.shape[0]} labels; images and labels "
            "must have the same length (the files belong to different datasets or are truncated)"
        )
    return x, y.astype(np.int32)


def idx_labels(directory: str | Path) -> tuple:
    """How messages name the labels of an ``idx:`` split, and the fix for held-out labels
    that never occur in the pool: ``(where, name, fix)``, the ``labels`` of
    ``sources._pool_from_full``."""

    def name(split: str) -> str:
        return f"the {IDX_SPLITS.get(split, split)}-labels file"

    fix = "the splits must share one set of classes: fix or replace the held-out labels file"
    return str(directory), name, fix


NPZ_SPLITS = {"train": ("x", "y"), "test": ("x_test", "y_test")}


def npz_labels(path: str | Path) -> tuple:
    """How messages name the labels of an ``npz:`` split, and the fix for held-out labels
    that never occur in the pool (see :func:`idx_labels`)."""

    def name(split: str) -> str:
        return NPZ_SPLITS.get(split, ("", split))[1]

    fix = (
        "fix those labels, or store the number of classes in the file "
        "(numpy.savez(..., num_classes=C)) when the pool lacks some"
    )
    return str(path), name, fix


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Reads every array of an ``.npz`` archive (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz: file {path} does not exist; pass an existing .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except ValueError as e:
        raise DataError(
            f"{path} holds object arrays ({e}); save plain numeric arrays with numpy.savez"
        ) from e
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path} as .npz ({e}); write it with numpy.savez") from e


def npz_split(arrays: dict[str, np.ndarray], split: str, path: str) -> tuple[np.ndarray, ...]:
    """``(x, y)`` of ``split`` in an archive read by :func:`load_npz`.

    Returns:
      x: uint8 [n, H, W, C] images or float32 [n, D] features; y: int32 [n].
    """
    if split not in NPZ_SPLITS:
        raise DataError(f"npz: sources have splits {list(NPZ_SPLITS)}, not {split!r}")
    kx, ky = NPZ_SPLITS[split]
    if kx not in arrays or ky not in arrays:
        fix = (
            "add them to the file, or set data.test_split to null (or to 'train' with a "
            "data.test_size for a disjoint held-out part)"
            if split == "test"
            else "save the inputs as x and the labels as y"
        )
        raise DataError(f"{path} has no {kx!r}/{ky!r} arrays for split {split!r}; {fix}")
    x, y = arrays[kx], arrays[ky]
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(
            f"{path}: {kx} holds no examples (shape {x.shape}); save at least one row per "
            "split, or set data.test_split to null when there is no test split"
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {ky} must be integer labels [N]; got {y.dtype} {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{path}: {kx} has {x.shape[0]} rows but {ky} has {y.shape[0]}; inputs and labels "
            "must have the same length"
        )
    if x.dtype == np.uint8 and x.ndim == 3:
        x = x[..., None]
    if not (x.dtype == np.uint8 and x.ndim == 4):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise DataError(f"{path}: {kx} must be numeric; got {x.dtype}")
        x = x.reshape(x.shape[0], -1).astype(np.float32)
    return x, y.astype(np.int32)
