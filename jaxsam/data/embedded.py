"""The embedded default dataset: scikit-learn's 8x8 digits (1,797 images, no download)."""

from __future__ import annotations

import numpy as np

DIGITS_SPLITS = ("train", "test", "all")


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split of scikit-learn's digits as uint8 images.

    The 1,797 images are split by index: every fifth image (index % 5 == 0) is ``test``
    (360 images), the rest ``train`` (1,437); ``all`` is everything.

    Returns:
      x: uint8 [n, 8, 8, 1] (the 0..16 intensities scaled by 255/16 and rounded);
      y: int32 [n];
      ids: int64 [n], the index in ``sklearn.datasets.load_digits()``.
    """
    from sklearn.datasets import load_digits

    from jaxsam.errors import DataError

    if split not in DIGITS_SPLITS:
        raise DataError(f"digits has no split {split!r}; use one of {list(DIGITS_SPLITS)}")
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    ids = np.arange(len(labels), dtype=np.int64)
    if split == "all":
        sel = ids
    elif split == "test":
        sel = ids[ids % 5 == 0]
    else:
        sel = ids[ids % 5 != 0]
    return images[sel], labels[sel], sel
