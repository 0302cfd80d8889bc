"""A model that ends near chance without a NaN loss is named, not silently scored."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxsam import cli, store
from jaxsam.errors import DataError
from jaxsam.metrics import UNTRAINED_MARGIN, untrained_models
from jaxsam.pipeline.study import finish_study


def test_untrained_models_threshold():
    cut = 0.1 + UNTRAINED_MARGIN * 0.9  # C = 10
    acc = [0.99, 0.114, None, cut - 1e-6, cut, float("nan"), 0.5]
    assert untrained_models(acc, 10) == [1, 3]
    # Binary: chance is 0.5, so a model at 0.6 has barely learned.
    assert untrained_models([0.6, 0.7, 0.95], 2) == [0]
    assert untrained_models([], 10) == []
    with pytest.raises(DataError, match="num_classes"):
        untrained_models([0.5], 0)


def test_finish_study_names_a_collapsed_model(tiny_run, tmp_path, capsys):
    """Model 2's logits are made constant (it predicts one class for every input): training
    finishes, metrics.json and report.json list it, the terminal and report.md warn."""
    r = tiny_run
    path = tmp_path / "collapsed"
    path.mkdir()
    store.start_run(path, r.config, r.info["pool"], r.keep, r.ids, r.labels)
    logits = np.array(r.logits)
    logits[2] = 0.0
    logits[2, ..., 0] = 5.0  # always class 0
    run = finish_study(
        path,
        r.config,
        logits=logits,
        labels=r.labels,
        keep=r.keep,
        test_logits=np.array(r.test_logits),
        test_labels=r.test_labels,
        final_batch_loss=np.ones(r.keep.shape[0]),
        train_seconds=1.0,
        steps=1,
        steps_per_epoch=1,
        failed_models=[],
    )
    out = capsys.readouterr().out
    assert "warning: model 2 ended at" in out and "did not learn" in out
    want = untrained_models(run.metrics["train_accuracy"], logits.shape[-1])
    assert 2 in want and run.metrics["untrained_models"] == want
    assert cli.main(["score", str(path), "--bootstrap", "0"]) == 0
    rep = json.loads((path / "report.json").read_text())
    assert rep["run"]["untrained_models"] == want
    assert f"models {want} did not learn" in (path / "report.md").read_text()


def test_a_trained_run_lists_none(tiny_run):
    assert tiny_run.metrics["untrained_models"] == []
