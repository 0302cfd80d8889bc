"""Data: sources, the Pool, membership masks, on-device augmentation."""

from jaxsam.data.masks import make_masks
from jaxsam.data.pool import Pool, make_pool
from jaxsam.data.sources import load_pool

__all__ = ["Pool", "load_pool", "make_masks", "make_pool"]
