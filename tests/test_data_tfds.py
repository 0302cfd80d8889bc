"""The real tfds path: offline preparation from original files, TensorFlow-free reading.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/
fashion-mnist``); a tiny CIFAR-10 archive in the original python format is built here with
random pixels and goes through tfds' own cifar10 builder.
"""

import hashlib
import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from jaxsam.config import DataConfig
from jaxsam.data import files, load_pool
from jaxsam.errors import DataError

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _need_tensorflow():
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pytest.skip("preparing tfds data needs TensorFlow: pip install tensorflow-cpu")


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory):
    if not (FMNIST / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST files missing: apt-get install dataset-fashion-mnist")
    _need_tensorflow()
    from jaxsam.data import tfds_source

    data_dir = tmp_path_factory.mktemp("tfds")
    tfds_source.prepare("fashion_mnist", str(data_dir), str(FMNIST))
    return data_dir


def _row_hashes(x, y):
    return sorted(
        hashlib.sha1(xi.tobytes() + int(yi).to_bytes(2, "little")).hexdigest()
        for xi, yi in zip(x, y, strict=True)
    )


def test_fashion_mnist_pool_from_offline_preparation(fmnist_dir):
    cfg = DataConfig(
        dataset="fashion_mnist", data_dir=str(fmnist_dir), pool_size=300, test_size=100
    )
    pool = load_pool(cfg)
    assert pool.x.shape == (300, 28, 28, 1) and pool.x.dtype == np.uint8
    assert pool.num_classes == 10 and pool.test_x.shape == (100, 28, 28, 1)
    assert pool.dataset == "fashion_mnist" and pool.pool_split == "train"
    # Every pool example is a real Fashion-MNIST training image with its label.
    ix, iy = files.load_idx_split(FMNIST, "train")
    known = set(_row_hashes(ix, iy))
    assert set(_row_hashes(pool.x, pool.y)) <= known
    assert load_pool(cfg).fingerprint() == pool.fingerprint()
    # The installed tfds keeps its checksums; ours went to the data dir.
    assert (fmnist_dir / "jaxsam_checksums" / "fashion_mnist.tsv").is_file()


@pytest.mark.slow
def test_fashion_mnist_whole_split_equals_the_idx_files(fmnist_dir):
    ix, iy = files.load_idx_split(FMNIST, "train")
    cfg = DataConfig(dataset="fashion_mnist", data_dir=str(fmnist_dir), test_split=None)
    full = load_pool(cfg)  # decoded TensorFlow-free, then cached as .npy
    assert full.size == 60000 and _row_hashes(full.x, full.y) == _row_hashes(ix, iy)
    cached = load_pool(cfg)
    np.testing.assert_array_equal(cached.x, full.x)


def test_fashion_mnist_trains_and_writes_logits(fmnist_dir, tmp_path):
    from jaxsam import config as cfgmod
    from jaxsam.pipeline import train_and_export

    config = cfgmod.replace(
        cfgmod.Config(),
        **{
            "data.dataset": "fashion_mnist",
            "data.data_dir": str(fmnist_dir),
            "data.pool_size": 128,
            "data.test_size": 64,
            "masks.models": 4,
            "model.width": 16,
            "train.epochs": 1,
            "train.batch_size": 32,
            "train.progress": False,
        },
    )
    train_and_export(config, tmp_path / "run")
    import jaxsam

    run = jaxsam.load_run(tmp_path / "run")
    assert run.logits.shape[:2] == (4, 128) and run.logits.shape[-1] == 10
    assert np.isfinite(np.asarray(run.logits)).all()


def test_not_prepared_without_download_names_the_command(tmp_path):
    with pytest.raises(DataError, match="jaxsam prepare cifar10 --manual-dir"):
        load_pool(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))


def test_unknown_tfds_name():
    with pytest.raises(DataError, match="unknown dataset 'cifar11'.*cifar10"):
        load_pool(DataConfig(dataset="cifar11"))


def test_prepare_without_tensorflow_says_what_to_install(tmp_path, monkeypatch):
    from jaxsam.data import tfds_source

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(DataError, match="pip install tensorflow-cpu"):
        tfds_source.prepare("cifar10", str(tmp_path), str(tmp_path))


def test_missing_manual_files_are_named(tmp_path):
    _need_tensorflow()
    from jaxsam.data import tfds_source

    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "README").write_text("nothing here")
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz"):
        tfds_source.prepare("cifar10", str(tmp_path / "data"), str(tmp_path / "manual"))


def _cifar_python_archive(path, per_batch=6, n_test=5):
    """Writes cifar-10-python.tar.gz in the original layout (pickled dicts, CHW rows)."""
    rng = np.random.default_rng(0)
    written = {"train": [], "test": []}
    with tarfile.open(path, "w:gz") as tar:

        def add(name, obj):
            payload = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name in batches:
            n = n_test if name == "test_batch" else per_batch
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, n).tolist()
            add(name, {b"batch_label": name.encode(), b"labels": labels, b"data": data})
            hwc = data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
            written["test" if name == "test_batch" else "train"].append((hwc, np.array(labels)))
        add("batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)]})
    return {k: tuple(np.concatenate(p) for p in zip(*v, strict=True)) for k, v in written.items()}


def test_cifar10_python_archive_through_the_tfds_builder(tmp_path):
    _need_tensorflow()
    from jaxsam.data import tfds_source

    manual = tmp_path / "manual"
    manual.mkdir()
    written = _cifar_python_archive(manual / "cifar-10-python.tar.gz")
    data_dir = tmp_path / "tfds"
    tfds_source.prepare("cifar10", str(data_dir), str(manual))
    assert (data_dir / "cifar10").is_dir()
    pool = load_pool(DataConfig(dataset="cifar10", data_dir=str(data_dir)))
    assert pool.x.shape == (30, 32, 32, 3) and pool.test_x.shape == (5, 32, 32, 3)
    assert pool.num_classes == 10 and pool.mean.shape == (3,)
    assert _row_hashes(pool.x, pool.y) == _row_hashes(*written["train"])
    assert _row_hashes(pool.test_x, pool.test_y) == _row_hashes(*written["test"])
