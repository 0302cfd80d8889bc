"""Imports stream: logits are read and written a block of models at a time, never whole."""

import numpy as np
import pytest

from jaxsam import store
from jaxsam.errors import DataError
from jaxsam.pipeline import import_logits as imp
from jaxsam.store import blocks as blocks_lib


def _files(tmp_path, m=6, n=40, a=2, c=3, seed=0):
    rng = np.random.default_rng(seed)
    keep = np.argsort(rng.random((m, n)), axis=0) < m // 2
    logits = rng.normal(size=(m, n, a, c)).astype(np.float32)
    labels = rng.integers(0, c, n)
    for name, arr in (("keep", keep), ("logits", logits), ("labels", labels)):
        np.save(tmp_path / f"{name}.npy", arr)
    return keep, logits, labels


def test_a_memory_map_is_read_block_by_block_over_its_own_rows(tmp_path):
    _, logits, _ = _files(tmp_path)
    mm = np.load(tmp_path / "logits.npy", mmap_mode="r")
    b = blocks_lib.blocks_of(mm)
    assert b.shape == logits.shape and b.models_per_block(logits[0].nbytes * 2) == 2
    got = list(b.blocks(block_bytes=logits[0].nbytes * 2))
    assert [a for a, _ in got] == [0, 2, 4]
    for a, block in got:
        assert not isinstance(block, np.memmap)  # a copy: the block's mapping is closed
        np.testing.assert_array_equal(block, logits[a : a + 2])
    np.testing.assert_array_equal(np.asarray(b), logits)
    # A view of a map is not the whole file: read by slicing it, still correct.
    view = blocks_lib.blocks_of(mm[:, :, :1])
    np.testing.assert_array_equal(np.asarray(view), logits[:, :, :1])


def test_streamed_logits_folder_reads_back_with_load_arrays(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 7, 2, 3)).astype(np.float64)
    empty = np.zeros((5, 0, 2, 3), np.float32)  # no held-out split
    labels, test_labels = rng.integers(0, 3, 7), np.zeros(0, np.int32)
    big = blocks_lib.blocks_of(logits)
    calls = []
    spy = blocks_lib.ModelBlocks(
        big.shape, big.dtype, lambda a, b: calls.append((a, b)) or big.read(a, b)
    )
    path = tmp_path / "logits"
    store.arrays.save_logits_streamed(path, spy, labels, empty, test_labels)
    got = store.load_arrays(path, "logits")
    assert got["logits"].dtype == np.float32 and got["test_logits"].shape == (5, 0, 2, 3)
    np.testing.assert_array_equal(got["logits"], logits.astype(np.float32))
    np.testing.assert_array_equal(got["labels"], labels)
    assert store.arrays.array_shapes(path, "logits")["logits"] == (5, 7, 2, 3)
    assert calls == [(0, 5)]  # one block at the default size; no other read
    # Replacing an existing folder keeps only the new arrays.
    store.arrays.save_logits_streamed(
        path, blocks_lib.blocks_of(logits[:2]), labels, empty[:2], test_labels
    )
    assert store.load_arrays(path, "logits")["logits"].shape == (2, 7, 2, 3)


def test_an_import_from_memory_maps_in_small_blocks_equals_the_in_memory_import(
    tmp_path, monkeypatch
):
    keep, logits, labels = _files(tmp_path)
    monkeypatch.setattr(blocks_lib, "BLOCK_BYTES", logits[0].nbytes)  # one model per block
    seen = []
    real = blocks_lib.ModelBlocks.blocks
    monkeypatch.setattr(
        blocks_lib.ModelBlocks,
        "blocks",
        lambda self, block_bytes=None: seen.append(self.shape) or real(self, logits[0].nbytes),
    )
    streamed = imp.import_arrays(
        tmp_path / "run", tmp_path / "keep.npy", tmp_path / "logits.npy", tmp_path / "labels.npy"
    )
    whole = imp.import_run(tmp_path / "run2", imp.check_arrays(keep, logits, labels))
    np.testing.assert_array_equal(streamed.logits, logits)
    np.testing.assert_array_equal(streamed.logits, whole.logits)
    assert (
        streamed.read_json("metrics.json")["train_accuracy"]
        == whole.read_json("metrics.json")["train_accuracy"]
    )
    assert seen  # the values went through blocks, not one whole array


def test_a_nan_in_a_later_block_names_its_model(tmp_path, monkeypatch):
    keep, logits, labels = _files(tmp_path)
    logits[4, 7, 1, 0] = np.nan
    np.save(tmp_path / "logits.npy", logits)
    monkeypatch.setattr(blocks_lib, "BLOCK_BYTES", 2 * logits[0].nbytes)
    with pytest.raises(DataError, match="for model 4 .first at example 7"):
        imp.check_arrays(keep, np.load(tmp_path / "logits.npy", mmap_mode="r"), labels)
