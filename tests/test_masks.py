"""Membership masks: exact per-example counts, reproducibility, bad input."""

import numpy as np
import pytest

from jaxsam.data import make_masks
from jaxsam.errors import ConfigError


@pytest.mark.parametrize("m,pkeep", [(4, 0.5), (7, 0.5), (10, 0.7), (16, 0.25)])
def test_every_example_is_in_exactly_k_models(m, pkeep):
    keep = make_masks(m, 301, pkeep, seed=1)
    assert keep.shape == (m, 301) and keep.dtype == np.bool_
    np.testing.assert_array_equal(keep.sum(axis=0), round(pkeep * m))


def test_seed_reproducible_and_distinct():
    a = make_masks(8, 200, 0.5, seed=3)
    np.testing.assert_array_equal(a, make_masks(8, 200, 0.5, seed=3))
    assert not np.array_equal(a, make_masks(8, 200, 0.5, seed=4))
    assert len({tuple(row) for row in a}) == 8  # models train on different subsets


@pytest.mark.parametrize(
    "m,n,pkeep", [(1, 10, 0.5), (4, 0, 0.5), (4, 10, 1.0), (4, 10, 0.0), (2, 10, 0.9)]
)
def test_bad_input(m, n, pkeep):
    with pytest.raises(ConfigError):
        make_masks(m, n, pkeep)
