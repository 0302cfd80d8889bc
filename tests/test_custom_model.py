"""Your own Flax model (``model.name = "package.module:attr"``): trains, and its run directory
reads and scores without the model's code."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jaxsam import cli, store
from jaxsam import config as config_lib
from jaxsam.errors import ConfigError
from jaxsam.plan import check_config

from .conftest import run_script

MODULE = "jaxsam_test_custom_net"  # importable only where a test puts its directory on sys.path
MARK = -7.0  # Net's last logit, whatever the input: shows that the exported logits are Net's

SOURCE = textwrap.dedent(
    f"""
    import flax.linen as nn
    import jax.numpy as jnp

    CALLS = []


    class Net(nn.Module):
        num_classes: int
        hidden: int = 16

        @nn.compact
        def __call__(self, x, train: bool = False):
            h = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
            return nn.Dense(self.num_classes)(h).at[:, -1].set({MARK})


    def make(num_classes, hidden=16):
        CALLS.append((num_classes, hidden))
        return Net(num_classes, hidden=hidden)


    class ConvBN(nn.Module):
        num_classes: int

        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(4, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


    class ThreeLogits(nn.Module):
        num_classes: int

        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(3)(x.reshape(x.shape[0], -1))


    class NoTrainArg(nn.Module):
        num_classes: int

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


    def not_a_module(num_classes):
        return "a string"


    NUMBER = 3
    """
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A directory holding the module :data:`MODULE` (not on sys.path by default)."""
    path = tmp_path_factory.mktemp("custom_model_code")
    (path / f"{MODULE}.py").write_text(SOURCE)
    return path


@pytest.fixture
def importable(model_dir, monkeypatch):
    """Puts :data:`MODULE` on sys.path for one test (a fresh import)."""
    monkeypatch.syspath_prepend(str(model_dir))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield
    sys.modules.pop(MODULE, None)


@pytest.fixture
def not_importable(monkeypatch):
    """:data:`MODULE` is neither imported nor importable (its directory is off sys.path)."""
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    import importlib.util

    assert importlib.util.find_spec(MODULE) is None


def _train_args(out: Path, *sets: str) -> list[str]:
    base = (
        "data.pool_size=120",
        "data.test_size=40",
        "masks.models=4",
        "train.epochs=2",
        "train.batch_size=32",
    )
    args = ["train", "--out", str(out), "--no-progress"]
    for item in (*base, *sets):
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def custom_run(model_dir, tmp_path_factory):
    """A finished tiny run of ``MODULE:make`` (hidden 8), trained through the CLI."""
    out = tmp_path_factory.mktemp("custom_runs") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(model_dir))
        mp.delitem(sys.modules, MODULE, raising=False)
        rc = cli.main(_train_args(out, f"model.name={MODULE}:make", 'model.kwargs={"hidden": 8}'))
        calls = list(sys.modules[MODULE].CALLS)
    sys.modules.pop(MODULE, None)
    assert rc == 0
    return out, calls


def test_a_custom_model_trains_and_the_run_records_its_import_path(custom_run):
    import jaxsam

    out, calls = custom_run
    assert calls and all(c == (10, 8) for c in calls)  # attr(num_classes, **model.kwargs)
    saved = json.loads((out / "config.json").read_text())["model"]
    assert saved["name"] == f"{MODULE}:make" and saved["kwargs"] == {"hidden": 8}
    run = jaxsam.load_run(out)
    assert run.logits.shape == (4, 120, 1, 10)
    np.testing.assert_array_equal(run.logits[..., -1], MARK)  # the logits are the custom net's
    assert run.metrics["mean_train_accuracy"] is not None


def test_the_run_scores_in_a_fresh_process_without_the_module(custom_run, tmp_path):
    out, _ = custom_run
    copy = tmp_path / "copied"
    shutil.copytree(out, copy)
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        assert importlib.util.find_spec({MODULE!r}) is None, "the module must not be importable"
        from jaxsam import cli
        rcs = [
            cli.main(["score", {str(copy)!r}, "--bootstrap", "0"]),
            cli.main(["compare", {str(copy)!r}, {str(out)!r}]),
            cli.main(["analyze", {str(copy)!r}]),
            cli.main(["status", {str(copy)!r}]),
        ]
        print(json.dumps({{"rcs": rcs, "imported": {MODULE!r} in sys.modules}}))
        """
    )
    stdout = run_script(script, cwd=tmp_path, inherit_pythonpath=False, timeout=600)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result == {"rcs": [0, 0, 0, 0], "imported": False}
    report = json.loads((copy / "report.json").read_text())
    assert 0.0 <= report["attacks"]["lira_online"]["auc"] <= 1.0
    assert (copy / "analysis.json").is_file()


def test_a_run_of_an_unlisted_model_name_still_loads(custom_run, tmp_path):
    """The issue's case: a model added by patching jaxsam.models.MODELS; scoring needs no code."""
    import jaxsam
    from jaxsam import store

    out, _ = custom_run
    copy = tmp_path / "tiny"
    shutil.copytree(out, copy)
    data = json.loads((copy / "config.json").read_text())
    data["model"] = {**data["model"], "name": "tiny", "kwargs": {}}
    (copy / "config.json").write_text(json.dumps(data))
    store.write_digests(copy)
    assert jaxsam.load_run(copy).config.model.name == "tiny"
    with pytest.raises(ConfigError, match="model.name = 'tiny' is not allowed"):
        check_config(config_lib.from_dict(data))  # training from it is refused, naming the key


@pytest.mark.usefixtures("not_importable")
def test_resume_and_wave_train_without_the_module_say_so(custom_run, tmp_path, capsys):
    out, _ = custom_run
    for layout, args in (("one_piece", ["train", "--resume"]), ("waves", ["wave", "train"])):
        copy = tmp_path / layout
        shutil.copytree(out, copy)
        (copy / "COMPLETE").unlink()
        if layout == "waves":  # an unfinished study trained in waves (wave steps refuse others)
            info = json.loads((copy / "run.json").read_text())
            (copy / "run.json").write_text(json.dumps({**info, "layout": "waves"}))
        before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
        extra = ["--models", "0:2"] if layout == "waves" else []
        assert cli.main([*args, str(copy), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert f"model.name = '{MODULE}:make'" in err and "PYTHONPATH" in err
        assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


@pytest.mark.usefixtures("importable")
@pytest.mark.parametrize(
    "name, extra, fragment",
    [
        ("jaxsam_no_such_module_xyz:Net", (), "cannot import module 'jaxsam_no_such_module_xyz'"),
        (f"{MODULE}:Missing", (), "has no attribute 'Missing'"),
        (f"{MODULE}:NUMBER", (), "names an object of type int, not a flax.linen.Module"),
        (f"{MODULE}:not_a_module", (), "returned an object of type str, not a flax.linen.Module"),
        (f"{MODULE}:make", ('model.kwargs={"depth": 2}',), "fix model.kwargs"),
        (f"{MODULE}:ThreeLogits", (), "returned (2, 3) float32; it must return float logits"),
        (f"{MODULE}:NoTrainArg", (), "must take (x, train: bool)"),
        (f"{MODULE}:ConvBN", ("optim.dp.clip_norm=1.0",), "optim.dp needs a model without"),
        (f"{MODULE}:make", ("model.width=8",), "model.width = 8 applies to the built-in"),
        ("mlp", ('model.kwargs={"hidden": 8}',), "model.kwargs = {'hidden': 8} is for custom"),
        ("vgg", (), "or your own Flax model as an import path 'package.module:attr'"),
    ],
)
def test_a_bad_model_gets_one_line_error_and_writes_nothing(
    name, extra, fragment, tmp_path, capsys
):
    out = tmp_path / "run"
    assert cli.main(_train_args(out, f"model.name={name}", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert f"model.name = {name!r}" in err or "model.kwargs" in err or "model.width" in err
    assert not out.exists()


def test_config_parsing_never_imports_the_model():
    name = "jaxsam_no_such_pkg_xyz.sub:Factory.build"
    cfg = config_lib.from_dict({"model": {"name": name, "kwargs": {"width": 4}}})
    assert cfg.model.name == name and cfg.model.kwargs == {"width": 4}
    dp = {"optim": {"dp": {"clip_norm": 1.0}}, "model": {"name": name}}
    assert config_lib.from_dict(dp).optim.dp.enabled  # BatchNorm: checked when training builds it
    assert config_lib.from_dict({"model": {"name": "tiny"}}).model.name == "tiny"
    assert "kwargs" not in store.stable_dict(config_lib.Config())["model"]  # old fingerprints


@pytest.mark.usefixtures("importable")
def test_setup_infers_batch_norm_and_convolutions_and_plans_memory():
    from jaxsam import plan as plan_lib
    from jaxsam.models import is_conv_net
    from jaxsam.train.calibrate import candidates
    from jaxsam.train.setup import make_setup

    def setup_of(name):
        cfg = config_lib.replace(config_lib.Config(), **{"model.name": name})
        return make_setup(cfg, plan_lib.pool_shapes(cfg), None, 10), cfg

    conv, cfg = setup_of(f"{MODULE}:ConvBN")  # a Module class named directly
    assert conv.has_batch_norm and conv.conv_net
    assert [c.conv_impl for c in candidates(conv)] == ["lax", "lax"]  # no matmul form to time
    mem = plan_lib.memory_estimate(cfg, activations=False)
    assert mem.batch_stats_bytes == 2 * 4 * 4  # BatchNorm(4 channels): mean and var, float32
    dense, _ = setup_of(f"{MODULE}:make")
    assert not dense.has_batch_norm and not dense.conv_net
    assert is_conv_net("cnn", None, ()) and not is_conv_net("mlp", None, ())
