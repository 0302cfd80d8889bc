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


def test_bernoulli_design_is_independent_and_seeded():
    a = make_masks(16, 4000, 0.3, seed=2, design="bernoulli")
    np.testing.assert_array_equal(a, make_masks(16, 4000, 0.3, seed=2, design="bernoulli"))
    assert not np.array_equal(a, make_masks(16, 4000, 0.3, seed=3, design="bernoulli"))
    counts = a.sum(0)
    assert counts.min() < counts.max()  # IN counts vary, Binomial(16, 0.3)
    assert counts.var() == pytest.approx(16 * 0.3 * 0.7, rel=0.1)
    assert a.mean() == pytest.approx(0.3, abs=0.01)
    # The exact design is untouched by the new option.
    np.testing.assert_array_equal(
        make_masks(8, 50, 0.5, seed=1), make_masks(8, 50, 0.5, 1, "exact")
    )
    with pytest.raises(ConfigError, match="masks.design = 'paired' is unknown"):
        make_masks(8, 50, 0.5, design="paired")


def test_config_names_the_design_and_the_study_uses_it():
    from jaxsam import config as config_lib
    from jaxsam.plan.study import build_study, study_header

    from .conftest import tiny_config

    cfg = tiny_config(**{"masks.design": "bernoulli", "masks.models": 3})
    pool, keep = build_study(cfg)
    np.testing.assert_array_equal(keep, make_masks(3, pool.size, 0.5, 0, design="bernoulli"))
    assert study_header(cfg, keep)["mask_design"] == {
        "design": "bernoulli",
        "pkeep": 0.5,
        "source": "config",
    }
    with pytest.raises(ConfigError, match="masks.design"):
        config_lib.validate(tiny_config(**{"masks.design": "Bernoulli"}))


def test_the_default_mask_design_keeps_old_checkpoint_fingerprints():
    from jaxsam import config as config_lib
    from jaxsam import store

    assert "design" not in store.stable_dict(config_lib.Config())["masks"]
    cfg = config_lib.replace(config_lib.Config(), **{"masks.design": "bernoulli"})
    assert store.stable_dict(cfg)["masks"]["design"] == "bernoulli"
