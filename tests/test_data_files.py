"""Local sources (idx:, npz:), the embedded default and pool construction."""

import gzip
import struct

import numpy as np
import pytest

from jaxsam.config import DataConfig
from jaxsam.data import files, load_pool
from jaxsam.data.pool import make_pool, select_indices
from jaxsam.errors import DataError


def _write_idx(path, arr, gz):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _idx_dir(tmp_path, n_train=50, n_test=20, gz=True, n_labels=None):
    rng = np.random.default_rng(0)
    data = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 6, 5), dtype=np.uint8)
        y = rng.integers(0, 10, (n_labels or n,), dtype=np.uint8)
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte", x, gz)
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", y, gz)
        data[stem] = (x, y)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    arr = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    _write_idx(tmp_path / "a", arr, gz)
    out = files.read_idx(tmp_path / ("a.gz" if gz else "a"))
    np.testing.assert_array_equal(out, np.arange(24).reshape(2, 3, 4))


def test_idx_pool_matches_files(tmp_path):
    data = _idx_dir(tmp_path)
    pool = load_pool(DataConfig(dataset=f"idx:{tmp_path}", pool_size=30, test_size=10, seed=2))
    x, y = data["train"]
    assert pool.x.shape == (30, 6, 5, 1) and pool.x.dtype == np.uint8 and pool.kind == "image"
    np.testing.assert_array_equal(pool.x[..., 0], x[pool.ids])
    np.testing.assert_array_equal(pool.y, y[pool.ids])
    tx, ty = data["t10k"]
    np.testing.assert_array_equal(pool.test_x[..., 0], tx[pool.test_ids])
    np.testing.assert_array_equal(pool.test_y, ty[pool.test_ids])
    assert np.all(np.diff(pool.ids) > 0) and pool.ids.dtype == np.int64
    np.testing.assert_allclose(pool.mean, [x[pool.ids].mean() / 255.0], rtol=1e-5)
    np.testing.assert_allclose(pool.std, [(x[pool.ids] / 255.0).std()], rtol=1e-4)
    again = load_pool(DataConfig(dataset=f"idx:{tmp_path}", pool_size=30, test_size=10, seed=2))
    assert again.fingerprint() == pool.fingerprint()
    other = load_pool(DataConfig(dataset=f"idx:{tmp_path}", pool_size=30, test_size=10, seed=3))
    assert other.fingerprint() != pool.fingerprint()
    assert pool.origin()["pool_size"] == 30 and pool.origin()["dataset"] == f"idx:{tmp_path}"


def test_idx_plain_files_and_errors(tmp_path):
    _idx_dir(tmp_path, gz=False)
    assert load_pool(DataConfig(dataset=f"idx:{tmp_path}")).size == 50
    with pytest.raises(DataError, match="at most 50"):
        load_pool(DataConfig(dataset=f"idx:{tmp_path}", pool_size=51))
    with pytest.raises(DataError, match="splits"):
        load_pool(DataConfig(dataset=f"idx:{tmp_path}", pool_split="validation"))
    with pytest.raises(DataError, match="does not exist"):
        load_pool(DataConfig(dataset=f"idx:{tmp_path}/nope"))


def test_idx_length_mismatch(tmp_path):
    _idx_dir(tmp_path, n_labels=7)
    with pytest.raises(DataError, match="same length"):
        load_pool(DataConfig(dataset=f"idx:{tmp_path}"))


def test_idx_truncated(tmp_path):
    _idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        load_pool(DataConfig(dataset=f"idx:{tmp_path}"))


def _purchase_like(tmp_path, with_test=True):
    rng = np.random.default_rng(1)
    arrays = {
        "x": (rng.random((80, 12)) < 0.3).astype(np.uint8),
        "y": rng.integers(0, 100, 80),
    }
    if with_test:
        arrays["x_test"] = (rng.random((30, 12)) < 0.3).astype(np.uint8)
        arrays["y_test"] = rng.integers(0, 100, 30)
    arrays["num_classes"] = np.array(100)
    path = tmp_path / "purchase.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_npz_tabular_pool(tmp_path):
    path, arrays = _purchase_like(tmp_path)
    pool = load_pool(DataConfig(dataset=f"npz:{path}", pool_size=40))
    assert pool.kind == "tabular" and pool.x.dtype == np.float32 and pool.x.shape == (40, 12)
    assert pool.num_classes == 100 and pool.test_x.shape == (30, 12)
    np.testing.assert_array_equal(pool.x, arrays["x"][pool.ids])
    np.testing.assert_allclose(pool.mean, arrays["x"][pool.ids].mean(axis=0), rtol=1e-5)
    assert pool.mean.shape == (12,)


def test_npz_without_test_arrays(tmp_path):
    path, _ = _purchase_like(tmp_path, with_test=False)
    with pytest.raises(DataError, match="x_test"):
        load_pool(DataConfig(dataset=f"npz:{path}"))
    assert load_pool(DataConfig(dataset=f"npz:{path}", test_split=None)).test_x.shape[0] == 0
    pool = load_pool(DataConfig(dataset=f"npz:{path}", test_split="train", pool_size=50))
    assert pool.test_x.shape[0] == 30
    assert not set(pool.ids) & set(pool.test_ids)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 3)), y=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="same length"):
        load_pool(DataConfig(dataset=f"npz:{tmp_path / 'bad.npz'}", test_split=None))
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, np.int64))
    with pytest.raises(DataError, match="object arrays"):
        load_pool(DataConfig(dataset=f"npz:{tmp_path / 'obj.npz'}", test_split=None))
    with pytest.raises(DataError, match="does not exist"):
        load_pool(DataConfig(dataset=f"npz:{tmp_path / 'missing.npz'}"))


def _labels_npz(tmp_path, y_test, **extra):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    path = tmp_path / "labels.npz"
    np.savez(path, x=x, y=np.arange(60) % 5, x_test=x[:10], y_test=y_test, **extra)
    return path


def test_held_out_labels_above_the_pools_classes_are_refused(tmp_path):
    # Without a stored num_classes the class count is the pool's: held-out label 7 used to
    # widen the logits to 8 classes and give a held-out accuracy of 0.
    path = _labels_npz(tmp_path, np.full(10, 7))
    msg = r"labels.npz: y_test holds labels 7..7 that never occur in y \(0..4\); .*num_classes=C"
    with pytest.raises(DataError, match=msg):
        load_pool(DataConfig(dataset=f"npz:{path}"))
    with pytest.raises(DataError, match=r"pool's 30 rows of y .*raise data.pool_size"):
        load_pool(DataConfig(dataset=f"npz:{path}", pool_size=30))
    # A stored class count declares the classes: label 7 of 8 is legal.
    path = _labels_npz(tmp_path, np.full(10, 7), num_classes=np.array(8))
    assert load_pool(DataConfig(dataset=f"npz:{path}")).num_classes == 8
    path = _labels_npz(tmp_path, np.arange(10) % 5)
    assert load_pool(DataConfig(dataset=f"npz:{path}")).num_classes == 5


def test_idx_held_out_labels_above_the_pools_classes_are_refused(tmp_path):
    _idx_dir(tmp_path, gz=False)
    y = np.full(20, 3, np.uint8)
    y[4] = 12
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", y, gz=False)
    with pytest.raises(DataError, match=r"t10k-labels file holds labels 12..12 that never occur "):
        load_pool(DataConfig(dataset=f"idx:{tmp_path}"))


def test_make_pool_infers_the_classes_from_the_pool():
    x = np.zeros((10, 3), np.float32)
    with pytest.raises(DataError, match=r"arrays/test holds labels 3..9 .*pass num_classes=C"):
        make_pool(x, np.arange(10) % 3, test_x=x, test_y=np.arange(10))
    pool = make_pool(x, np.arange(10) % 3, test_x=x, test_y=np.arange(10), num_classes=10)
    assert pool.num_classes == 10


def test_select_indices_same_split_is_disjoint():
    sel, tsel = select_indices(100, 60, 0, 25, seed=0, same_split=True)
    assert sel.size == 60 and tsel.size == 25 and not set(sel) & set(tsel)
    sel, tsel = select_indices(100, 60, 0, None, seed=0, same_split=True)
    np.testing.assert_array_equal(np.sort(np.concatenate([sel, tsel])), np.arange(100))
    with pytest.raises(DataError, match="at most 40"):
        select_indices(100, 60, 0, 41, seed=0, same_split=True)


def test_digits_default_pool():
    from sklearn.datasets import load_digits

    pool = load_pool(DataConfig(pool_size=200, test_size=50))
    images = load_digits().images
    assert pool.x.shape == (200, 8, 8, 1) and pool.num_classes == 10
    np.testing.assert_array_equal(pool.x[..., 0], np.rint(images[pool.ids] * 255 / 16))
    assert np.all(pool.ids % 5 != 0) and np.all(pool.test_ids % 5 == 0)
