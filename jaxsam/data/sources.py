"""Dataset sources and the one entry point that turns a :class:`DataConfig` into a Pool.

Names in ``data.dataset``:
  ``digits``       scikit-learn's 8x8 digits, embedded (the default, no download);
  ``idx:DIR``      IDX files in the MNIST layout (see :mod:`jaxsam.data.files`);
  ``npz:FILE``     a numpy ``.npz`` with ``x``, ``y`` (+ ``x_test``, ``y_test``), e.g. Purchase-100;
  ``imported``     refused: the config of a run made by ``jaxsam import-logits`` (no data);
  anything else    a tensorflow-datasets name (``cifar10``, ``fashion_mnist``, ...).

If ``data.test_split`` equals ``data.pool_split``, the test points are drawn from the rows the
pool did not take, so the held-out set never overlaps the pool.
"""

from __future__ import annotations

import re

import numpy as np

from jaxsam.config import DataConfig, show
from jaxsam.data import files
from jaxsam.data.embedded import load_digits_split
from jaxsam.data.pool import Pool, check_held_out_classes, make_pool, select_indices
from jaxsam.errors import ConfigError, DataError

EMBEDDED = ("digits",)
# A tensorflow-datasets name: NAME, NAME/CONFIG, each with an optional :VERSION (``mnist``,
# ``cifar10:3.*.*``, ``imagenet2012_subset/1pct``). Anything else (a path such as
# ``../data/x``) is refused: local files are read through ``npz:FILE`` or ``idx:DIR``.
TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[A-Za-z0-9_.+-]+)?(:[0-9*]+\.[0-9*]+\.[0-9*]+)?")


def check_dataset(name: str) -> None:
    """``data.dataset`` is ``digits``, ``idx:DIR``, ``npz:FILE`` or a tfds name, never a path."""
    if name in EMBEDDED or name.startswith(("idx:", "npz:")):
        if name.partition(":")[2] == "" and name != "digits":
            raise ConfigError(f"data.dataset = {show(name)} names no file; write e.g. npz:FILE")
        return
    if not TFDS_NAME.fullmatch(name):
        raise ConfigError(
            f"data.dataset = {show(name)} is neither 'digits' nor a tensorflow-datasets name "
            "(such as 'cifar10'); to read local files write 'npz:FILE' (x, y arrays) or "
            "'idx:DIR' (MNIST layout)"
        )


def _pool_from_full(
    cfg: DataConfig, load_split, num_classes: int | None, kind: str | None, labels=None
) -> Pool:
    """Builds the pool from a ``load_split(split) -> (x, y, ids)`` that reads whole splits.

    ``labels``: for a source that does not store its number of classes, ``(where, name,
    fix)``: the source for messages, ``name(split)`` what the labels of ``split`` are called,
    ``fix`` what to do about held-out labels that never occur in the pool (:func:`_check_classes`).
    """
    x, y, ids = load_split(cfg.pool_split)
    same = cfg.test_split == cfg.pool_split
    tx = ty = tids = None
    if cfg.test_split is not None and not same:
        tx, ty, tids = load_split(cfg.test_split)
    n_test = 0 if tx is None else tx.shape[0]
    sel, tsel = _select(cfg, x.shape[0], n_test)
    if same:
        tx, ty, tids = x[tsel], y[tsel], ids[tsel]
    elif tx is not None:
        tx, ty, tids = tx[tsel], ty[tsel], tids[tsel]
    if num_classes is None and labels is not None and ty is not None:
        _check_classes(cfg, y[sel], ty, *labels)
    return make_pool(
        x[sel],
        y[sel],
        test_x=tx,
        test_y=ty,
        ids=ids[sel],
        test_ids=tids,
        num_classes=num_classes,
        kind=kind,
        dataset=cfg.dataset,
        pool_split=cfg.pool_split,
        test_split=cfg.test_split,
    )


def _check_classes(
    cfg: DataConfig, y: np.ndarray, ty: np.ndarray, where: str, name, fix: str
) -> None:
    """:func:`check_held_out_classes` in the source's own words (``name(split)``: its labels)."""
    pool_what = name(cfg.pool_split)
    test_what = name(cfg.test_split)
    if cfg.test_split == cfg.pool_split:
        test_what = f"the held-out part of {test_what}"
    test_what = f"{where}: {test_what}"
    if cfg.pool_size is not None:
        pool_what = f"the pool's {cfg.pool_size} rows of {pool_what}"
        fix += ", or raise data.pool_size so that the pool holds every class"
    check_held_out_classes(y, ty, pool_what, test_what, fix)


def _select(cfg: DataConfig, n_pool: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`select_indices` with the config's sizes, seed and split names."""
    if cfg.test_split is None and cfg.test_size:
        raise DataError(
            f"data.test_size is {cfg.test_size} but data.test_split is null (no held-out "
            "points); set data.test_size to null, or name a data.test_split"
        )
    return select_indices(
        n_pool,
        cfg.pool_size,
        n_test,
        cfg.test_size,
        seed=cfg.seed,
        same_split=cfg.test_split == cfg.pool_split,
        what=(f"{cfg.dataset}/{cfg.pool_split}", f"{cfg.dataset}/{cfg.test_split}"),
    )


def _with_ids(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return x, y, np.arange(x.shape[0], dtype=np.int64)


def _load_tfds(cfg: DataConfig) -> Pool:
    from jaxsam.data import tfds_source

    builder = tfds_source.ensure_prepared(cfg.dataset, cfg.data_dir, cfg.manual_dir, cfg.download)
    same = cfg.test_split == cfg.pool_split
    n_pool = tfds_source.split_size(builder, cfg.pool_split)
    n_test = 0
    if cfg.test_split is not None and not same:
        n_test = tfds_source.split_size(builder, cfg.test_split)
    sel, tsel = _select(cfg, n_pool, n_test)

    def read(split: str, rows: np.ndarray, whole: bool):
        return tfds_source.read_split(builder, split, None if whole else rows)

    x, y, num_classes = read(cfg.pool_split, sel, cfg.pool_size is None)
    tx = ty = tids = None
    if cfg.test_split is not None:
        test_rows = tsel
        if same:
            tx, ty, _ = read(cfg.pool_split, test_rows, False)
        else:
            tx, ty, _ = read(cfg.test_split, test_rows, cfg.test_size is None)
        tids = test_rows
    return make_pool(
        x,
        y,
        test_x=tx,
        test_y=ty,
        ids=sel,
        test_ids=tids,
        num_classes=num_classes,
        kind="image",
        dataset=cfg.dataset,
        pool_split=cfg.pool_split,
        test_split=cfg.test_split,
    )


def load_pool(cfg: DataConfig) -> Pool:
    """Loads the pool and held-out test points that ``cfg`` describes.

    Returns:
      A :class:`Pool` whose ``ids`` are row indices within ``cfg.pool_split`` of the source
      (``test_ids`` likewise within ``cfg.test_split``).
    """
    name = cfg.dataset
    if name == "imported":
        raise DataError(
            "data.dataset = 'imported': this config belongs to a run imported with `jaxsam "
            "import-logits`, whose models were trained elsewhere; jaxsam has no data to train or "
            "resume it (score, compare, analyze and status work on it)"
        )
    if name == "digits":
        return _pool_from_full(cfg, load_digits_split, 10, "image")
    if name.startswith("idx:"):
        directory = name[len("idx:") :]
        return _pool_from_full(
            cfg,
            lambda s: _with_ids(*files.load_idx_split(directory, s)),
            None,
            "image",
            files.idx_labels(directory),
        )
    if name.startswith("npz:"):
        path = name[len("npz:") :]
        arrays = files.load_npz(path)
        n_cls = int(arrays["num_classes"]) if "num_classes" in arrays else None
        return _pool_from_full(
            cfg,
            lambda s: _with_ids(*files.npz_split(arrays, s, path)),
            n_cls,
            None,
            files.npz_labels(path),
        )
    return _load_tfds(cfg)
