"""Tiles of a host signal for the attack kernels: zero-copy device views, sums that fuse.

The attacks read a float32 signal [M, N, A] that lives in host memory, several times, one tile
of targets by examples at a time (about 2M values, which stay in cache while a kernel sweeps
them). On the CPU backend a C-contiguous, writable float32 array on a 64-byte boundary is
shared with XLA through DLPack without a copy, and every kernel cuts its tile out of the whole
array with ``dynamic_slice``. Any other array (an ordinary NumPy allocation is only 16-byte
aligned, which XLA would copy whole; a read-only memory map) is copied one tile at a time into
a reused, aligned staging buffer per thread; on another backend each tile goes to the device.

Two XLA:CPU habits shape the kernels that use these tiles: several reductions that share an
input are emitted as a multi-output fusion that materialises its inputs (:func:`sums` puts them
in one variadic reduce instead), and a reduction over a short minor axis runs element by element
(:func:`sum_minor` unrolls it into elementwise adds).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import operator
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Values of one tile: about 8 MiB of float32, which stays in the last-level cache while a
# kernel sweeps it two or three times, and is large enough that per-call costs stay small.
TILE_VALUES = 1 << 21

T = TypeVar("T")


def device_view(x: np.ndarray) -> jax.Array | None:
    """``x`` as a jax array sharing its memory, or None where that is not possible.

    Shared only on the CPU backend, for a C-contiguous, writable float32 array whose data start
    on a 64-byte boundary: XLA accepts a less aligned buffer too, but then copies the whole of
    it when a computation first reads it (the peak memory would double).
    """
    if jax.default_backend() != "cpu" or not isinstance(x, np.ndarray):
        return None
    flags = x.flags
    if x.dtype != np.float32 or not (flags.c_contiguous and flags.writeable):
        return None
    if x.ctypes.data % 64:
        return None
    return jax.dlpack.from_dlpack(x)


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array whose data start on a 64-byte boundary."""
    nbytes = int(np.prod(shape)) * 4
    raw = np.empty(nbytes + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start : start + nbytes].view(np.float32).reshape(shape)


_staging = threading.local()


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile of ``rows`` x ``step`` (targets x examples) of the signal.

    Attributes:
      signal: the host signal [M, N, A]; full: its :func:`device_view` (None: the tile is
        copied into a staging buffer of the calling thread by :meth:`load`).
      start: (row, example) of the tile's first value within the full [M, N] index space (for
        the other per-target and per-example arrays the kernels slice).
      skip: (rows, examples) at the tile's start that an earlier tile already covered (the last
        tile of each axis is moved back to fit, so it overlaps its neighbour).
    """

    signal: np.ndarray
    full: jax.Array | None
    rows: int
    step: int
    start: tuple[int, int]
    skip: tuple[int, int]

    @property
    def at(self) -> tuple[int, int]:
        """(row, example) of the tile's first value within :meth:`load`'s array."""
        return self.start if self.full is not None else (0, 0)

    def load(self) -> jax.Array:
        """The device array holding the tile: the whole signal where it is shared, else this
        tile copied into the calling thread's staging buffer (reused by its next tile: finish
        with the result first) or, off the CPU, to the device."""
        if self.full is not None:
            return self.full
        (r0, s0), a = self.start, self.signal.shape[2]
        block = self.signal[r0 : r0 + self.rows, s0 : s0 + self.step]
        if jax.default_backend() != "cpu":
            return jnp.asarray(block, jnp.float32)
        bufs = _staging.__dict__.setdefault("bufs", {})
        shape = (self.rows, self.step, a)
        if shape not in bufs:
            bufs.clear()
            bufs[shape] = aligned_empty(shape)
        np.copyto(bufs[shape], block, casting="unsafe")
        return jax.dlpack.from_dlpack(bufs[shape])


def _starts(total: int, step: int) -> list[tuple[int, int]]:
    """(start, skip) of each tile of ``step`` along an axis of ``total``; the last one moved
    back so that every tile has the full size."""
    return [(min(s, total - step), s - min(s, total - step)) for s in range(0, total, step)]


def tiles(signal: np.ndarray, rows: int, step: int, full: jax.Array | None) -> Iterator[Tile]:
    """Tiles of ``rows`` targets by ``step`` examples covering ``signal`` [M, N, A].

    ``full`` is :func:`device_view` of the signal (None: each tile is copied when loaded).
    ``rows`` and ``step`` must not exceed M and N.
    """
    m, n = signal.shape[:2]
    for r0, rskip in _starts(m, rows):
        for s0, skip in _starts(n, step):
            yield Tile(signal, full, rows, step, (r0, s0), (rskip, skip))


def tile_shape(m: int, n: int, a: int, rows: int | None = None) -> tuple[int, int]:
    """(rows, examples) of a tile: all M targets (or ``rows``) and about :data:`TILE_VALUES`
    values in all."""
    rows = m if rows is None else max(1, min(rows, m))
    return rows, max(1, min(n, TILE_VALUES // max(1, rows * a)))


def cut(x: jax.Array, at, shape: Sequence[int]) -> jax.Array:
    """``x[at[0]:at[0]+shape[0], at[1]:at[1]+shape[1], ...]`` with traced starts (the
    remaining axes whole)."""
    starts = tuple(at) + (0,) * (x.ndim - len(at))
    return lax.dynamic_slice(x, starts, tuple(shape) + x.shape[len(shape) :])


def sums(ops: Sequence[jax.Array], axis: int) -> tuple[jax.Array, ...]:
    """Sums over ``axis`` of several arrays of one shape, in a single (variadic) XLA reduce."""
    zeros = tuple(jnp.zeros((), o.dtype) for o in ops)

    def add(a, b):
        return tuple(p + q for p, q in zip(a, b, strict=True))

    return tuple(lax.reduce(tuple(ops), zeros, add, (axis,)))


def sum_minor(x: jax.Array) -> jax.Array:
    """Sum over a short last axis as elementwise adds of its slices."""
    return functools.reduce(operator.add, [x[..., i] for i in range(x.shape[-1])])


def sum_middle(x: jax.Array) -> jax.Array:
    """Sum of [B, n, A] over n as a batched matrix product with ones (XLA:CPU's reduction keeping
    a short minor axis runs element by element; its matrix products are vectorised)."""
    ones = jnp.ones((x.shape[0], 1, x.shape[1]), x.dtype)
    dims = (((2,), (1,)), ((0,), (0,)))
    return lax.dot_general(ones, x, dims, precision=lax.Precision.HIGHEST)[:, 0]


def map_tiles(fn: Callable[[Tile], T], tile_iter: Iterable[Tile]) -> list[T]:
    """``[fn(t) for t in tile_iter]`` on one thread per core (at most 2).

    XLA:CPU runs one small kernel at a time on one core; two threads that each wait for their
    own tile's result keep both cores busy. ``fn`` must wait for its result (``np.asarray`` or
    ``block_until_ready``) and write only to its own tile's part of any shared output.
    """
    workers = max(1, min(2, os.cpu_count() or 1))
    if workers == 1:
        return [fn(t) for t in tile_iter]
    x64 = jnp.asarray(1.0).dtype == jnp.float64  # jax.enable_x64 is per thread: carry it over

    def run(t):
        with jax.enable_x64(x64):
            return fn(t)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, tile_iter))
