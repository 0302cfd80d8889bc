"""score(): report keys, JSON round trip, accuracies, excluded models."""

import json

import numpy as np
import pytest

from jaxsam import metrics
from jaxsam.errors import ConfigError, DataError, JaxsamError
from jaxsam.scoring import ATTACKS, score


@pytest.fixture(scope="module")
def run():
    rng = np.random.default_rng(0)
    m, n, a, c = 8, 60, 2, 4
    y = rng.integers(0, c, n)
    keep = np.argsort(rng.random((m, n)), 0) < m // 2
    logits = rng.normal(size=(m, n, a, c)).astype(np.float32)
    idx = (np.arange(m)[:, None], np.arange(n)[None], slice(None), y[None].repeat(m, 0))
    logits[idx] += 1.0 + 2.0 * keep[..., None]
    return logits, y, keep


def test_report_format_and_json_round_trip(run):
    logits, y, keep = run
    res = score(logits, y, keep, bootstrap=5)
    rep = res.report
    assert json.loads(json.dumps(rep)) == rep
    assert set(rep["attacks"]) == set(ATTACKS)
    assert (rep["models"], rep["examples"], rep["queries"]) == (8, 60, 2)
    for name, e in rep["attacks"].items():
        for k in ("auc", "balanced_accuracy", "advantage", "num_nonmembers", "per_target", "ci"):
            assert k in e, (name, k)
        assert set(e["tpr_at_fpr"]) == {"0.01", "0.001", "0.0001", "1e-05"}
        assert e["auc"] == pytest.approx(metrics.roc_metrics(res.scores[name], keep)["auc"])
        assert res.scores[name].shape == (8, 60)
    assert rep["attacks"]["lira_online"]["auc"] > 0.8


def test_accuracy_definition(run):
    logits, y, keep = run
    rep = score(logits, y, keep, attacks=["loss"], bootstrap=0).report
    correct = logits[:, :, 0].argmax(-1) == y[None]
    train = [(correct[i] & keep[i]).sum() / keep[i].sum() for i in range(8)]
    test = [(correct[i] & ~keep[i]).sum() / (~keep[i]).sum() for i in range(8)]
    np.testing.assert_allclose(rep["accuracy"]["per_model"]["train"], train)
    assert rep["accuracy"]["out"] == pytest.approx(np.mean(test))
    np.testing.assert_allclose(rep["accuracy"]["per_model"]["out"], test)
    # the name used before the rename stays readable for one version
    assert rep["accuracy"]["test"] == rep["accuracy"]["out"]
    assert "ci" not in rep["attacks"]["loss"]


def test_exclude_models(run):
    logits, y, keep = run
    a = score(logits, y, keep, attacks=["lira_online"], bootstrap=0, exclude_models=[2, 5])
    mask = np.zeros(8, bool)
    mask[[2, 5]] = True
    b = score(logits, y, keep, attacks=["lira_online"], bootstrap=0, exclude_models=mask)
    c = score(logits[~mask], y, keep[~mask], attacks=["lira_online"], bootstrap=0)
    assert a.report["models"] == 6 and a.report["excluded_models"] == [2, 5]
    np.testing.assert_array_equal(a.scores["lira_online"], b.scores["lira_online"])
    np.testing.assert_array_equal(a.scores["lira_online"], c.scores["lira_online"])


@pytest.mark.parametrize("attack", ATTACKS)
def test_nan_logits_are_named_by_model_and_example(run, attack):
    """The signal check used to say only "signal has NaN or infinite values", and the threshold
    and calibrated-loss attacks scored NaN logits without a word."""
    logits, y, keep = run
    bad = logits.copy()
    bad[5, 17, 1, 0] = np.nan  # a NaN logit makes every signal of (5, 17, view 1) NaN
    bad[2, 40, 0, 3] = np.nan  # view 0, which the threshold attacks read
    with pytest.raises(DataError) as err:
        score(bad, y, keep, attacks=[attack], bootstrap=0)
    msg = str(err.value)
    assert "models 2 (first at example 40), 5 (first at example 17)" in msg, msg
    assert "exclude_models=MODELS" in msg and "\n" not in msg


@pytest.mark.parametrize("attack", ["lira_online", "rmia", "calibrated_loss"])
def test_masks_with_every_example_in_every_model_are_refused_clearly(run, attack):
    """All-IN masks leaked a "Mean of empty slice" RuntimeWarning and named a `pkeep=1.0` the
    user never set ("leaves no usable number of models")."""
    import warnings

    logits, y, _ = run
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy RuntimeWarning on the way
        with pytest.raises(JaxsamError) as err:  # TooFewModelsError or, for RMIA, DataError
            score(logits, y, np.ones(logits.shape[:2], bool), attacks=[attack], bootstrap=0)
    msg = str(err.value)
    assert "pkeep=1.0 leaves" not in msg and "\n" not in msg, msg
    assert "must leave every example in some models and out of others" in msg, msg


def test_unknown_attack(run):
    logits, y, keep = run
    with pytest.raises(ConfigError, match="lira_online"):
        score(logits, y, keep, attacks=["lira"])


def test_lira_left_out_when_the_kept_models_are_too_few(run):
    # 4 models, 2-of-4 masks, one excluded: examples are in 1 or 2 of the 3 kept models, so
    # LiRA's equal groups are empty for some targets. Scoring all attacks leaves LiRA out and
    # says why; asking for LiRA by name raises.
    from jaxsam.errors import TooFewModelsError
    from jaxsam.report import render_markdown

    logits, y, keep = run
    keep4 = np.argsort(np.random.default_rng(1).random((4, keep.shape[1])), 0) < 2
    res = score(logits[:4], y, keep4, bootstrap=0, exclude_models=[1])
    skipped = res.report["skipped_attacks"]
    # The same rule leaves RMIA and calibrated loss, which compare with other models, too
    # few shadows (a target that is the only IN or OUT model of an example has none there).
    assert set(skipped) == {"lira_online", "lira_offline", "rmia", "calibrated_loss"}
    assert all("smallest M that works" in why for why in skipped.values())
    assert set(res.report["attacks"]) == set(ATTACKS) - set(skipped)
    assert "lira_online not scored" in render_markdown(res.report, "t")
    with pytest.raises(TooFewModelsError, match="smallest M that works"):
        score(logits[:4], y, keep4, attacks=["lira_online"], bootstrap=0, exclude_models=[1])
    assert "skipped_attacks" not in score(logits, y, keep, bootstrap=0).report


def test_equal_groups_is_one_rule_for_every_attack(run):
    # Exact 4-of-8 masks: "auto" cuts (as True does) for LiRA, RMIA and calibrated loss alike,
    # False is leave-one-out for all of them; report.json says which rule was used.
    from jaxsam.attacks import calibrated_loss_from_signal, lira_from_signal, rmia_from_signal
    from jaxsam.attacks import signals as sig

    logits, y, keep = run
    s = sig.compute_signals(["logit_scaled_confidence", "confidence", "loss"], logits, y)
    names = ["lira_online", "lira_offline", "rmia", "calibrated_loss"]
    for eg, rule in (("auto", "cut"), (True, "cut"), (False, "leave_one_out")):
        res = score(logits, y, keep, attacks=names, bootstrap=0, equal_groups=eg)
        groups = res.report["reference_groups"]
        assert (groups["equal_groups"], groups["rule"]) == (eg, rule)
        assert groups["design"]["design"] == "exact"
        want_in = 3 if rule == "cut" else None
        assert groups["sizes"]["in"]["max"] == want_in or rule == "leave_one_out"
        direct = {
            "lira_online": lira_from_signal(s["logit_scaled_confidence"], keep, equal_groups=eg),
            "lira_offline": lira_from_signal(
                s["logit_scaled_confidence"], keep, online=False, equal_groups=eg
            ),
            "rmia": rmia_from_signal(s["confidence"], keep, equal_groups=eg),
            "calibrated_loss": calibrated_loss_from_signal(s["loss"], keep, equal_groups=eg),
        }
        for name in names:
            np.testing.assert_array_equal(res.scores[name], direct[name], err_msg=f"{name} {eg}")
    cut = score(logits, y, keep, attacks=["calibrated_loss"], bootstrap=0, equal_groups=True)
    loo = score(logits, y, keep, attacks=["calibrated_loss"], bootstrap=0, equal_groups=False)
    assert not np.array_equal(cut.scores["calibrated_loss"], loo.scores["calibrated_loss"])
    with pytest.raises(ConfigError, match="equal_groups='yes' is unknown"):
        score(logits, y, keep, bootstrap=0, equal_groups="yes")
