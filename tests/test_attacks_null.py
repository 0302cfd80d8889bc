"""Every attack that compares a target with other models, on studies with no membership signal.

The logits' distribution does not depend on membership, so an unbiased attack gives a pooled AUC
of 0.5 and a TPR at 1% FPR of 1%. One study per (mask design, M) serves every attack: four
independent replicates of M x N/4 examples, each with its own masks, class offsets and
per-example noise scales, stacked along the example axis (a replicate is a set of independent
examples, so stacking vectorises them). About 600k (target, example) pairs per study put the
standard deviation of the pooled TPR@1% near 0.035 points (measured over repeated draws), so the
0.12-point tolerance fails a 0.2-point bias; the leave-one-out groups of the old calibrated
loss and offline RMIA (0.36 % and 0.81 % at M = 4 and 8 on these studies) fail it by far.

Mask designs: ``exact`` (every example in k = M/2 models) and ``bernoulli`` (each model and
example independently with pkeep = 0.5, then the examples with fewer than 2 IN or 2 OUT models
left out, as ``jaxsam import-logits --drop-sparse`` does). At M = 4 that leaves exact 2-of-4
masks, and at M = 8 masks whose IN counts still depend on the target's membership; "auto" cuts
both. At M = 16 the masks look independent and "auto" keeps every other model.
"""

import numpy as np
import pytest

from jaxsam import metrics
from jaxsam.attacks import signals
from jaxsam.attacks._lira import lira_from_signal
from jaxsam.attacks._reference import detect_design, resolve
from jaxsam.attacks._rmia import rmia_from_signal
from jaxsam.attacks.threshold import calibrated_loss_from_signal
from jaxsam.data.masks import make_masks

PAIRS = 600_000  # (target, example) pairs per study
REPLICATES = 4
TPR_TOLERANCE = 0.0012  # |TPR@1% - 1%|
AUC_TOLERANCE = 0.003

ATTACKS = {
    "lira_online": lambda s, k, eg: lira_from_signal(s["lsc"], k, equal_groups=eg),
    "lira_offline": lambda s, k, eg: lira_from_signal(s["lsc"], k, online=False, equal_groups=eg),
    "rmia_online": lambda s, k, eg: rmia_from_signal(s["confidence"], k, equal_groups=eg),
    "rmia_offline": lambda s, k, eg: rmia_from_signal(
        s["confidence"], k, online=False, equal_groups=eg
    ),
    "calibrated_loss": lambda s, k, eg: calibrated_loss_from_signal(s["loss"], k, equal_groups=eg),
}


def _masks(design: str, m: int, n: int, seed: int) -> np.ndarray:
    if design == "exact":
        return make_masks(m, n, 0.5, seed=seed)
    keep = make_masks(m, n, 0.5, seed=seed, design="bernoulli")
    c = keep.sum(0)
    return keep[:, (c >= 2) & (m - c >= 2)]


def null_study(design: str, m: int, scales: bool, seed: int) -> tuple[dict, np.ndarray]:
    """Signals {lsc, confidence, loss} float [M, N, 1] and keep bool [M, N] without signal."""
    sigs, keeps = [], []
    for r in range(REPLICATES):
        keep = _masks(design, m, PAIRS // (m * REPLICATES), seed=1000 * seed + r)
        n = keep.shape[1]
        rng = np.random.default_rng([seed, r])
        base = 2.0 * rng.normal(size=(1, n, 1, 2))
        scale = rng.uniform(0.3, 1.5, size=(1, n, 1, 1)) if scales else 1.0
        logits = base + scale * rng.normal(size=(m, n, 1, 2))
        names = ["logit_scaled_confidence", "confidence", "loss"]
        sigs.append(signals.compute_signals(names, logits, np.zeros(n, int)))
        keeps.append(keep)
    cat = {k: np.concatenate([s[k] for s in sigs], axis=1) for k in sigs[0]}
    s = {"lsc": cat.pop("logit_scaled_confidence"), **cat}
    return s, np.concatenate(keeps, axis=1)


def _check_null(design, m, scales, seed):
    s, keep = null_study(design, m, scales, seed)
    bad = []
    for name, attack in ATTACKS.items():
        r = metrics.roc_metrics(attack(s, keep, "auto"), keep, fprs=(0.01,))
        tpr, auc = r["tpr_at_fpr"]["0.01"], r["auc"]
        if abs(tpr - 0.01) > TPR_TOLERANCE or abs(auc - 0.5) > AUC_TOLERANCE:
            bad.append(f"{name}: TPR@1% {100 * tpr:.3f}%, AUC {auc:.4f}")
    assert not bad, (design, m, scales, bad)
    return keep


@pytest.mark.parametrize("design", ["exact", "bernoulli"])
@pytest.mark.parametrize("m", [4, 8, 16])
def test_null_every_attack_unbiased(design, m):
    keep = _check_null(design, m, scales=True, seed=m)
    want = "leave_one_out" if (design, m) == ("bernoulli", 16) else "cut"
    assert resolve("auto", keep).name == want


@pytest.mark.slow
@pytest.mark.parametrize("design", ["exact", "bernoulli"])
@pytest.mark.parametrize(("m", "scales"), [(4, False), (8, False), (16, False), (32, True)])
def test_null_every_attack_unbiased_more(design, m, scales):
    _check_null(design, m, scales, seed=50 + m)


@pytest.mark.parametrize("m", [4, 8])
def test_null_fails_with_leave_one_out_on_exact_masks(m):
    # The same criterion rejects the old leave-one-out groups of the calibrated loss and of
    # offline RMIA (and LiRA's) on exact masks; online RMIA's all-other-models reference has the
    # same size for members and non-members, so it is unbiased without signal either way.
    s, keep = null_study("exact", m, True, seed=m)
    for name in ("lira_online", "lira_offline", "rmia_offline", "calibrated_loss"):
        tpr = metrics.roc_metrics(ATTACKS[name](s, keep, False), keep, fprs=(0.01,))
        assert abs(tpr["tpr_at_fpr"]["0.01"] - 0.01) > TPR_TOLERANCE, (name, m, tpr)


def test_design_detection():
    exact = make_masks(16, 2000, 0.5, seed=1)
    bern = make_masks(16, 2000, 0.5, seed=1, design="bernoulli")
    assert detect_design(exact)["design"] == "exact"
    assert detect_design(exact)["dependence"] == pytest.approx(1.0)
    found = detect_design(bern)
    assert found["design"] == "bernoulli" and abs(found["dependence"]) < 0.1
    # Exact masks with a model left out (a failed one) still tie the others to the target.
    assert detect_design(exact[1:])["design"] == "dependent"
    assert resolve("auto", exact[1:]).cut and not resolve("auto", bern).cut
    assert resolve(True, bern).cut and not resolve(False, exact).cut


def test_independent_masks_keep_every_shadow():
    # A planted signal on independent masks (M = 16): "auto" is leave-one-out for every attack,
    # so each target keeps all other models (a median of 7 or 8 IN and OUT shadows instead of the
    # one or two that cutting to the smallest group leaves), and online LiRA gains from it.
    m = 16
    keep = _masks("bernoulli", m, 3000, seed=3)
    n = keep.shape[1]
    rng = np.random.default_rng(4)
    lsc = 3 * rng.normal(size=(1, n, 2)) + rng.normal(size=(m, n, 2)) + 1.0 * keep[..., None]
    prob = 1 / (1 + np.exp(-lsc))
    s = {"lsc": lsc.astype(np.float32), "confidence": prob, "loss": -np.log(prob)}
    rule = resolve("auto", keep)
    assert rule.name == "leave_one_out"
    sizes = rule.report(keep)["sizes"]
    assert sizes["in"]["median"] >= 7 and sizes["out"]["median"] >= 7
    cut = resolve(True, keep).report(keep)["sizes"]
    assert cut["in"]["max"] <= 3 and cut["out"]["max"] <= 3
    for name, attack in ATTACKS.items():
        default = attack(s, keep, "auto")
        np.testing.assert_array_equal(default, attack(s, keep, False), err_msg=name)
        assert not np.array_equal(default, attack(s, keep, True)), name
    auc = {
        eg: metrics.roc_metrics(ATTACKS["lira_online"](s, keep, eg), keep)["auc"]
        for eg in ("auto", True)
    }
    assert auc["auto"] > auc[True] + 0.01, auc


@pytest.mark.parametrize(
    ("name", "m", "pkeep", "smallest"),
    [
        ("calibrated_loss", 2, 0.5, 4),  # 1-of-2 masks: the cut OUT group is empty
        ("rmia_offline", 3, 2 / 3, 5),  # 2-of-3: no OUT shadow is left; 3-of-5 leaves one
        ("rmia_online", 2, 0.5, 3),  # 1-of-2: k - 1 = 0 IN and M - k - 1 = 0 OUT shadows
        ("lira_offline", 2, 0.5, 4),
    ],
)
def test_too_few_models_refused_naming_the_smallest_m(name, m, pkeep, smallest):
    from jaxsam.errors import TooFewModelsError

    def study(m):
        rng = np.random.default_rng(m)
        p = rng.uniform(0.1, 0.9, size=(m, 30, 1))
        return {"lsc": np.log(p / (1 - p)), "confidence": p, "loss": -np.log(p)}

    keep = make_masks(m, 30, pkeep, seed=1)
    with pytest.raises(TooFewModelsError, match=f"smallest M that works is {smallest}:"):
        ATTACKS[name](study(m), keep, "auto")
    assert np.isfinite(ATTACKS[name](study(m), keep, False)).all()  # the old fallbacks
    ok = ATTACKS[name](study(smallest), make_masks(smallest, 30, pkeep, seed=1), "auto")
    assert np.isfinite(ok).all()


def test_independent_masks_with_an_empty_group_are_refused():
    from jaxsam.errors import TooFewModelsError

    keep = make_masks(12, 400, 0.5, seed=0, design="bernoulli")
    keep[:, 0] = True  # every model trained on example 0: no OUT shadow there
    p = np.random.default_rng(0).uniform(0.1, 0.9, size=(12, 400, 1))
    with pytest.raises(
        TooFewModelsError, match="not exact k-of-M.*again with `drop_sparse=True`"
    ) as e:
        calibrated_loss_from_signal(-np.log(p), keep)
    assert "With independent masks, pkeep=0.50 and N=400 examples the smallest M" in str(e.value)
