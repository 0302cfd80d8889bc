"""Canaries in the plan (audit.*), run.canaries / run.targets, and `jaxsam audit` end to end."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxsam
from jaxsam import cli, store
from jaxsam import config as config_lib
from jaxsam.audit import bounds
from jaxsam.data import canaries as canary_lib
from jaxsam.data import make_masks, make_pool
from jaxsam.errors import ConfigError, DataError

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_config  # noqa: E402


def _pool(n=60, kind="image"):
    rng = np.random.default_rng(0)
    if kind == "image":
        x = rng.integers(0, 256, size=(n, 4, 4, 1), dtype=np.uint8)
    else:
        x = rng.normal(size=(n, 5)).astype(np.float32)
    return make_pool(x, rng.integers(0, 3, size=n), num_classes=3, kind=kind)


def _audit(**kw):
    return config_lib.AuditConfig(**{"canaries": 20, **kw})


@pytest.mark.parametrize("kind", config_lib.AUDIT_KINDS)
def test_canary_masks_keep_the_study_and_hide_canaries_from_references(kind):
    pool, audit = _pool(), _audit(kind=kind, targets=3)
    base = make_masks(8, pool.size, 0.5, 0)
    with_c = canary_lib.add_canaries(pool, audit)
    keep = canary_lib.audit_masks(base, audit)
    idx = canary_lib.canary_indices(audit, pool.size)
    targets = canary_lib.targets(audit, 8)
    refs = np.setdiff1d(np.arange(8), targets)
    assert targets.size == 3 and keep.shape == (8, with_c.size) and idx.size == 20
    assert not keep[np.ix_(refs, idx)].any()  # references never train on a canary
    others = np.setdiff1d(np.arange(with_c.size), idx)
    np.testing.assert_array_equal(keep[:, others], base[:, np.setdiff1d(np.arange(pool.size), idx)])
    np.testing.assert_array_equal(with_c.mean, pool.mean)  # the pool's own normalisation
    if kind == "mislabel":
        assert with_c.size == pool.size
        assert (with_c.y[idx] != pool.y[idx]).all()
        np.testing.assert_array_equal(with_c.y[others], pool.y[others])
    else:
        assert with_c.size == pool.size + 20 and (idx >= pool.size).all()
        np.testing.assert_array_equal(with_c.x[: pool.size], pool.x)
    if kind == "duplicate":
        src = np.asarray(
            canary_lib.header_fields(
                config_lib.replace(
                    config_lib.Config(),
                    **{
                        "masks.models": 8,
                        "audit.canaries": 20,
                        "audit.kind": "duplicate",
                        "audit.targets": 3,
                    },
                ),
                keep,
            )["audit"]["sources"]
        )
        np.testing.assert_array_equal(with_c.x[idx], pool.x[src])
    if kind == "noise":
        assert (with_c.ids[idx] < 0).all()


def test_targets_include_each_canary_independently_with_half():
    audit = config_lib.AuditConfig(canaries=2000, targets=4, seed=3)
    inc = canary_lib.inclusions(audit, 8)
    assert inc.shape == (4, 2000)
    assert abs(inc.mean() - 0.5) < 0.02
    # Independent coins: the targets' IN counts per canary are Binomial(4, 1/2), not fixed.
    counts = np.bincount(inc.sum(0), minlength=5) / 2000
    np.testing.assert_allclose(counts, [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16], atol=0.03)


def test_no_canaries_is_todays_run():
    pool = _pool()
    audit = config_lib.AuditConfig()
    base = make_masks(4, pool.size, 0.5, 0)
    assert canary_lib.add_canaries(pool, audit) is pool
    assert canary_lib.audit_masks(base, audit) is base
    cfg = config_lib.Config()
    assert "audit" not in store.stable_dict(cfg)  # checkpoint fingerprints unchanged
    assert canary_lib.header_fields(cfg, base) == {}
    old = config_lib.to_dict(cfg)
    del old["audit"]
    assert config_lib.from_dict(old) == cfg  # a config.json written before the section


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ({"audit.canaries": -1}, "audit.canaries"),
        ({"audit.kind": "random"}, "audit.kind"),
        ({"audit.targets": 8, "masks.models": 8}, "audit.targets"),
        ({"audit.targets": 0}, "audit.targets"),
    ],
)
def test_bad_audit_config_is_refused(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_lib.replace(config_lib.Config(), **overrides)


def test_too_many_canaries_for_the_pool():
    with pytest.raises(DataError, match="audit.canaries"):
        canary_lib.add_canaries(_pool(10), _audit(canaries=11))


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    """8 MLPs on digits, 4 of them targets, 100 mislabelled canaries (trained once)."""
    from jaxsam.pipeline import train_and_export

    cfg = tiny_config(
        **{
            "masks.models": 8,
            "audit.canaries": 100,
            "audit.targets": 4,
            "data.pool_size": 400,
            "data.test_size": 50,
            "train.epochs": 10,
        }
    )
    return train_and_export(cfg, tmp_path_factory.mktemp("audit") / "sgd")


def test_audited_run_records_canaries_and_targets(audited_run):
    run = jaxsam.load_run(audited_run.path)
    assert run.canaries.shape == (100,) and run.targets.shape == (4,)
    refs = np.setdiff1d(np.arange(8), run.targets)
    assert not run.keep[np.ix_(refs, run.canaries)].any()
    share = run.keep[np.ix_(run.targets, run.canaries)].mean()
    assert 0.35 < share < 0.65
    assert run.info["audit"]["kind"] == "mislabel"
    assert jaxsam.load_run(audited_run.path).targets.tolist() == run.info["audit"]["targets"]


def test_jaxsam_audit_end_to_end(audited_run, capsys):
    path = audited_run.path
    assert cli.main(["audit", str(path)]) == 0
    audit = json.loads((path / "audit.json").read_text())
    assert audit["epsilon_accountant"] is None and audit["delta"] == 1e-5
    assert [b["method"] for b in audit["bounds"]] == ["one_run", "clopper_pearson", "fdp"]
    for b in audit["bounds"]:
        for key in (
            "method",
            "epsilon_lower",
            "significance",
            "delta",
            "threshold",
            "canaries",
            "guesses",
            "correct",
        ):
            assert key in b
        assert b["epsilon_lower"] <= b["ceiling"] == audit["ceiling"][b["method"]]
    one = audit["bounds"][0]
    assert one["canaries"] == 200  # the evaluation half of 100 canaries x 4 targets
    assert one["epsilon_lower"] > 0  # without DP the mislabelled canaries are exposed
    again = bounds.one_run_epsilon(
        one["canaries"], one["guesses"], one["correct"], one["significance"], one["delta"]
    )
    assert one["epsilon_lower"] == pytest.approx(again, abs=1e-9)
    md = (path / "report.md").read_text()
    assert "## Audit" in md
    # Scoring keeps the section and scores the study without the canaries.
    assert cli.main(["score", str(path), "--bootstrap", "0"]) == 0
    md = (path / "report.md").read_text()
    assert md.count("## Audit") == 1
    run = jaxsam.load_run(path)
    frame = run.examples()
    assert frame["canary"].sum() == 100 and len(frame) == 400
    assert np.isnan(run.scores["loss"][:, run.canaries]).all()
    # analyze reads the scored run (NaN scores in the canaries' columns) without them.
    assert cli.main(["analyze", str(path), "--out", str(path.parent / "analysis")]) == 0
    assert cli.main(["audit", str(path), "--attack", "loss", "--threshold", "bonferroni"]) == 0
    assert json.loads((path / "audit.json").read_text())["threshold"] == "bonferroni"
    assert md.count("## Audit") == 1


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--seed", "-1"], "--seed -1 is out of range"),
        (["--seed", str(2**32)], "in [0, 2**32), e.g. --seed 0"),
        (["--significance", "0.7"], "--significance 0.7 is out of range"),
    ],
)
def test_audit_flags_out_of_range_are_one_line_errors(audited_run, capsys, flags, fragment):
    out = audited_run.path / "audit.json"

    def written() -> bytes | None:
        return out.read_bytes() if out.exists() else None

    before = written()
    assert cli.main(["audit", str(audited_run.path), *flags]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert written() == before


def test_audit_of_a_run_without_canaries_says_how(tiny_run, capsys):
    assert cli.main(["audit", str(tiny_run.path)]) == 2
    assert "audit.canaries" in capsys.readouterr().err


def test_dp_run_bounds_stay_below_the_accountant(tmp_path):
    from jaxsam.audit.report import audit_run
    from jaxsam.pipeline import train_and_export

    cfg = tiny_config(
        **{
            "masks.models": 8,
            "audit.canaries": 100,
            "audit.targets": 4,
            "train.epochs": 4,
            "optim.dp.clip_norm": 1.0,
            "optim.dp.noise_multiplier": 1.0,
        }
    )
    run = train_and_export(cfg, tmp_path / "dp")
    eps = run.info["dp"]["epsilon"]
    assert eps is not None and np.isfinite(eps)
    for attack in ("lira", "rmia", "loss"):
        for threshold in ("split", "bonferroni"):
            audit = audit_run(run, attack=attack, threshold=threshold)
            assert audit["epsilon_accountant"] == eps
            for b in audit["bounds"]:
                assert 0.0 <= b["epsilon_lower"] <= eps and b["below_accountant"]


def _swap_first_target_and_reference(a: dict) -> None:
    t, r = a["targets"][0], a["references"][0]
    a["targets"] = sorted([r, *a["targets"][1:]])
    a["references"] = sorted([t, *a["references"][1:]])


def _drop_last_target(a: dict) -> None:
    a["references"] = sorted([*a["references"], a["targets"].pop()])


DAMAGED_AUDIT_RECORDS = [
    # (what, edit of run.json's audit record, key named, problem named)
    (
        "duplicated target",
        lambda a: a.update(targets=[a["targets"][0], *a["targets"][:-1]]),
        "audit.targets",
        "repeats an index",
    ),
    (
        "negative canary",
        lambda a: a["canaries"].__setitem__(0, -3),
        "audit.canaries",
        "index -3 outside [0, 400)",
    ),
    (
        "canary beyond the pool",
        lambda a: a["canaries"].__setitem__(0, 5000),
        "audit.canaries",
        "index 5000 outside",
    ),
    (
        "target beyond the models",
        lambda a: a["targets"].__setitem__(0, 99),
        "audit.targets",
        "index 99 outside [0, 8)",
    ),
    ("no targets", lambda a: a.pop("targets"), "audit.targets", "has no audit.targets key"),
    (
        "targets not a list",
        lambda a: a.update(targets="all"),
        "audit.targets",
        "not a list of integer",
    ),
    (
        "boolean index",
        lambda a: a["targets"].__setitem__(0, True),
        "audit.targets",
        "not a list of integer",
    ),
    ("a target less", _drop_last_target, "audit.targets", "lists 3 targets, not the 4"),
    (
        "target and reference swapped",
        _swap_first_target_and_reference,
        "audit.references",
        "a reference never does",
    ),
    (
        "reference that is a target",
        lambda a: a["references"].append(a["targets"][0]),
        "audit.references",
        "a target in audit.targets too",
    ),
    ("model left out", lambda a: a["references"].pop(), "audit.references", "leaves out model"),
    ("a canary less", lambda a: a["canaries"].pop(), "audit.canaries", "lists 99 canaries"),
    ("other kind", lambda a: a.update(kind="noise"), "audit.kind", "audit.kind = 'mislabel'"),
]


@pytest.mark.parametrize(
    "edit, key, fragment",
    [c[1:] for c in DAMAGED_AUDIT_RECORDS],
    ids=[c[0] for c in DAMAGED_AUDIT_RECORDS],
)
def test_damaged_audit_record_is_refused_by_audit_and_score(
    audited_run, tmp_path, capsys, edit, key, fragment
):
    """Before, these audited with a wrong reference set, read other examples, or crashed."""
    copy = tmp_path / "run"
    shutil.copytree(audited_run.path, copy)
    info = json.loads((copy / "run.json").read_text())
    edit(info["audit"])
    (copy / "run.json").write_text(json.dumps(info))
    store.write_digests(copy)  # an edit the digests agree with is refused all the same
    before = sorted(p.name for p in copy.iterdir())
    for argv in (["audit", str(copy)], ["score", str(copy), "--bootstrap", "0"]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{copy / 'run.json'} " in err and key in err, err
        assert fragment in err and "damaged" in err and "restore it or retrain" in err, err
    assert sorted(p.name for p in copy.iterdir()) == before


@pytest.mark.parametrize("canaries", [0, 100])
def test_audit_record_and_config_disagree(audited_run, tmp_path, canaries):
    copy = tmp_path / "run"
    shutil.copytree(audited_run.path, copy)
    info = json.loads((copy / "run.json").read_text())
    if canaries:
        del info["audit"]  # the config has canaries, run.json none
        (copy / "run.json").write_text(json.dumps(info))
    else:
        cfg = json.loads((copy / "config.json").read_text())
        cfg["audit"]["canaries"] = 0  # run.json has canaries, the config none
        (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match=rf"has (no|an) audit key .*audit.canaries = {canaries}"):
        store.load_run(copy, verify=False)


def test_added_canaries_must_be_the_last_pool_columns():
    keep = np.zeros((4, 30), bool)
    audit = _audit(kind="noise", canaries=5, targets=2)
    record = {"kind": "noise", "canaries": [25, 26, 27, 28, 29], "targets": [0, 1]}
    record["references"] = [2, 3]
    assert canary_lib.record_problem(record, audit, keep) is None
    record["canaries"] = [0, 26, 27, 28, 29]
    assert "are not the last 5 pool examples" in canary_lib.record_problem(record, audit, keep)
