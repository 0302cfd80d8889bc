"""Masks too sparse for the leave-one-out attacks are named before training, with the fix."""

from __future__ import annotations

import json

import pytest

from jaxsam import config as config_lib
from jaxsam.attacks import sparse_masks_warning
from jaxsam.attacks._reference import smallest_exact_models, smallest_independent_models
from jaxsam.cli import main
from jaxsam.data import make_masks

from .conftest import tiny_config


def test_exact_masks_judged_from_k():
    assert smallest_exact_models(0.5, 1, 1) == 4
    text = sparse_masks_warning(None, design="exact", pkeep=0.5, models=3, examples=100)
    assert "every example" in text and "masks.models >= 4" in text
    assert sparse_masks_warning(None, design="exact", pkeep=0.5, models=4, examples=100) is None


def test_independent_masks_judged_for_95_percent_of_draws():
    best = smallest_independent_models(0.5, 1, 1, 1437)
    text = sparse_masks_warning(None, design="bernoulli", pkeep=0.5, models=8, examples=1437)
    assert f"masks.models >= {best}" in text and "masks.design = 'exact'" in text
    ok = sparse_masks_warning(None, design="bernoulli", pkeep=0.5, models=best, examples=1437)
    assert ok is None


def test_the_masks_themselves_are_counted():
    keep = make_masks(8, 200, 0.5, seed=0)
    assert sparse_masks_warning(keep, design="exact", pkeep=0.5, models=8, examples=200) is None
    keep[:7, 3] = True  # example 3 in 7 of 8 models: one OUT model, none left out of a target
    keep[:, 9] = False
    text = sparse_masks_warning(keep, design="exact", pkeep=0.5, models=8, examples=200)
    assert text.startswith("2 of the 200 examples are")


def test_plan_command_warns_in_text_and_json(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    sparse = tiny_config(**{"masks.models": 6, "masks.design": "bernoulli"})
    cfg.write_text(json.dumps(config_lib.to_dict(sparse)))
    assert main(["plan", "--config", str(cfg), "--json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert len(warnings) == 1 and "masks.models >= " in warnings[0]
    assert main(["plan", "--config", str(cfg)]) == 0
    assert "warning: " in capsys.readouterr().out
    cfg.write_text(json.dumps(config_lib.to_dict(tiny_config())))  # exact 2-of-4: fine
    assert main(["plan", "--config", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


@pytest.mark.parametrize("design,models,warns", [("bernoulli", 4, True), ("exact", 4, False)])
def test_training_warns_before_it_starts(tmp_path, capsys, design, models, warns):
    from jaxsam.pipeline import train_and_export

    cfg = tiny_config(**{"masks.models": models, "masks.design": design, "train.epochs": 1})
    train_and_export(cfg, tmp_path / "run")
    out = capsys.readouterr().out
    assert ("warning: " in out and "LiRA, RMIA" in out) == warns
