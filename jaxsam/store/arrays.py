"""Arrays of a run directory: flat dicts of numpy arrays saved and restored with orbax.

Orbax writes into a temporary sibling and renames it when complete, so an array directory
either holds the whole tree or does not exist. Nothing is pickled.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from jaxsam import hooks
from jaxsam.errors import RunDirError
from jaxsam.store import paths
from jaxsam.store.files import write_errors


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def _remove_partial_writes(path: Path) -> None:
    """Removes orbax temporary siblings of ``path`` left by a process killed mid-write."""
    for tmp in path.parent.glob(f"{path.name}.orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)


def save_arrays(path: Path, tree: dict[str, np.ndarray]) -> None:
    """Saves a flat dict of arrays with orbax, replacing ``path``; waits until it is on disk.

    Orbax writes into a temporary sibling and renames it when complete, so ``path`` either
    holds the whole tree or does not exist. Orbax cannot save an array with a zero-size
    dimension (e.g. the test logits [M, 0, A, C] of a run with ``data.test_split=null``): such
    an array is saved as its shape and a one-element array of its dtype, and
    :func:`load_arrays` rebuilds it.
    """
    paths.check_no_links(path.parent, path.name)
    _remove_partial_writes(path)
    if path.exists():
        shutil.rmtree(path)
    with write_errors(path, "arrays"):
        ckpt = _checkpointer()
        ckpt.save(path.absolute(), _encode_empty({k: np.asarray(v) for k, v in tree.items()}))
        hooks.fire("arrays_sent", path=path)
        ckpt.wait_until_finished()


def save_logits_streamed(path: Path, logits, labels, test_logits, test_labels) -> None:
    """:func:`save_arrays` of a run's ``logits/`` folder, the logits a block of models at a time.

    ``logits`` / ``test_logits``: :class:`~jaxsam.store.blocks.ModelBlocks` or numpy arrays
    ``[M, R, A, C]``; a zero-size one is encoded as :func:`save_arrays` encodes it. Peak memory
    is one block, not the logits (see :mod:`jaxsam.store.blocks`); the folder reads back with
    :func:`load_arrays` like any other.
    """
    from jaxsam.store.blocks import blocks_of, save_arrays_streamed

    paths.check_no_links(path.parent, path.name)
    small = {"labels": np.asarray(labels), "test_labels": np.asarray(test_labels)}
    big = {}
    for name, arr in (("logits", logits), ("test_logits", test_logits)):
        if int(np.prod(arr.shape)) == 0:
            small[name] = np.zeros(arr.shape, np.float32)
        else:
            big[name] = blocks_of(arr)
    with write_errors(path, "arrays"):
        save_arrays_streamed(path, _encode_empty(small), big)


def load_arrays(
    path: Path,
    what: str,
    *,
    missing: str = "the run directory is incomplete or damaged",
    damaged: str = "the files are damaged: rerun the job or restore the directory",
    any_layout: bool = False,
) -> dict[str, np.ndarray]:
    """Restores a flat dict of arrays saved by :func:`save_arrays` as numpy arrays.

    Args:
      path: the orbax directory.
      what: what it holds, for messages.
      missing, damaged: what to do when it is missing or cannot be read, for messages.
      any_layout: read arrays saved as global ``jax.Array`` by several processes (a wave under
        ``jax.distributed``) onto this process's CPU, whatever process layout wrote them.
    """
    if not path.is_dir():
        raise RunDirError(f"{path} is missing ({what}); {missing}")
    ckpt = _checkpointer()
    try:
        target = _single_device_target(ckpt, path) if any_layout else None
        tree = ckpt.restore(path.absolute(), target)
    except Exception as e:  # orbax/tensorstore raise many types for damaged data
        raise RunDirError(
            f"{path} ({what}) cannot be read: {type(e).__name__}: {str(e).splitlines()[0][:200]}; "
            f"{damaged}"
        ) from e
    return _decode_empty({k: np.asarray(v) for k, v in tree.items()})


_EMPTY_SHAPE, _EMPTY_DTYPE = "__empty_shape__", "__empty_dtype__"


def _encode_empty(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replaces each zero-size array by its shape (int64) and a 1-element array of its dtype."""
    out = {}
    for k, v in tree.items():
        if v.size == 0:
            out[_EMPTY_SHAPE + k] = np.asarray(v.shape, np.int64)  # size 0: ndim >= 1
            out[_EMPTY_DTYPE + k] = np.zeros(1, v.dtype)
        else:
            out[k] = v
    return out


def _decode_empty(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of :func:`_encode_empty`."""
    out = {k: v for k, v in tree.items() if not k.startswith((_EMPTY_SHAPE, _EMPTY_DTYPE))}
    for k, shape in tree.items():
        if k.startswith(_EMPTY_SHAPE):
            name = k[len(_EMPTY_SHAPE) :]
            dtype = tree.get(_EMPTY_DTYPE + name, np.zeros(1, np.float32)).dtype
            out[name] = np.zeros(tuple(int(d) for d in shape), dtype)
    return out


def _single_device_target(ckpt, path: Path) -> dict:
    """Restore target that puts every saved array whole on this process's first CPU device."""
    import jax

    meta = ckpt.metadata(path.absolute())
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    return {
        k: jax.ShapeDtypeStruct(tuple(v.shape), v.dtype, sharding=device) for k, v in tree.items()
    }


def save_global_arrays(path: Path, tree: dict) -> None:
    """Saves a flat dict of arrays from every process of a ``jax.distributed`` job together.

    Per-model arrays are global ``jax.Array`` sharded over the processes; each process writes
    its shards. Every process calls this with the same keys; in a single process it is
    :func:`save_arrays` without the cleanup of a killed write (orbax's ``force`` replaces).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = _checkpointer()
    ckpt.save(path.absolute(), tree, force=True)
    hooks.fire("arrays_sent", path=path)
    ckpt.wait_until_finished()


def array_shapes(path: Path, what: str) -> dict[str, tuple[int, ...]]:
    """The shapes of the arrays :func:`save_arrays` wrote in ``path``, from orbax's metadata.

    Reads no array data; a zero-size array (stored as its shape, see :func:`save_arrays`)
    maps to None. Raises :class:`RunDirError` when the metadata cannot be read.
    """
    try:
        meta = _checkpointer().metadata(path.absolute())
        tree = getattr(meta, "item_metadata", meta)
        tree = getattr(tree, "tree", tree)
        raw = {k: tuple(int(d) for d in v.shape) for k, v in tree.items()}
    except Exception as e:  # orbax raises many types for damaged metadata
        raise RunDirError(
            f"{path} ({what}) cannot be read: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from e
    out: dict = {k: v for k, v in raw.items() if not k.startswith((_EMPTY_SHAPE, _EMPTY_DTYPE))}
    for k in raw:
        if k.startswith(_EMPTY_SHAPE):  # a zero-size array: its shape is stored as data
            out[k[len(_EMPTY_SHAPE) :]] = None
    return out
