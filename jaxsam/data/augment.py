"""On-device augmentation: train-time (per-model random) and query-time (fixed views).

All functions are pure jnp code, jit- and vmap-safe, working on a batch [B, H, W, C] of uint8
or float images. Tabular inputs [B, D] pass through untouched.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalize(x: jax.Array, mean: jax.Array, std: jax.Array, kind: str) -> jax.Array:
    """uint8 images -> float32 ``(x / 255 - mean) / std``; tabular -> ``(x - mean) / std``."""
    x = x.astype(jnp.float32)
    if kind == "image":
        x = x / 255.0
    return (x - mean) / std


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
    """Mirrors each image [B, H, W, C] left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
    return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def random_crop(key: jax.Array, x: jax.Array, pad: int = 4) -> jax.Array:
    """Reflect-pads by ``pad`` and crops back at a random offset per image (the LiRA recipe)."""
    b, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


TRAIN_MODES = ("none", "flip", "crop", "flip_crop")
# Digits and characters: mirroring changes the class, and small glyphs are not cropped.
NO_AUGMENT_DATASETS = ("digits", "mnist", "emnist", "kmnist", "binary_alpha_digits")
# House numbers: crops are fine, mirrors are not.
CROP_ONLY_DATASETS = ("svhn_cropped",)


def train_augment(key: jax.Array, x: jax.Array, mode: str) -> jax.Array:
    """Applies train-time augmentation ``mode`` to a batch with fresh randomness per example.

    Args:
      key: PRNG key; vmap over a leading model axis of keys gives each model its own draws.
      x: [B, H, W, C] images (uint8 or float); [B, D] tabular inputs are returned unchanged.
      mode: ``none``, ``flip`` (mirror with probability 1/2), ``crop`` (reflect-pad 4, random
        crop) or ``flip_crop`` (both: the LiRA recipe). Resolve ``auto`` first with
        :func:`resolve_train_augment`.

    Returns:
      Same shape and dtype as ``x``.
    """
    if mode not in TRAIN_MODES:
        raise ValueError(f"train augmentation {mode!r} is unknown; use one of {TRAIN_MODES}")
    if mode == "none" or x.ndim != 4:
        return x
    k_flip, k_crop = jax.random.split(key)
    if mode in ("flip", "flip_crop"):
        x = random_flip(k_flip, x)
    if mode in ("crop", "flip_crop"):
        x = random_crop(k_crop, x)
    return x


def resolve_train_augment(mode: str, kind: str, dataset: str) -> str:
    """Resolves ``auto``: none for tabular data and digit/character sets (``digits``, ``mnist``,
    ``idx:`` sources ...), crop only for ``svhn_cropped``, flip+crop for other images.
    An explicit mode is returned unchanged, except that tabular data always gets ``none``."""
    if kind != "image":
        return "none"
    if mode != "auto":
        return mode
    base = dataset.split("/")[0].split(":")[0]
    if base in NO_AUGMENT_DATASETS or dataset.startswith("idx:"):
        return "none"
    if base in CROP_ONLY_DATASETS:
        return "crop"
    return "flip_crop"


def query_names(count: int) -> list[str]:
    """Names of the query views: 1 = identity, 2 = + mirror, 18 = mirror x 9 shifts."""
    if count == 1:
        return ["identity"]
    if count == 2:
        return ["identity", "mirror"]
    if count == 18:
        names = []
        for mirror in (False, True):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    names.append(f"{'mirror_' if mirror else ''}shift_{dy * 2:+d}_{dx * 2:+d}")
        return names
    raise ValueError(f"query_augment must be 1, 2 or 18, got {count}")


def _shift(x: jax.Array, dy: int, dx: int) -> jax.Array:
    """Shifts images by (dy, dx) pixels with reflect padding (no wrap-around)."""
    if dy == 0 and dx == 0:
        return x
    _, h, w, _ = x.shape
    p = max(abs(dy), abs(dx))
    padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    return padded[:, p + dy : p + dy + h, p + dx : p + dx + w, :]


def query_views(x: jax.Array, count: int) -> jax.Array:
    """Stacks the ``count`` query views of a batch: [B, ...] -> [A, B, ...].

    View ``a`` is named ``query_names(count)[a]``. ``shift_{dy}_{dx}`` is the image read at an
    offset: view[i, j] = x[i + dy, j + dx], with reflect padding at the border; ``mirror_``
    views shift the left-right mirrored image. Tabular inputs only support ``count == 1``.
    """
    if count not in (1, 2, 18):
        raise ValueError(f"query_augment must be 1, 2 or 18, got {count}")
    if count == 1:
        return x[None]
    if x.ndim != 4:
        raise ValueError("query augmentations beyond identity need image inputs [B, H, W, C]")
    mirrored = x[:, :, ::-1, :]
    if count == 2:
        return jnp.stack([x, mirrored])
    views = []
    for base in (x, mirrored):
        for dy in (-2, 0, 2):
            for dx in (-2, 0, 2):
                views.append(_shift(base, dy, dx))
    return jnp.stack(views)
