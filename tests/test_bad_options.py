"""Out-of-range numbers for ``score`` and ``analyze`` are refused in one line, exit 2, before
anything is written.

``score --bootstrap -5`` used to crash (IndexError), ``--bootstrap 99999999999`` ran forever
without a word; ``analyze --min-influence nan`` (or -1) was accepted and ``--tie-seed -1``
crashed (ValueError).
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxsam import cli, metrics
from jaxsam.errors import ConfigError

from .conftest import one_line_error, unscored_copy


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    return unscored_copy(tiny_run.path, tmp_path / "run")


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("-5", "bootstrap = -5 resamples is negative; pass --bootstrap B with B >= 0"),
        ("100001", "more than the 100,000 jaxsam allows"),
        ("99999999999", "pass --bootstrap B with B <= 100,000"),
    ],
)
def test_score_refuses_a_bootstrap_out_of_range(run_copy, capsys, value, fragment):
    assert cli.main(["score", str(run_copy), "--bootstrap", value]) == 2
    one_line_error(capsys, fragment)
    assert not (run_copy / "report.json").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--min-influence", "nan"], "min_influence = nan is outside [0, 1)"),
        (["--min-influence", "-1"], "pass --min-influence X with 0 <= X < 1"),
        (["--min-influence", "1"], "min_influence = 1.0 is outside [0, 1)"),
        (["--tie-seed", "-1"], "pass --tie-seed S with S >= 0"),
    ],
)
def test_analyze_refuses_options_out_of_range(run_copy, tmp_path, capsys, args, fragment):
    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(run_copy), "--out", str(out), *args]) == 2
    one_line_error(capsys, fragment)
    assert not (out / "analysis.json").exists() and not (out / "plots").exists()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"num_samples": -1}, "bootstrap = -1 resamples is negative; pass bootstrap=B"),
        ({"num_samples": 2.5}, "is not an integer"),
        ({"seed": -1}, "bootstrap seed = -1 must be an integer >= 0"),
        ({"fprs": (0.01, 1.5)}, "fprs holds 1.5; every FPR must be a number in (0, 1)"),
        ({"fprs": (0.0,)}, "fprs holds 0.0"),
        ({"fprs": (float("nan"),)}, "fprs holds nan"),
        ({"fprs": ()}, "fprs is empty"),
    ],
)
def test_bootstrap_and_fprs_are_checked_in_the_library(kwargs, fragment):
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=(4, 50)), rng.random((4, 50)) < 0.5
    with pytest.raises(ConfigError) as e:
        metrics.bootstrap(s, y, **{"num_samples": 3, **kwargs})
    assert fragment in str(e.value), e.value
    if "fprs" in kwargs:
        with pytest.raises(ConfigError, match="fprs"):
            metrics.roc_metrics(s, y, fprs=kwargs["fprs"])
