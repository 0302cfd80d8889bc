"""Logits of shadow models trained elsewhere -> a complete, scorable run directory.

:func:`check_arrays` validates masks, logits and labels that came from outside jaxsam (a
PyTorch training loop, the published LiRA code's experiment directories read by
:mod:`jaxsam.pipeline.lira_layout`) and brings them to the run directory's shapes;
:func:`import_run` writes them as a run that ``jaxsam score``, ``analyze``, ``compare`` and
``status`` read like a trained one (``jaxsam import-logits``).

What an imported run holds (docs/import.md):

* ``masks/``, ``logits/``, ``logits.json``, ``metrics.json``, ``digests.json``, ``COMPLETE``:
  as for a trained run. ``masks/ids`` are the row numbers of the examples in the imported
  arrays (examples dropped with ``drop_sparse`` leave gaps).
* ``run.json``: as for a trained run, plus ``"provenance": {"kind": "imported", "format",
  "source", "files", ...}``; its ``pool`` entry says ``"dataset": "imported"``; its
  ``"mask_design"`` is what the masks show (:func:`detected_design`).
* ``config.json``: a valid config that describes only what is known: ``data.dataset =
  "imported"`` (which no command can load or train), ``data.pool_size`` = N, the test split's
  size, ``masks.models`` = M, ``masks.pkeep`` = the mean fraction of IN models and
  ``masks.design`` = ``bernoulli`` or ``exact`` as detected. The
  optimizer, model and training keys are left at their defaults and mean nothing; the report
  shows them as unknown. The masks are the imported ones, not ``make_masks`` of this config.

Bad input raises :class:`jaxsam.errors.DataError` (one line: the file, the problem, the fix)
before anything is written.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxsam import __version__, metrics, store
from jaxsam import config as config_lib
from jaxsam.errors import DataError, option
from jaxsam.store import values
from jaxsam.store.blocks import ModelBlocks, blocks_of

IMPORTED_DATASET = "imported"
# An example must be in at least this many models and out of at least this many, by default:
# LiRA's equal shadow groups leave a target no shadow at an example in only one model of a group.
DEFAULT_MIN_MODELS = 2


@dataclasses.dataclass
class Imported:
    """Checked arrays of an import, in the run directory's shapes.

    Attributes:
      keep: bool [M, N]; logits: float [M, N, A, C] (:class:`ModelBlocks`: read a block of
        models at a time, never whole); labels: int32 [N].
      test_logits: float [M, T, A, C] (:class:`ModelBlocks`); test_labels: int32 [T] (T = 0: no
        held-out split).
      ids: int64 [N]: row of each kept example in the imported arrays.
      query_names: the A query-view names (query 0 is the identity view).
      provenance: run.json's ``"provenance"`` entry.
    """

    keep: np.ndarray
    logits: ModelBlocks
    labels: np.ndarray
    test_logits: ModelBlocks
    test_labels: np.ndarray
    ids: np.ndarray
    query_names: list[str]
    provenance: dict


def load_npy(path: str | Path, what: str, *, mmap: bool = True) -> np.ndarray:
    """Reads a ``.npy`` file without pickles (memory-mapped by default).

    Raises:
      DataError: the file is missing, not a ``.npy`` array, or holds Python objects.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(
            f"{path} ({what}) is a directory, not a .npy file; pass the .npy file (the published "
            f"LiRA code's log directory goes to {option('lira_dir', 'EXPDIR')})"
        )
    if not path.is_file():
        raise DataError(f"{path} ({what}) does not exist; pass an existing .npy file")
    problem = _npy_problem(path)
    if problem is not None:
        raise DataError(f"{path} ({what}) {problem}")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        raise DataError(
            f"{path} ({what}) holds Python objects ({str(e).splitlines()[0]}); save a numeric "
            "array with numpy.save"
        ) from e
    except Exception as e:  # a damaged or foreign file: numpy raises several types
        raise DataError(
            f"{path} ({what}) is not a .npy array ({type(e).__name__}: {e}); save it with "
            "numpy.save"
        ) from e
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise DataError(f"{path} ({what}) is an .npz archive; pass one .npy array per option")
    return arr


def _npy_problem(path: Path) -> str | None:
    """What is wrong with ``path`` as a ``.npy`` file, read from its header (None: nothing).

    Named before numpy's own errors, which call a text file and a truncated one "pickled
    (object) data" and "mmap length is greater than file size".
    """
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            if f.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
                f.seek(0)
                if f.read(2) == b"PK":
                    return None  # a zip: an .npz archive, named after loading
                return (
                    "is not a .npy file (it does not start with NumPy's header: a text file, or "
                    "another format?); save the array with numpy.save"
                )
            f.seek(0)
            version = fmt.read_magic(f)
            read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
            if version not in read:
                return None  # a newer header: numpy's load decides
            shape, _, dtype = read[version](f)
            data = path.stat().st_size - f.tell()
    except (OSError, ValueError, SyntaxError) as e:
        return f"has a damaged .npy header ({e}); save the array again with numpy.save"
    if dtype.hasobject:
        return "holds Python objects (dtype object); save a numeric array with numpy.save"
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data < want:
        return (
            f"is truncated: its header says {dtype} {tuple(shape)} ({want:,} bytes) but only "
            f"{data:,} bytes follow; copy the file again, or save it again with numpy.save"
        )
    return None


def _file_record(path: Path, arr: np.ndarray) -> dict:
    return {
        "path": str(path.resolve()),
        "sha256": store.sha256_file(path),
        "shape": [int(d) for d in arr.shape],
        "dtype": str(arr.dtype),
    }


def _as_keep(keep: np.ndarray, name: str) -> np.ndarray:
    if keep.size == 0:
        raise DataError(f"{name} is empty (shape {keep.shape}); it must be bool [M, N]")
    if keep.ndim != 2:
        raise DataError(
            f"{name} has shape {keep.shape}; it must be bool [M, N] (one row per model, True "
            "where the model trained on the example)"
        )
    if keep.dtype == bool:
        return np.asarray(keep, bool)
    if np.issubdtype(keep.dtype, np.integer) and np.isin(keep, (0, 1)).all():
        return np.asarray(keep).astype(bool)
    raise DataError(
        f"{name} has dtype {keep.dtype}; it must be bool (or integer 0/1) [M, N]: save it with "
        "keep.astype(bool)"
    )


def _as_logits(logits, name: str, m: int, rows: int, axis: str) -> ModelBlocks:
    """[M, R, C] or [M, R, A, C] float (an array, a memory map or blocks) -> [M, R, A, C] blocks.

    Nothing is read here but shapes and dtypes: the values are read a block at a time later.
    """
    if not isinstance(logits, ModelBlocks) and np.ndim(logits) == 0:
        logits = np.asarray(logits)
    logits = blocks_of(logits)
    if logits.size == 0:
        raise DataError(f"{name} is empty (shape {logits.shape}); it must be float [M, {axis}, C]")
    if not np.issubdtype(logits.dtype, np.floating):
        raise DataError(
            f"{name} has dtype {logits.dtype}; logits must be floating point (float16/32/64): "
            "save them with .astype(numpy.float32)"
        )
    if logits.ndim == 3:
        shape = (*logits.shape[:2], 1, logits.shape[2])
        logits = logits.map(lambda b: b[:, :, None, :], shape)
    if logits.ndim != 4 or logits.shape[:2] != (m, rows):
        raise DataError(
            f"{name} has shape {logits.shape}; it must be [M={m}, {axis}={rows}, C] or "
            f"[M={m}, {axis}={rows}, A, C] (models and examples in the order of the masks)"
        )
    if logits.shape[3] < 2:
        raise DataError(
            f"{name} has C={logits.shape[3]} classes; pass the full logit vector (C >= 2) as "
            "the last axis"
        )
    return logits


def _check_finite(logits: ModelBlocks, name: str) -> None:
    """Raises naming the models with a NaN or infinite logit and each one's first example (the
    words of a run's own check, :func:`jaxsam.store.values.describe_nonfinite`); block by block."""
    found = values.nonfinite_models(logits.blocks())
    if found:
        raise DataError(
            f"{name} holds {values.describe_nonfinite(found)}; a model diverged or its export "
            "failed: leave it out of every file, or recompute its logits"
        )


def correct_predictions(logits: ModelBlocks, labels: np.ndarray) -> np.ndarray:
    """bool [M, R]: the identity view's arg-max equals the label, computed block by block."""
    if logits.shape[1] == 0:
        return np.zeros(logits.shape[:2], bool)
    return np.concatenate([metrics.correct_predictions(b, labels) for _, b in logits.blocks()])


def _as_labels(labels: np.ndarray, name: str, rows: int, classes: int, axis: str) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != rows:
        raise DataError(
            f"{name} has shape {labels.shape}; it must be int [{axis}={rows}], one label per "
            "example in the order of the logits"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{name} has dtype {labels.dtype}; labels must be integers: save them with "
            ".astype(numpy.int64)"
        )
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(
            f"{name} holds labels in [{labels.min()}, {labels.max()}] but the logits have "
            f"C={classes} classes; labels must lie in [0, {classes})"
        )
    return labels.astype(np.int32)


def mask_counts(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Models IN (trained on) and OUT of each example: two int [N] from bool [M, N]."""
    n_in = keep.sum(axis=0)
    return n_in, keep.shape[0] - n_in


def _sparse_examples(keep: np.ndarray, min_models: int) -> np.ndarray:
    n_in, n_out = mask_counts(keep)
    return (n_in < min_models) | (n_out < min_models)


def _test_arrays(test_logits, test_labels, nm: dict, m: int, a: int, c: int):
    """The held-out logits [M, T, A, C] and labels [T], checked (none: T = 0)."""
    if test_logits is None:
        return blocks_of(np.zeros((m, 0, a, c), np.float32)), np.zeros(0, np.int32)
    shape = test_logits.shape if isinstance(test_logits, ModelBlocks) else np.shape(test_logits)
    t = shape[1] if len(shape) >= 2 else 0
    test_logits = _as_logits(test_logits, nm["test_logits"], m, t, "T")
    if test_logits.shape[2:] != (a, c):
        raise DataError(
            f"{nm['test_logits']} has A={test_logits.shape[2]}, C={test_logits.shape[3]} but "
            f"{nm['logits']} has A={a}, C={c}; export both with the same query views and "
            "classes"
        )
    _check_finite(test_logits, nm["test_logits"])
    test_labels = _as_labels(np.asarray(test_labels), nm["test_labels"], t, c, "T")
    return test_logits, test_labels


def _check_sparse(
    sparse: np.ndarray, keep: np.ndarray, name: str, min_models: int, drop_sparse: bool
) -> None:
    """Refuses examples short of ``min_models`` IN or OUT models (unless dropped) or none left."""
    m, n = keep.shape
    if sparse.any() and not drop_sparse:
        n_in, n_out = mask_counts(keep)
        ex = int(np.flatnonzero(sparse)[0])
        raise DataError(
            f"{name}: {int(sparse.sum())} of {n} examples are in fewer than {min_models} "
            f"models or out of fewer than {min_models} (example {ex} is IN in {int(n_in[ex])} "
            f"and OUT in {int(n_out[ex])} of M={m}); every example needs IN and OUT shadow models "
            f"(LiRA's equal groups need {DEFAULT_MIN_MODELS} of each): import more models, or "
            f"pass {option('drop_sparse')} to leave those examples out"
        )
    if sparse.all():
        raise DataError(
            f"{name}: every example is in fewer than {min_models} models or out of fewer "
            f"than {min_models} of M={m}; nothing is left to score: import more models"
        )


def check_arrays(
    keep: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    test_logits: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    *,
    names: dict[str, str] | None = None,
    query_names: Sequence[str] | None = None,
    min_models: int = DEFAULT_MIN_MODELS,
    drop_sparse: bool = False,
    provenance: dict | None = None,
) -> Imported:
    """Checks imported arrays and brings them to the run directory's shapes.

    Args:
      keep: bool (or integer 0/1) [M, N], True where model m trained on example n.
      logits: float [M, N, C] or [M, N, A, C] (query 0 the identity view): an array, a memory
        map (``numpy.load(..., mmap_mode="r")``: read a block of models at a time, so an import
        never holds the logits whole) or :class:`ModelBlocks`.
      labels: int [N] in [0, C).
      test_logits, test_labels: optional held-out logits [M, T, C] or [M, T, A, C] and labels
        [T], both or neither.
      names: what to call each array in messages (e.g. its file), by argument name.
      query_names: the A view names (default: ``identity``, ``view_1``, ...).
      min_models: every example must be in at least this many models and out of at least this
        many (>= 1; 2 by default, what LiRA's equal shadow groups need).
      drop_sparse: leave out the examples that fall short of ``min_models`` instead of refusing.
      provenance: run.json's ``"provenance"`` (``dropped_examples`` is added).

    Raises:
      DataError: a shape, dtype, non-finite value or mask count that cannot make a run.
    """
    nm = {"keep": "keep", "logits": "logits", "labels": "labels"}
    nm |= {"test_logits": "test logits", "test_labels": "test labels"} | dict(names or {})
    if (test_logits is None) != (test_labels is None):
        raise DataError(
            f"pass {option('test_logits', None)} and {option('test_labels', None)} together "
            "(held-out logits need their labels), or neither"
        )
    if min_models < 1:
        raise DataError(
            f"{option('min_models', str(min_models))} asks for no IN or OUT model at all; pass "
            f"{option('min_models', '1')} or more (every example needs an IN and an OUT model; "
            "the default 2 is what LiRA's equal groups need)"
        )
    keep = _as_keep(np.asarray(keep), nm["keep"])
    m, n = keep.shape
    if m < 2:
        raise DataError(
            f"{nm['keep']} has M={m} model(s); membership scoring needs M >= 2 (each target is "
            "scored against the other models): import more models"
        )
    lshape = tuple(getattr(logits, "shape", ()))
    if m != n and len(lshape) in (3, 4) and lshape[:2] == (n, m):
        raise DataError(
            f"{nm['keep']} has shape {keep.shape} but {nm['logits']} {lshape}: the masks look "
            f"transposed; they must be bool [M={n}, N={m}], one row per model: save keep.T"
        )
    logits = _as_logits(logits, nm["logits"], m, n, "N")
    _check_finite(logits, nm["logits"])
    a, c = logits.shape[2:]
    labels = _as_labels(np.asarray(labels), nm["labels"], n, c, "N")
    test_logits, test_labels = _test_arrays(test_logits, test_labels, nm, m, a, c)
    names_q = list(query_names or ["identity"] + [f"view_{i}" for i in range(1, a)])
    if len(names_q) != a:
        raise DataError(f"{len(names_q)} query names for A={a} query views; name each view once")
    sparse = _sparse_examples(keep, min_models)
    ids = np.arange(n, dtype=np.int64)
    _check_sparse(sparse, keep, nm["keep"], min_models, drop_sparse)
    dropped = np.flatnonzero(sparse)
    if dropped.size:
        sel = ~sparse
        keep, labels, ids = keep[:, sel], labels[sel], ids[sel]
        logits = logits.map(lambda b: b[:, sel], (m, int(sel.sum()), a, c))
    prov = dict(provenance or {})
    prov["dropped_examples"] = [int(i) for i in dropped]
    prov["min_models"] = int(min_models)
    return Imported(keep, logits, labels, test_logits, test_labels, ids, names_q, prov)


def detected_design(keep: np.ndarray) -> dict:
    """run.json's ``"mask_design"`` of an imported run: what the masks show.

    ``{"design", "dependence", "pkeep", "in_models", "source": "detected"}`` from
    :func:`jaxsam.attacks.detect_design`: ``exact`` (every example in the same number of
    models), ``bernoulli`` (counts vary and the other models' memberships do not depend on a
    target's) or ``dependent`` (counts vary but they do, e.g. exact masks with models missing).
    """
    from jaxsam.attacks import detect_design

    return {**detect_design(keep), "source": "detected"}


def imported_config(keep: np.ndarray, test_size: int) -> config_lib.Config:
    """The ``config.json`` of an imported run: what is known, the rest at defaults (unused).

    ``masks.design`` is ``bernoulli`` where the masks look independent, else ``exact`` (the
    closest of the two; run.json's ``mask_design`` says what was found).
    """
    m, n = keep.shape
    design = "bernoulli" if detected_design(keep)["design"] == "bernoulli" else "exact"
    cfg = config_lib.Config(
        data=config_lib.DataConfig(
            dataset=IMPORTED_DATASET,
            pool_size=int(n),
            test_split="test" if test_size else None,
            test_size=int(test_size) if test_size else None,
        ),
        masks=config_lib.MaskConfig(models=int(m), pkeep=float(keep.mean()), seed=0, design=design),
    )
    return config_lib.validate(cfg)


def pool_origin(labels: np.ndarray, ids: np.ndarray, classes: int, test_size: int) -> dict:
    """run.json's ``pool`` entry for imported arrays (its fingerprint ties masks to labels)."""
    h = hashlib.sha256(f"{IMPORTED_DATASET}/pool".encode())
    h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int32).tobytes())
    return {
        "dataset": IMPORTED_DATASET,
        "pool_split": None,
        "test_split": "test" if test_size else None,
        "pool_size": int(labels.shape[0]),
        "test_size": int(test_size),
        "num_classes": int(classes),
        "input_shape": None,
        "kind": IMPORTED_DATASET,
        "fingerprint": h.hexdigest(),
    }


def import_run(out: str | Path, imported: Imported, *, overwrite: bool = False) -> store.Run:
    """Writes checked arrays (:func:`check_arrays`) as a complete run directory ``out``.

    The directory gets what a trained run gets (config, masks, run header, logits, metrics,
    digests, ``COMPLETE`` last); run.json adds ``"provenance"``. Returns the run read back.

    Raises:
      RunDirError: ``out`` exists and is not empty (without ``overwrite``), or holds no jaxsam
        run (with it), or is not writable. Nothing is written then.
    """
    from jaxsam.pipeline.study import accuracy_metrics_from_correct

    out = Path(out)
    im = imported
    t = int(im.test_labels.shape[0])
    cfg = imported_config(im.keep, t)
    origin = pool_origin(im.labels, im.ids, im.logits.shape[3], t)
    prov = dict(im.provenance, kind="imported")
    now = datetime.datetime.now(datetime.timezone.utc)
    prov.setdefault("imported_at", now.isoformat(timespec="seconds"))
    prov.setdefault("jaxsam_version", __version__)
    store.check_run_dir(out, cfg, overwrite=overwrite)  # touches nothing: before the lock
    with store.run_lock(out, "import-logits"):
        store.prepare_run_dir(out, cfg, overwrite=overwrite)
        header = {"provenance": prov, "mask_design": detected_design(im.keep)}
        store.start_run(out, cfg, origin, im.keep, im.ids, im.labels, extra=header)
        correct = correct_predictions(im.logits, im.labels)
        test_correct = correct_predictions(im.test_logits, im.test_labels)
        metrics = accuracy_metrics_from_correct(correct, im.keep, test_correct)
        metrics["imported"] = True
        arrays = ("logits", "labels", "query_names", "test_logits", "test_labels")
        run_arrays = {name: getattr(im, name) for name in arrays}
        store.finish_run(out, **run_arrays, metrics=metrics, failed_models=[])
    return store.load_run(out)


def import_arrays(
    out: str | Path,
    keep: str | Path,
    logits: str | Path,
    labels: str | Path,
    test_logits: str | Path | None = None,
    test_labels: str | Path | None = None,
    *,
    query_names: Sequence[str] | None = None,
    min_models: int = DEFAULT_MIN_MODELS,
    drop_sparse: bool = False,
    overwrite: bool = False,
) -> store.Run:
    """``jaxsam import-logits --keep K.npy --logits L.npy --labels Y.npy --out RUN``.

    Reads the ``.npy`` files (see :func:`check_arrays` for their shapes), checks them and writes
    the run (:func:`import_run`); its provenance lists every file with its sha256.
    """
    paths = {"keep": keep, "logits": logits, "labels": labels}
    if test_logits is not None or test_labels is not None:
        paths |= {"test_logits": test_logits, "test_labels": test_labels}
    arrays, files = {}, {}
    for key, p in paths.items():
        if p is None:
            other = option("test_labels" if key == "test_labels" else "test_logits", None)
            both = f"{option('test_logits', None)} and {option('test_labels', None)}"
            raise DataError(f"{other} is missing; pass {both} together")
        p = Path(p)
        arrays[key] = load_npy(p, key.replace("_", " "))
        files[key] = _file_record(p, arrays[key])
    prov = {"format": "arrays", "source": str(Path(logits).resolve().parent), "files": files}
    im = check_arrays(
        names={k: str(p) for k, p in paths.items()},
        query_names=query_names,
        min_models=min_models,
        drop_sparse=drop_sparse,
        provenance=prov,
        **arrays,
    )
    return import_run(out, im, overwrite=overwrite)
