import json

import pytest

from jaxsam import config as config_lib
from jaxsam.errors import ConfigError
from jaxsam.plan import check_config


def test_round_trip_through_json(tmp_path):
    cfg = config_lib.replace(config_lib.Config(), **{"optim.name": "sam", "optim.rho": 0.1})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config_lib.to_dict(cfg)))
    assert config_lib.load(path) == cfg


def test_partial_config_takes_defaults():
    cfg = config_lib.from_dict({"masks": {"models": 8}})
    assert cfg.masks.models == 8 and cfg.masks.pkeep == 0.5 and cfg.data.dataset == "digits"


def test_int_for_float_is_accepted():
    assert config_lib.from_dict({"optim": {"learning_rate": 1}}).optim.learning_rate == 1.0


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"optim": {"nme": "sam"}}, "unknown config key optim.nme"),
        ({"bogus": 1}, "unknown config key bogus"),
        ({"optim": {"name": "adamw"}}, "optim.name = 'adamw' is not allowed"),
        ({"masks": {"pkeep": 1.0}}, "masks.pkeep"),
        ({"masks": {"pkeep": 0.0}}, "masks.pkeep"),
        ({"masks": {"models": 1}}, "masks.models"),
        ({"train": {"epochs": "ten"}}, "train.epochs = 'ten' has the wrong type"),
        ({"train": {"epochs": True}}, "wrong type"),
        ({"data": {"query_augment": 3}}, "data.query_augment"),
        ({"model": {"name": "vgg"}}, "model.name"),
        ({"optim": 3}, "optim must be a JSON object"),
        ({"version": 99}, "config version 99"),
    ],
)
def test_bad_configs_name_the_key(data, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        check_config(config_lib.from_dict(data))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config_lib.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        config_lib.load(bad)


@pytest.mark.parametrize(
    "text, kind", [("[1, 2]", "a JSON array"), ('"x"', "a string"), ("3", "a number")]
)
def test_a_config_file_that_is_no_object_is_named(tmp_path, capsys, text, kind):
    # Used to say "config must be a JSON object, got list", naming no file.
    from jaxsam.cli import main

    path = tmp_path / "study.json"
    path.write_text(text)
    msg = f"config file {path} holds {kind}, not a JSON object; write it as a JSON object"
    with pytest.raises(ConfigError, match=msg.replace(".", r"\.").replace("[", r"\[")):
        config_lib.load(path)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(path) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
