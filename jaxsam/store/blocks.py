"""Logits too large to hold twice: read and written a block of models at a time.

:class:`ModelBlocks` stands for a float array ``[M, ...]`` that is read a few models at a time
and never whole: from an array in memory, from a ``.npy`` file (each block maps only its own
rows and unmaps them when done, so the file's pages do not pile up in the process), or from one
file per model (the published LiRA layout). :func:`save_arrays_streamed` writes such an array
into a run directory's orbax folder one block at a time, beside the small arrays of the same
folder, in a layout that :func:`jaxsam.store.load_arrays` (orbax's restore) reads as usual.

Why not orbax's own save: orbax writes an in-memory array in one call, and tensorstore copies
it before writing, so saving logits costs about twice their size on top of holding them. Here
the orbax checkpoint is written without OCDBT (each array in its own zarr folder, a format
orbax restores by its ``_METADATA``), the large array's zarr folder is filled block by block
with tensorstore, and its entry is added to ``_METADATA`` from the entry orbax wrote for a small
array of the same kind. The folder is built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import mmap
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

BLOCK_BYTES = 64 << 20  # bytes of one block of models (at least one model)


@dataclasses.dataclass(frozen=True)
class ModelBlocks:
    """A float array ``[M, ...]`` read ``[a, b)`` models at a time.

    Attributes:
      shape: the whole array's shape (models first).
      dtype: its element type.
      read: ``read(a, b)`` -> numpy ``[b - a, *shape[1:]]``, a fresh array (not a view of a
        mapping that stays open).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[int, int], np.ndarray]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def models_per_block(self, block_bytes: int | None = None) -> int:
        block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
        per_model = max(1, self.nbytes // max(1, self.shape[0]))
        return max(1, min(self.shape[0], block_bytes // per_model))

    def blocks(self, block_bytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(a, array [b - a, ...])`` for consecutive blocks of about ``block_bytes``."""
        k = self.models_per_block(block_bytes)
        for a in range(0, self.shape[0], k):
            yield a, self.read(a, min(a + k, self.shape[0]))

    def map(self, fn: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...], dtype=None):
        """The blocks of ``fn(block)`` (models stay the first axis), of whole shape ``shape``."""
        return ModelBlocks(
            tuple(shape), np.dtype(dtype or self.dtype), lambda a, b: fn(self.read(a, b))
        )

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole array (what a caller that needs it all gets from ``np.asarray``)."""
        out = np.empty(self.shape, dtype or self.dtype)
        for a, block in self.blocks():
            out[a : a + block.shape[0]] = block
        return out


def blocks_of(arr) -> ModelBlocks:
    """``arr`` (numpy, a ``numpy.memmap`` of a file, or :class:`ModelBlocks`) as blocks.

    A memory map of a whole file (what ``numpy.load(..., mmap_mode="r")`` returns; not a view
    of one) is reopened for each block over that block's rows alone, so reading it all never
    keeps more than one block's pages mapped.
    """
    if isinstance(arr, ModelBlocks):
        return arr
    filename = getattr(arr, "filename", None)
    whole = isinstance(arr, np.memmap) and isinstance(arr.base, mmap.mmap)
    if whole and filename and arr.flags.c_contiguous and arr.ndim >= 1:
        shape, dtype, offset = tuple(arr.shape), arr.dtype, int(arr.offset)
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

        def read(a: int, b: int) -> np.ndarray:
            mm = np.memmap(filename, dtype, "r", offset + a * row, (b - a, *shape[1:]))
            try:
                return np.array(mm)
            finally:
                del mm

        return ModelBlocks(shape, dtype, read)
    arr = np.asarray(arr)
    return ModelBlocks(tuple(arr.shape), arr.dtype, lambda a, b: np.array(arr[a:b]))


def stacked(paths: list[Path], load: Callable[[Path], np.ndarray], dtype=None) -> ModelBlocks:
    """One model per file: ``load(paths[i])`` is model i's array (all of one shape), read only
    when its block is (``dtype``: the blocks' type; default the first file's)."""
    first = load(paths[0])
    shape, dtype = (len(paths), *first.shape), np.dtype(dtype or first.dtype)
    del first

    def read(a: int, b: int) -> np.ndarray:
        return np.stack([np.asarray(load(p), dtype) for p in paths[a:b]])

    return ModelBlocks(shape, dtype, read)


class _NoMergeWarning(logging.Filter):
    """Drops orbax's warning that a checkpoint written without OCDBT has no OCDBT files to
    merge: orbax (0.12) finishes every PyTree save with that merge whatever ``use_ocdbt``
    says, so the warning came with every import and meant nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Skipping merge of OCDBT checkpoints" not in record.getMessage()


_NO_MERGE_WARNING = _NoMergeWarning()


def save_arrays_streamed(
    path: Path,
    small: dict[str, np.ndarray],
    big: dict[str, ModelBlocks],
    dtype=np.float32,
    block_bytes: int | None = None,
) -> None:
    """Writes ``small`` and ``big`` (each cast to ``dtype``) as one orbax folder ``path``.

    ``small`` must hold at least one array, and none of a zero-size shape (encode those first as
    :func:`jaxsam.store.save_arrays` does); ``big`` arrays must not be of zero size. ``path`` is
    replaced only once the new folder is complete. Raises ``RuntimeError`` when orbax's metadata
    is not in the form this writer knows (a newer orbax).
    """
    import orbax.checkpoint as ocp
    import tensorstore as ts

    if not small:
        raise ValueError("save_arrays_streamed needs at least one small array beside the large")
    tmp = path.parent / f".{path.name}.streaming"
    if tmp.exists():
        shutil.rmtree(tmp)
    ckpt = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False))
    absl_log = logging.getLogger("absl")
    absl_log.addFilter(_NO_MERGE_WARNING)
    try:
        ckpt.save(tmp.absolute(), {k: np.asarray(v) for k, v in small.items()})
    finally:
        absl_log.removeFilter(_NO_MERGE_WARNING)
    for name, arr in big.items():
        _add_entry(tmp / "_METADATA", name)
        spec = {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": str((tmp / name).absolute())},
            "metadata": {
                "shape": list(arr.shape),
                "dtype": np.dtype(dtype).str,
                "chunks": [1, *arr.shape[1:]],  # one model per chunk
                "compressor": {"id": "zstd", "level": 1},
            },
            "create": True,
        }
        target = ts.open(spec).result()
        for a, block in arr.blocks(block_bytes):
            target[a : a + block.shape[0]].write(np.ascontiguousarray(block, dtype)).result()
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def _add_entry(meta_path: Path, name: str) -> None:
    """Adds array ``name`` to orbax's ``_METADATA``, copying the entry of an array already there."""
    meta = json.loads(meta_path.read_text())
    tree = meta.get("tree_metadata") if isinstance(meta, dict) else None
    template = None
    for entry in (tree or {}).values():
        value = entry.get("value_metadata", {}) if isinstance(entry, dict) else {}
        keys = entry.get("key_metadata") if isinstance(entry, dict) else None
        if value.get("value_type") == "np.ndarray" and isinstance(keys, list) and len(keys) == 1:
            template = entry
            break
    if template is None or meta.get("use_ocdbt") is not False:
        raise RuntimeError(
            f"{meta_path}: orbax wrote metadata in a form this writer does not know; save the "
            "arrays with jaxsam.store.save_arrays instead"
        )
    entry = copy.deepcopy(template)
    entry["key_metadata"][0]["key"] = name
    tree[f"('{name}',)"] = entry
    meta_path.write_text(json.dumps(meta))
