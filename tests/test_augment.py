"""On-device augmentation: exact pixel permutations and shifts, per-model randomness, names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsam.data import augment


def _images(b=16, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, h, w, c), dtype=np.uint8)


def test_flip_is_identity_or_exact_mirror_per_example():
    x = _images(b=64)
    out = np.asarray(augment.random_flip(jax.random.key(0), jnp.asarray(x)))
    same = np.all(out == x, axis=(1, 2, 3))
    mirrored = np.all(out == x[:, :, ::-1, :], axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert same.any() and mirrored.any()  # randomness per example, not per batch


def test_crop_is_a_window_of_the_reflect_padded_image():
    x = _images(b=32)
    out = np.asarray(augment.random_crop(jax.random.key(1), jnp.asarray(x), pad=4))
    assert out.dtype == np.uint8 and out.shape == x.shape
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    offsets = set()
    for i in range(x.shape[0]):
        hits = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if np.array_equal(out[i], padded[i, dy : dy + 8, dx : dx + 8])
        ]
        assert hits, f"image {i} is not a crop of its padded original"
        offsets.add(hits[0])
    assert len(offsets) > 5


def test_vmap_over_models_gives_each_model_its_own_draws():
    x = jnp.asarray(_images(b=8))
    keys = jax.random.split(jax.random.key(3), 4)
    out = jax.vmap(lambda k: augment.train_augment(k, x, "flip_crop"))(keys)
    assert out.shape == (4, *x.shape)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(out[a], out[b])
    again = jax.vmap(lambda k: augment.train_augment(k, x, "flip_crop"))(keys)
    np.testing.assert_array_equal(out, again)


def test_train_augment_modes():
    x = jnp.asarray(_images(b=4))
    key = jax.random.key(0)
    np.testing.assert_array_equal(augment.train_augment(key, x, "none"), x)
    tab = jnp.ones((4, 7))
    np.testing.assert_array_equal(augment.train_augment(key, tab, "flip_crop"), tab)
    with pytest.raises(ValueError, match="unknown"):
        augment.train_augment(key, x, "flp")


@pytest.mark.parametrize(
    "mode,kind,dataset,expected",
    [
        ("auto", "image", "cifar10", "flip_crop"),
        ("auto", "image", "digits", "none"),
        ("auto", "image", "mnist", "none"),
        ("auto", "image", "idx:/data/mnist", "none"),
        ("auto", "image", "svhn_cropped", "crop"),
        ("auto", "image", "fashion_mnist", "flip_crop"),
        ("auto", "tabular", "npz:purchase.npz", "none"),
        ("flip_crop", "tabular", "npz:purchase.npz", "none"),
        ("flip", "image", "digits", "flip"),
    ],
)
def test_resolve_train_augment(mode, kind, dataset, expected):
    assert augment.resolve_train_augment(mode, kind, dataset) == expected


def _naive_view(x, name):
    mirror = name.startswith("mirror")
    img = x[:, :, ::-1, :] if mirror else x
    if name in ("identity", "mirror"):
        return img
    dy, dx = (int(v) for v in name.split("shift_")[1].split("_"))
    p = 2
    padded = np.pad(img, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    return padded[:, p + dy : p + dy + h, p + dx : p + dx + w, :]


@pytest.mark.parametrize("count", [1, 2, 18])
def test_query_views_match_their_names(count):
    x = _images(b=3, h=6, w=7)
    views = np.asarray(augment.query_views(jnp.asarray(x), count))
    names = augment.query_names(count)
    assert views.shape == (count, *x.shape) and len(names) == count == len(set(names))
    for a, name in enumerate(names):
        np.testing.assert_array_equal(views[a], _naive_view(x, name), err_msg=name)


def test_query_views_18_contains_identity_and_mirror():
    x = _images(b=2)
    views = np.asarray(augment.query_views(jnp.asarray(x), 18))
    names = augment.query_names(18)
    np.testing.assert_array_equal(views[names.index("shift_+0_+0")], x)
    np.testing.assert_array_equal(views[names.index("mirror_shift_+0_+0")], x[:, :, ::-1])


def test_query_views_bad_input():
    with pytest.raises(ValueError):
        augment.query_views(jnp.ones((2, 4, 4, 1)), 3)
    with pytest.raises(ValueError):
        augment.query_names(5)
    with pytest.raises(ValueError):
        augment.query_views(jnp.ones((2, 5)), 2)
    np.testing.assert_array_equal(augment.query_views(jnp.ones((2, 5)), 1), jnp.ones((1, 2, 5)))


def test_normalize_closed_form():
    x = np.array([[[[0, 255]]]], np.uint8)  # [1, 1, 1, 2]
    mean = jnp.array([0.5, 0.25])
    std = jnp.array([0.5, 0.25])
    out = augment.normalize(jnp.asarray(x), mean, std, "image")
    np.testing.assert_allclose(out, [[[[-1.0, 3.0]]]], rtol=1e-6)
    tab = augment.normalize(
        jnp.array([[2.0, 4.0]]), jnp.array([1.0, 2.0]), jnp.array([2.0, 4.0]), "tabular"
    )
    np.testing.assert_allclose(tab, [[0.5, 0.5]])
