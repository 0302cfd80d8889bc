"""tensorflow-datasets source: prepare offline (needs TensorFlow), read without TensorFlow.

Reading uses tfds' array_record data sources (``builder.as_data_source``), which decode images
with PIL and need no TensorFlow. Preparing (``download_and_prepare``) needs TensorFlow; jaxsam
prepares in the ``array_record`` file format so that reading stays TensorFlow-free.

Offline preparation reads the original archives from a manual directory. tfds validates every
file against checksums that ship with the package; Debian's Fashion-MNIST ``.gz`` files (and any
re-compressed copy) differ byte-wise from upstream, so jaxsam registers the checksums of the
files it is given instead. tfds would write those into its own installed package
(``register_checksums=True`` normally edits the builder's checksums file); jaxsam redirects that
write to ``DATA_DIR/jaxsam_checksums/NAME.tsv`` so the installed tfds is never modified.

Example ids are the row indices of the prepared split (tfds fixes that order deterministically
at preparation). A fully read split is cached as ``.npy`` files under ``DATA_DIR/jaxsam_cache``.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import inspect
import io
import json
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import types
from pathlib import Path

import numpy as np

from jaxsam.errors import DataError

# Where distributions put the original files; used when data.manual_dir is not set.
KNOWN_MANUAL_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}
INSTALL_TF = "pip install tensorflow-cpu  (or: pip install 'jaxsam[prepare]')"
_READ_CHUNK = 2048


def quiet_tensorflow_logs() -> None:
    """Silences TensorFlow's and absl's informational noise; errors still show.

    TensorFlow's C++ log keeps errors only (``TF_CPP_MIN_LOG_LEVEL=2`` unless the
    user set it), and the ``absl`` Python logger, which tfds uses for notes such as "OpenCV is
    not installed" or "Variant folder ... has no dataset_info.json", keeps errors only.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    absl_log = logging.getLogger("absl")
    if absl_log.level < logging.ERROR:
        absl_log.setLevel(logging.ERROR)


def _tfds():
    quiet_tensorflow_logs()
    import tensorflow_datasets as tfds

    return tfds


def prepare_command(name: str, data_dir: str | None, manual_dir: str | None = None) -> str:
    """The shell command that prepares ``name`` offline."""
    manual = manual_dir or KNOWN_MANUAL_DIRS.get(name, ("DIR_WITH_ORIGINAL_FILES",))[0]
    cmd = f"jaxsam prepare {name} --manual-dir {manual}"
    return cmd + (f" --data-dir {data_dir}" if data_dir else "")


def _builder_cls(name: str):
    tfds = _tfds()
    base, _ = tfds.core.naming.parse_builder_name_kwargs(name)
    try:
        return tfds.builder_cls(str(base))
    except Exception as e:  # DatasetNotFoundError and friends
        known = tfds.list_builders(with_community_datasets=False)
        near = difflib.get_close_matches(str(base), known, n=3)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise DataError(
            f"unknown dataset {name!r}: not embedded, not idx:/npz:, and tfds has no such "
            f"dataset; {hint}use 'digits', a tfds name such as 'cifar10', 'idx:DIR' or 'npz:FILE'"
        ) from e


def _builder_kwargs(name: str) -> dict:
    _, kwargs = _tfds().core.naming.parse_builder_name_kwargs(name)
    return {k: v for k, v in kwargs.items() if k in ("config", "version")}


def _shipped_checksums(cls) -> Path | None:
    """The checksums file tfds ships for ``cls`` (without touching ``cls.code_path``)."""
    tfds = _tfds()
    legacy = Path(str(tfds.core.utils.tfds_path())) / "url_checksums" / f"{cls.name}.txt"
    try:
        beside = Path(inspect.getfile(cls)).parent / "checksums.tsv"
    except TypeError:
        beside = None
    for path in (beside, legacy):
        if path is not None and path.is_file():
            return path
    return None


def _local_builder(name: str, data_dir: str | None):
    """A builder for ``name`` whose checksums file lives in ``data_dir``, not in tfds.

    The subclass keeps the registered name (so the data lands where ``tfds.builder(name)``
    reads it) and is not registered itself.
    """
    tfds = _tfds()
    cls = _builder_cls(name)
    root = Path(data_dir) if data_dir else Path(str(tfds.core.constants.DATA_DIR)).expanduser()
    checksums = root / "jaxsam_checksums" / f"{cls.name}.tsv"
    checksums.parent.mkdir(parents=True, exist_ok=True)
    shipped = _shipped_checksums(cls)
    if shipped is not None:
        shutil.copyfile(shipped, checksums)
    else:
        checksums.touch()

    def _checksums_path(_cls):
        return checksums

    def body(ns: dict) -> None:
        ns["name"] = cls.name
        ns["_checksums_path"] = tfds.core.utils.classproperty(classmethod(_checksums_path))

    local = types.new_class(cls.__name__, (cls,), {"skip_registration": True}, body)
    builder = local(data_dir=str(root), file_format="array_record", **_builder_kwargs(name))
    return builder, checksums


def _require_tensorflow(name: str) -> None:
    quiet_tensorflow_logs()
    try:
        import tensorflow  # noqa: F401
    except ImportError as e:
        raise DataError(
            f"preparing tfds dataset {name!r} needs TensorFlow (reading it later does not); "
            f"install it: {INSTALL_TF}"
        ) from e


def _expected_files(checksums: Path) -> list[str]:
    if not checksums.is_file():
        return []
    names = []
    for line in checksums.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and parts[3]:
            names.append(parts[3])
    return names


def prepare(
    name: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    download: bool = False,
) -> Path:
    """Downloads (``download=True``) or reads from ``manual_dir`` and prepares ``name``.

    Offline (``manual_dir`` set): every original file the builder knows must be in
    ``manual_dir`` under its upstream name (``train-images-idx3-ubyte.gz``,
    ``cifar-10-binary.tar.gz``, ...); for CIFAR the python-version archive
    (``cifar-10-python.tar.gz``) is accepted too and converted to the binary layout tfds reads.

    Args:
      name: tfds name, optionally with ``/config`` and ``:version``.
      data_dir: tfds data directory (``None``: tfds' default, ``~/tensorflow_datasets``).
      manual_dir: directory of original files, for offline preparation.
      download: allow tfds to download when ``manual_dir`` is not given.

    Returns:
      The prepared dataset's directory.
    """
    tfds = _tfds()
    if manual_dir is None and not download:
        raise DataError(
            f"preparing {name!r} needs either a manual directory of the original files or "
            f"permission to download; run: {prepare_command(name, data_dir)}"
        )
    _require_tensorflow(name)
    builder, checksums = _local_builder(name, data_dir)
    with tempfile.TemporaryDirectory(prefix="jaxsam-prepare-") as tmp:
        if manual_dir is not None:
            manual = Path(manual_dir).expanduser()
            if not manual.is_dir():
                raise DataError(
                    f"manual directory {manual} does not exist; put the original files of "
                    f"{name!r} there (see docs/data.md)"
                )
            manual = _stage_cifar_python(builder.name, manual, Path(tmp) / "manual")
            missing = [f for f in _expected_files(checksums) if not (manual / f).exists()]
            if missing:
                raise DataError(
                    f"{manual} lacks {', '.join(missing)} needed to prepare {name!r} offline; "
                    "copy the original files there under these names"
                )
            config = tfds.download.DownloadConfig(manual_dir=str(manual), register_checksums=True)
        else:
            config = tfds.download.DownloadConfig()
        try:
            builder.download_and_prepare(
                download_dir=str(Path(tmp) / "downloads"), download_config=config
            )
        except DataError:
            raise
        except Exception as e:
            how = "offline from the manual directory" if manual_dir else "by download"
            raise DataError(
                f"tfds could not prepare {name!r} {how} ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); "
                f"prepare it offline: {prepare_command(name, data_dir, manual_dir)}"
            ) from e
    return Path(builder.data_dir)


# ---------------------------------------------------------------------------------------------
# CIFAR python-version archives -> the binary layout the tfds builders read.

_CIFAR_PY = {
    "cifar10": (
        "cifar-10-python.tar.gz",
        "cifar-10-binary.tar.gz",
        "cifar-10-batches-py",
        "cifar-10-batches-bin",
        ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"],
        ["test_batch"],
    ),
    "cifar100": (
        "cifar-100-python.tar.gz",
        "cifar-100-binary.tar.gz",
        "cifar-100-python",
        "cifar-100-binary",
        ["train"],
        ["test"],
    ),
}
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Reads the CIFAR python batches: dicts, lists, bytes and numpy arrays, nothing callable."""

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise DataError(
            f"CIFAR batch refers to {module}.{name}, which a CIFAR archive never does; "
            "use the original archive from https://www.cs.toronto.edu/~kriz/cifar.html"
        )


def _read_batch(tar: tarfile.TarFile, member: str) -> dict:
    try:
        f = tar.extractfile(member)
    except KeyError as e:
        raise DataError(f"CIFAR archive lacks {member}; use the original archive") from e
    batch = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _stage_cifar_python(name: str, manual: Path, staging: Path) -> Path:
    """Converts a CIFAR python-version archive in ``manual`` to the binary one tfds reads.

    Returns ``manual`` unchanged when the binary archive is already there or ``name`` is not
    CIFAR; otherwise a staging directory holding the binary archive.
    """
    if name not in _CIFAR_PY:
        return manual
    py_name, bin_name, py_dir, bin_dir, train, test = _CIFAR_PY[name]
    if (manual / bin_name).exists() or not (manual / py_name).exists():
        return manual
    staging.mkdir(parents=True, exist_ok=True)
    with (
        tarfile.open(manual / py_name, "r:gz") as src,
        tarfile.open(staging / bin_name, "w:gz", compresslevel=1) as dst,
    ):

        def add(arcname: str, payload: bytes) -> None:
            info = tarfile.TarInfo(f"{bin_dir}/{arcname}")
            info.size = len(payload)
            dst.addfile(info, io.BytesIO(payload))

        for member in train + test:
            batch = _read_batch(src, f"{py_dir}/{member}")
            data = np.asarray(batch["data"], np.uint8).reshape(-1, 3072)
            if name == "cifar10":
                labels = np.asarray(batch["labels"], np.uint8)[:, None]
            else:
                coarse = np.asarray(batch["coarse_labels"], np.uint8)
                fine = np.asarray(batch["fine_labels"], np.uint8)
                labels = np.stack([coarse, fine], axis=1)
            if labels.shape[0] != data.shape[0]:
                raise DataError(
                    f"{py_name}/{member}: {data.shape[0]} images but {labels.shape[0]} labels; "
                    "the archive is damaged, download it again"
                )
            add(f"{member}.bin", np.concatenate([labels, data], axis=1).tobytes())
        meta = _read_batch(src, f"{py_dir}/{'batches.meta' if name == 'cifar10' else 'meta'}")

        def names(key: str) -> bytes:
            return (
                "\n".join(n.decode() if isinstance(n, bytes) else n for n in meta[key]) + "\n"
            ).encode()

        if name == "cifar10":
            add("batches.meta.txt", names("label_names"))
        else:
            add("coarse_label_names.txt", names("coarse_label_names"))
            add("fine_label_names.txt", names("fine_label_names"))
    return staging


# ---------------------------------------------------------------------------------------------
# Reading.


def _read_builder(name: str, data_dir: str | None):
    tfds = _tfds()
    _builder_cls(name)  # clear error for unknown names
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        raise DataError(
            f"tfds cannot open {name!r} in {data_dir or 'its default data dir'} ({e}); "
            f"prepare it again: {prepare_command(name, data_dir)}"
        ) from e
    return builder if builder.is_prepared() else None


def is_prepared(name: str, data_dir: str | None = None) -> bool:
    """True when ``name`` is prepared in ``data_dir`` (tfds' default when ``None``)."""
    return _read_builder(name, data_dir) is not None


def ensure_prepared(name: str, data_dir: str | None, manual_dir: str | None, download: bool):
    """Returns a prepared builder, preparing first when allowed (see :func:`prepare`)."""
    builder = _read_builder(name, data_dir)
    if builder is not None:
        return builder
    if manual_dir is None:
        manual_dir = next((d for d in KNOWN_MANUAL_DIRS.get(name, ()) if Path(d).is_dir()), None)
    if manual_dir is None and not download:
        raise DataError(
            f"tfds dataset {name!r} is not prepared in {data_dir or '~/tensorflow_datasets'} "
            f"and downloading is off (data.download); prepare it offline: "
            f"{prepare_command(name, data_dir)}"
        )
    prepare(name, data_dir, manual_dir, download)
    builder = _read_builder(name, data_dir)
    if builder is None:
        raise DataError(f"{name!r} is still not prepared; run {prepare_command(name, data_dir)}")
    return builder


def _feature_keys(builder) -> tuple[str, str, int]:
    tfds = _tfds()
    features = builder.info.features
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    image = "image" if "image" in images else (images[0] if len(images) == 1 else None)
    label = "label" if "label" in labels else (labels[0] if len(labels) == 1 else None)
    if image is None or label is None:
        raise DataError(
            f"{builder.name} is not an image-classification dataset jaxsam can read (it needs "
            f"one Image and one ClassLabel feature; has {list(features)}); use another dataset "
            "or export it to npz:FILE"
        )
    return image, label, int(features[label].num_classes)


def _split_size(builder, split: str) -> int:
    splits = builder.info.splits
    if split not in splits:
        raise DataError(f"{builder.name} has no split {split!r}; use one of {sorted(splits)}")
    return int(splits[split].num_examples)


def _cache_dir(builder, split: str) -> Path:
    root = Path(str(builder.data_dir_root))
    rel = Path(str(builder.data_dir)).relative_to(root)
    return root / "jaxsam_cache" / rel / split


def _read_cache(builder, split: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    d = _cache_dir(builder, split)
    try:
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("num_examples") != n:
            return None
        x = np.load(d / "x.npy", mmap_mode="r", allow_pickle=False)
        y = np.load(d / "y.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if x.shape[0] != n or y.shape[0] != n:
        return None
    return x, y


def _write_cache(builder, split: str, x: np.ndarray, y: np.ndarray) -> None:
    d = _cache_dir(builder, split)
    try:
        d.mkdir(parents=True, exist_ok=True)
        for key, arr in (("x", x), ("y", y)):
            tmp = d / f".{key}.{os.getpid()}.npy"
            np.save(tmp, arr, allow_pickle=False)
            tmp.replace(d / f"{key}.npy")
        (d / "meta.json").write_text(json.dumps({"num_examples": int(x.shape[0])}))
    except OSError:
        pass  # a read-only data dir just means no cache


def _read_rows(builder, split: str, rows: np.ndarray, image: str, label: str):
    """Decodes ``rows`` of ``split`` into uint8 [n, H, W, C] and int32 [n] (threads, no TF)."""
    tfds = _tfds()
    file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format))
    if file_format != "array_record":
        try:
            import tensorflow  # noqa: F401
        except ImportError as e:
            raise DataError(
                f"{builder.name} was prepared as {file_format}, which only TensorFlow reads; "
                f"install it ({INSTALL_TF}) or prepare again as array_record: "
                f"{prepare_command(builder.name, str(builder.data_dir_root))}"
            ) from e
        full = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        x, y = np.asarray(full[image]), np.asarray(full[label])
        return np.ascontiguousarray(x[rows]).astype(np.uint8), y[rows].astype(np.int32)
    source = builder.as_data_source(split=split)
    shape = builder.info.features[image].shape
    if any(s is None for s in shape):
        raise DataError(
            f"{builder.name} has images of varying size {shape}; jaxsam pools need one image "
            "shape (resize it and export to npz:FILE)"
        )
    x = np.empty((rows.size, *shape), np.uint8)
    y = np.empty((rows.size,), np.int32)
    starts = range(0, rows.size, _READ_CHUNK)

    def read(start: int) -> None:
        items = source.__getitems__(rows[start : start + _READ_CHUNK].tolist())
        for j, item in enumerate(items):
            x[start + j] = item[image]
            y[start + j] = item[label]

    with concurrent.futures.ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        list(pool.map(read, starts))
    return x, y


def read_split(builder, split: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Rows of one split of a prepared builder (from :func:`ensure_prepared`).

    Args:
      builder: the prepared tfds builder.
      split: split name (``train``, ``test``, ...).
      rows: int64 row indices to read (``None``: the whole split, which is then cached).

    Returns:
      x: uint8 [n, H, W, C]; y: int32 [n]; num_classes.
    """
    image, label, num_classes = _feature_keys(builder)
    n = _split_size(builder, split)
    whole = rows is None
    rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    cached = _read_cache(builder, split, n)
    if cached is not None:
        x = cached[0] if whole else cached[0][rows]
        return np.ascontiguousarray(x), cached[1][rows].astype(np.int32), num_classes
    x, y = _read_rows(builder, split, rows, image, label)
    if whole:
        _write_cache(builder, split, x, y)
    return x, y, num_classes


def split_size(builder, split: str) -> int:
    """Number of examples in ``split`` of a prepared builder."""
    return _split_size(builder, split)
