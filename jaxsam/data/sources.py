"""Dataset sources and the one entry point that turns a :class:`DataConfig` into a Pool."""

from __future__ import annotations

from jaxsam.config import DataConfig
from jaxsam.data.embedded import load_digits_split
from jaxsam.data.pool import Pool, make_pool
from jaxsam.errors import DataError

EMBEDDED = ("digits",)


def load_pool(cfg: DataConfig) -> Pool:
    """Loads the pool and held-out test points that ``cfg`` describes."""
    name = cfg.dataset
    if name == "digits":
        x, y, ids = load_digits_split(cfg.pool_split)
        tx = ty = tids = None
        if cfg.test_split is not None:
            tx, ty, tids = load_digits_split(cfg.test_split)
        return make_pool(
            x,
            y,
            test_x=tx,
            test_y=ty,
            ids=ids,
            test_ids=tids,
            num_classes=10,
            kind="image",
            dataset=name,
            pool_split=cfg.pool_split,
            test_split=cfg.test_split,
            pool_size=cfg.pool_size,
            test_size=cfg.test_size,
            seed=cfg.seed,
        )
    raise DataError(
        f"unknown dataset {name!r}; use 'digits' (embedded), a tfds name such as 'cifar10', "
        "'idx:DIR' or 'npz:FILE'"
    )
