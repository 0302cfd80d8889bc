"""``jaxsam import-logits``: arrays and the published LiRA layout -> a run that score reads."""

import json

import numpy as np
import pytest

from jaxsam import store
from jaxsam.attacks import lira_from_signal
from jaxsam.cli import main
from jaxsam.errors import DataError, TooFewModelsError
from jaxsam.scoring import score


def _save(tmp_path, **arrays):
    paths = {}
    for name, arr in arrays.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    return paths


def _import(paths, out, *extra):
    argv = ["import-logits", "--out", str(out)]
    for name, p in paths.items():
        argv += ["--" + name.replace("_", "-"), str(p)]
    return main(argv + list(extra))


def _synthetic(m=8, n=120, c=4, a=1, seed=0, keep=None):
    """Logits with a membership signal: a member's true-class logit is raised."""
    from jaxsam.data.masks import make_masks

    rng = np.random.default_rng(seed)
    keep = make_masks(m, n, 0.5, seed=seed) if keep is None else keep
    y = rng.integers(0, c, n)
    lg = rng.normal(size=(m, n, a, c)).astype(np.float32)
    lg[np.arange(m)[:, None], np.arange(n)[None], :, y[None]] += (1.5 * keep + 0.5)[..., None]
    return keep, lg, y


def test_round_trip_from_a_trained_run(tiny_run, tmp_path, capsys):
    r = tiny_run
    paths = _save(
        tmp_path,
        keep=r.keep,
        logits=r.logits,
        labels=r.labels,
        test_logits=r.test_logits,
        test_labels=r.test_labels,
    )
    out = tmp_path / "imported"
    assert _import(paths, out) == 0
    assert main(["score", str(out), "--bootstrap", "0"]) == 0
    run = store.load_run(out)
    np.testing.assert_array_equal(run.keep, r.keep)
    np.testing.assert_array_equal(run.logits, r.logits)
    # LiRA (and every attack) on the imported run equals the array API on the original arrays.
    want = score(r.logits, r.labels, r.keep, bootstrap=0)
    got = run.scores
    assert set(got) == set(want.scores)
    for name, s in want.scores.items():
        np.testing.assert_allclose(got[name], s, rtol=1e-6, atol=1e-6, err_msg=name)
    rep = run.read_json("report.json")
    assert rep["accuracy"]["heldout"] == pytest.approx(r.metrics["mean_heldout_accuracy"])
    assert rep["attacks"]["lira_online"]["auc"] == pytest.approx(
        want.report["attacks"]["lira_online"]["auc"]
    )
    prov = rep["run"]["provenance"]
    assert prov["kind"] == "imported" and prov["format"] == "arrays"
    assert prov["files"]["logits"]["sha256"] == store.sha256_file(paths["logits"])
    assert prov["files"]["keep"]["shape"] == list(r.keep.shape)
    assert rep["run"]["optimizer"] is None and rep["run"]["dataset"] == "imported"
    assert rep["shadows"]["exact"] and rep["shadows"]["per_example"]["in"]["min"] == 2
    # A trained run records its mask design from the config; the import, what it detected.
    assert r.info["mask_design"] == {"design": "exact", "pkeep": 0.5, "source": "config"}
    assert rep["run"]["mask_design"]["design"] == "exact"
    assert "provenance: imported (arrays)" in (out / "report.md").read_text()
    info = json.loads((out / "run.json").read_text())
    assert info["provenance"]["kind"] == "imported" and info["status"] == "complete"
    assert store.verify_digests(out)
    # The other readers work on it too.
    assert main(["analyze", str(out)]) == 0
    assert main(["status", str(out)]) == 0
    assert main(["compare", str(out), str(r.path)]) == 0
    # Training or resuming it is refused clearly: there is no data.
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2
    assert "import-logits" in capsys.readouterr().err


def test_three_axis_logits_are_one_query_and_score_the_same(tmp_path):
    keep, lg, y = _synthetic()
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert _import(_save(a, keep=keep, logits=lg[:, :, 0], labels=y), a / "run") == 0
    assert _import(_save(b, keep=keep.astype(np.int8), logits=lg, labels=y), b / "run") == 0
    ra, rb = store.load_run(a / "run"), store.load_run(b / "run")
    assert ra.logits.shape == (8, 120, 1, 4) and ra.query_names == ["identity"]
    assert ra.test_logits.shape == (8, 0, 1, 4)
    np.testing.assert_array_equal(ra.logits, rb.logits)
    np.testing.assert_array_equal(ra.keep, rb.keep)


def _lira_dir(root, m=8, n=60, a=2, c=3, seed=0):
    """A log directory in the published layout: experiment-K_M/{keep.npy, logits/E.npy}."""
    keep, lg, y = _synthetic(m=m, n=n, c=c, a=a, seed=seed)
    root.mkdir()
    np.save(root / "y_train.npy", np.concatenate([y, [0, 1, 2]]))  # longer: first N are used
    for k in range(m):
        d = root / f"experiment-{k}_{m}"
        (d / "logits").mkdir(parents=True)
        np.save(d / "keep.npy", keep[k])
        np.save(d / "logits" / f"{10:010d}.npy", lg[k][:, None])  # [N, 1, A, C]
        np.save(d / "logits" / f"{5:010d}.npy", -lg[k][:, None])  # an older epoch
        (d / "hparams.json").write_text("{}")
    return keep, lg, y


def test_published_lira_layout(tmp_path, capsys):
    keep, lg, y = _lira_dir(tmp_path / "exp", m=12)  # experiment-10 sorts after experiment-2
    out = tmp_path / "run"
    assert main(["import-logits", "--lira-dir", str(tmp_path / "exp"), "--out", str(out)]) == 0
    run = store.load_run(out)
    np.testing.assert_array_equal(run.keep, keep)
    np.testing.assert_array_equal(run.logits, lg)  # the latest epoch, models in K order
    np.testing.assert_array_equal(run.labels, y)
    assert run.query_names == ["identity", "mirror"]
    prov = run.info["provenance"]
    assert prov["format"] == "lira_dir" and prov["epoch"] == "latest"
    assert [f["dir"] for f in prov["files"]["models"]][:3] == [
        "experiment-0_12",
        "experiment-1_12",
        "experiment-2_12",
    ]
    assert {f["epoch"] for f in prov["files"]["models"]} == {10}
    assert main(["score", str(out), "--bootstrap", "0"]) == 0
    want = score(lg, y, keep, attacks=["lira_online"], bootstrap=0).scores["lira_online"]
    np.testing.assert_allclose(store.load_run(out).scores["lira_online"], want, atol=1e-6)
    # --epoch picks an older checkpoint; --labels overrides y_train.npy.
    np.save(tmp_path / "y.npy", y)
    out5 = tmp_path / "run5"
    argv = ["import-logits", "--lira-dir", str(tmp_path / "exp"), "--out", str(out5)]
    assert main(argv + ["--epoch", "5", "--labels", str(tmp_path / "y.npy")]) == 0
    np.testing.assert_array_equal(store.load_run(out5).logits, -lg)
    # A missing epoch, and a model directory without logits, are refused; the latter can be
    # skipped.
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(argv[:-1] + [str(bad), "--epoch", "7"]) == 2
    assert "no logits for epoch 7" in capsys.readouterr().err and not bad.exists()
    (tmp_path / "exp" / "experiment-12_13").mkdir()
    np.save(tmp_path / "exp" / "experiment-12_13" / "keep.npy", keep[0])
    assert main(argv[:-1] + [str(bad)]) == 2
    assert "--skip-incomplete" in capsys.readouterr().err and not bad.exists()
    assert main(argv[:-1] + [str(bad), "--skip-incomplete"]) == 0
    assert store.load_run(bad).info["provenance"]["skipped_models"] == ["experiment-12_13"]


def _bad_cases(keep, lg, y):
    nan = lg.copy()
    nan[3, 7, 0, 1] = np.nan
    inf = lg.copy()
    inf[0, 0, 0, 0] = np.inf
    zero_out = keep.copy()
    zero_out[:, 5] = True
    return {
        "logits shape": ({"logits": lg[:, :-1]}, "logits.npy has shape"),
        "logits dtype": ({"logits": lg.astype(np.int32)}, "must be floating point"),
        "nan": ({"logits": nan}, "NaN or infinite value(s) for model 3"),
        "inf": ({"logits": inf}, "NaN or infinite value(s) for model 0"),
        "keep dtype": ({"keep": keep.astype(np.float32)}, "keep.npy has dtype float32"),
        "keep 1d": ({"keep": keep[0]}, "must be bool [M, N]"),
        "labels dtype": ({"labels": y.astype(float)}, "labels must be integers"),
        "labels range": ({"labels": y + 10}, "labels must lie in [0, 4)"),
        "labels shape": ({"labels": y[:-1]}, "labels.npy has shape"),
        "empty": ({"keep": keep[:, :0], "logits": lg[:, :0], "labels": y[:0]}, "is empty"),
        "one model": ({"keep": keep[:1], "logits": lg[:1]}, "M >= 2"),
        "zero OUT": ({"keep": zero_out}, "--drop-sparse"),
        "one class": ({"logits": lg[..., :1]}, "C >= 2"),
        "test labels missing": ({"test_logits": lg[:, :10]}, "--test-labels"),
        "test A": (
            {"test_logits": np.repeat(lg[:, :10], 2, axis=2), "test_labels": y[:10]},
            "same query views",
        ),
    }


@pytest.mark.parametrize("case", list(_bad_cases(*_synthetic())))
def test_bad_input_is_refused_with_exit_2_and_nothing_written(tmp_path, capsys, case):
    keep, lg, y = _synthetic()
    changes, message = _bad_cases(keep, lg, y)[case]
    arrays = {"keep": keep, "logits": lg, "labels": y} | changes
    out = tmp_path / "run"
    assert _import(_save(tmp_path, **arrays), out) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_existing_out_is_refused_unless_overwrite_and_only_a_run_is_replaced(tmp_path, capsys):
    keep, lg, y = _synthetic()
    paths = _save(tmp_path, keep=keep, logits=lg, labels=y)
    out = tmp_path / "run"
    assert _import(paths, out) == 0
    assert _import(paths, out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _import(paths, out, "--overwrite") == 0
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep-me.txt").write_text("mine")
    assert _import(paths, other, "--overwrite") == 2
    assert "not a jaxsam run directory" in capsys.readouterr().err
    assert (other / "keep-me.txt").read_text() == "mine" and not (other / "run.json").exists()


def _bernoulli(m, n, seed, min_models=2):
    """Independent per-model masks (not k-of-M), redrawn until every example has min_models
    IN and OUT models."""
    rng = np.random.default_rng(seed)
    while True:
        keep = rng.random((m, n)) < 0.5
        c = keep.sum(0)
        if c.min() >= min_models and (m - c).min() >= min_models and len(set(c)) > 1:
            return keep


def test_non_exact_masks_score_and_report_shadow_counts(tmp_path):
    keep = _bernoulli(12, 150, seed=3)
    keep, lg, y = _synthetic(m=12, n=150, keep=keep)
    out = tmp_path / "run"
    assert _import(_save(tmp_path, keep=keep, logits=lg, labels=y), out) == 0
    assert main(["score", str(out), "--bootstrap", "0"]) == 0
    run = store.load_run(out)
    rep = run.read_json("report.json")
    assert "skipped_attacks" not in rep and "lira_online" in rep["attacks"]
    sh = rep["shadows"]
    n_in, n_out = keep.sum(0), (~keep).sum(0)
    assert not sh["exact"]
    assert sh["per_example"]["in"] == {
        "min": int(n_in.min()),
        "median": float(np.median(n_in)),
        "max": int(n_in.max()),
    }
    assert sh["per_example"]["out"]["min"] == int(n_out.min())
    assert sh["per_example"]["out"]["median"] == float(np.median(n_out))
    # The equal groups: each target's group cut to its smallest leave-one-out size.
    cut_in = (n_in[None] - keep).min(axis=1)
    assert sh["lira_equal_groups"]["in"]["min"] == int(cut_in.min()) >= 1
    md = (out / "report.md").read_text()
    assert f"IN min {n_in.min()}, median {np.median(n_in):g}" in md
    assert "masks not exact k-of-M" in md
    from jaxsam.attacks.signals import logit_scaled_confidence

    signal = np.asarray(logit_scaled_confidence(lg, y))
    np.testing.assert_allclose(
        run.scores["lira_online"], lira_from_signal(signal, keep), rtol=1e-5, atol=1e-5
    )


def test_min_models_one_keeps_sparse_examples_and_lira_says_how_to_fix(tmp_path):
    keep = _bernoulli(8, 200, seed=5, min_models=1)
    assert min(keep.sum(0).min(), (~keep).sum(0).min()) == 1
    keep, lg, y = _synthetic(m=8, n=200, keep=keep)
    paths = _save(tmp_path, keep=keep, logits=lg, labels=y)
    assert _import(paths, tmp_path / "strict") == 2  # default --min-models 2
    assert _import(paths, tmp_path / "run", "--min-models", "1") == 0
    assert main(["score", str(tmp_path / "run"), "--bootstrap", "0"]) == 0
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    why = rep["skipped_attacks"]["lira_online"]
    assert "not exact k-of-M" in why and "--drop-sparse" in why
    with pytest.raises(TooFewModelsError, match="not exact k-of-M"):
        lira_from_signal(lg[..., 0], keep)
    # --drop-sparse leaves those examples out; ids keep their rows; LiRA then scores.
    assert _import(paths, tmp_path / "dropped", "--drop-sparse") == 0
    run = store.load_run(tmp_path / "dropped")
    sparse = (keep.sum(0) < 2) | ((~keep).sum(0) < 2)
    np.testing.assert_array_equal(run.ids, np.flatnonzero(~sparse))
    assert run.info["provenance"]["dropped_examples"] == np.flatnonzero(sparse).tolist()
    assert main(["score", str(tmp_path / "dropped"), "--bootstrap", "0"]) == 0
    assert "lira_online" in run.read_json("report.json")["attacks"]


def test_imported_config_is_never_loaded_as_data():
    from jaxsam.config import DataConfig
    from jaxsam.data import load_pool

    with pytest.raises(DataError, match="import-logits"):
        load_pool(DataConfig(dataset="imported"))


@pytest.mark.parametrize("design", ["exact", "bernoulli"])
def test_score_equal_groups_flag_names_the_rule(tmp_path, design, capsys):
    from jaxsam.data.masks import make_masks

    keep = make_masks(16, 200, 0.5, seed=2, design=design)
    if design == "bernoulli":
        c = keep.sum(0)
        keep = keep[:, (c >= 2) & (16 - c >= 2)]
    keep, lg, y = _synthetic(m=16, n=keep.shape[1], keep=keep)
    out = tmp_path / "run"
    assert _import(_save(tmp_path, keep=keep, logits=lg, labels=y), out) == 0
    auto = "cut" if design == "exact" else "leave_one_out"
    scores = {}
    rules = (("auto", "auto", auto), ("on", True, "cut"), ("off", False, "leave_one_out"))
    for flag, eg, rule in rules:
        argv = ["score", str(out), "--bootstrap", "0", "--equal-groups", flag]
        assert main(argv + ["--attacks", "lira_online,rmia,calibrated_loss"]) == 0
        rep = json.loads((out / "report.json").read_text())
        assert rep["reference_groups"]["equal_groups"] == eg
        assert rep["reference_groups"]["rule"] == rule
        assert rep["reference_groups"]["design"]["design"] == design
        md = (out / "report.md").read_text()
        assert f"- reference groups: {'cut' if rule == 'cut' else 'leave-one-out'}" in md
        assert f"equal groups {flag}; masks {design}" in md
        scores[flag] = store.load_run(out).scores["lira_online"]
    np.testing.assert_array_equal(scores["auto"], scores["on" if design == "exact" else "off"])
    assert not np.array_equal(scores["on"], scores["off"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["score", str(out), "--equal-groups", "maybe"])
    assert "--equal-groups: invalid choice: 'maybe'" in capsys.readouterr().err


def test_import_detects_the_mask_design(tmp_path, capsys):
    from jaxsam.data.masks import make_masks

    exact = make_masks(16, 300, 0.5, seed=4)
    bern = make_masks(16, 300, 0.5, seed=4, design="bernoulli")
    c = bern.sum(0)
    bern = bern[:, (c >= 2) & (16 - c >= 2)]
    cases = {"exact": exact, "bernoulli": bern, "dependent": exact[1:]}  # a model missing
    for design, keep in cases.items():
        keep, lg, y = _synthetic(m=keep.shape[0], n=keep.shape[1], keep=keep)
        out = tmp_path / design
        capsys.readouterr()
        assert _import(_save(tmp_path, keep=keep, logits=lg, labels=y), out) == 0
        words = {"exact": "exact k-of-M", "bernoulli": "independent", "dependent": "neither"}
        assert f"masks look {words[design]}" in capsys.readouterr().out
        info = json.loads((out / "run.json").read_text())
        found = info["mask_design"]
        assert (found["design"], found["source"]) == (design, "detected"), found
        dep = found["dependence"]
        assert {"exact": dep == 1.0, "bernoulli": abs(dep) < 0.25, "dependent": dep > 0.25}[design]
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["masks"]["design"] == ("bernoulli" if design == "bernoulli" else "exact")
        assert main(["score", str(out), "--bootstrap", "0", "--attacks", "calibrated_loss"]) == 0
        rep = json.loads((out / "report.json").read_text())
        assert rep["run"]["mask_design"] == found
        assert rep["reference_groups"]["rule"] == (
            "leave_one_out" if design == "bernoulli" else "cut"
        )


def test_a_successful_import_prints_only_its_own_line(tmp_path):
    # Orbax finishes every save with an OCDBT merge, whatever use_ocdbt says: the logits folder
    # (written without OCDBT) used to add "WARNING:absl: ... Skipping merge of OCDBT
    # checkpoints" to every import. A fresh process: the warning reaches stderr only there.
    import os
    import subprocess
    import sys
    from pathlib import Path

    keep, lg, y = _synthetic()
    paths = _save(tmp_path, keep=keep, logits=lg, labels=y)
    argv = ["import-logits", "--out", str(tmp_path / "run")]
    for name, p in paths.items():
        argv += [f"--{name}", str(p)]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxsam", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "imported 8 models" in proc.stdout
    for noise in ("Skipping merge", "WARNING:absl", "Traceback"):
        assert noise not in proc.stderr, proc.stderr[-2000:]


def test_unreadable_inputs_name_what_is_wrong(tmp_path, capsys):
    # numpy called a text file and a truncated file "pickled (object) data", a directory was
    # "missing", transposed masks were blamed on the logits, and --min-models 0 named no flag.
    keep, lg, y = _synthetic()
    paths = _save(tmp_path, keep=keep, logits=lg, labels=y)
    text, short, folder = tmp_path / "text.npy", tmp_path / "short.npy", tmp_path / "dir.npy"
    text.write_text("0.1, 0.2, 0.3\n")
    short.write_bytes(paths["logits"].read_bytes()[:4000])
    folder.mkdir()
    np.save(tmp_path / "keep_t.npy", keep.T)
    cases = {
        "text": ({"logits": text}, (), "text.npy (logits) is not a .npy file"),
        "truncated": ({"logits": short}, (), "short.npy (logits) is truncated: its header says"),
        "directory": ({"logits": folder}, (), "dir.npy (logits) is a directory, not a .npy"),
        "transposed": ({"keep": tmp_path / "keep_t.npy"}, (), "the masks look transposed"),
        "min models": ({}, ("--min-models", "0"), "--min-models 0 asks for no IN or OUT"),
    }
    for case, (changes, extra, message) in cases.items():
        out = tmp_path / f"run-{case.replace(' ', '-')}"
        assert _import(paths | changes, out, *extra) == 2, case
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (case, err)
        assert "pickled" not in err and "mmap" not in err and "does not exist" not in err
        assert not out.exists()


def test_lira_models_at_different_epochs_are_imported_with_a_warning(tmp_path, capsys):
    keep, lg, _ = _lira_dir(tmp_path / "exp")
    (tmp_path / "exp" / "experiment-3_8" / "logits" / f"{10:010d}.npy").unlink()
    out = tmp_path / "run"
    assert main(["import-logits", "--lira-dir", str(tmp_path / "exp"), "--out", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1, lines
    assert (
        "epoch 5: experiment-3_8; epoch 10: experiment-0_8, experiment-1_8, experiment-2_8"
        in lines[0]
    )
    assert "and 4 more" in lines[0] and "--epoch E" in lines[0]
    epochs = [f["epoch"] for f in store.load_run(out).info["provenance"]["files"]["models"]]
    assert epochs == [10, 10, 10, 5, 10, 10, 10, 10]
