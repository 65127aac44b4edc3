"""The params schema: what validates, what is refused (one line naming key and value), overrides, CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import REPO, tiny_params, write_params

from pipeline.cli import main
from pipeline.config import (
    DataConfig,
    Params,
    check_combinations,
    check_device,
    default_loss,
    expected_task,
    load_params,
    params_from_dict,
)
from pipeline.errors import ConfigError, PipelineError

STAGE_COMMANDS = ("data", "split", "train", "evaluate", "run", "check")


def _keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _keys(value, f"{prefix}{key}.")
    return keys


def _refused(raw: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        params_from_dict(raw)
    return info.value


# -- the repository's params.yaml and the defaults ------------------------------------------------
def test_repository_params_load_and_validate():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    # what the file says is what was loaded (no silent coercion or dropped values)
    assert params.data.source == raw["data"]["source"]
    assert params.model.hidden == raw["model"]["hidden"]
    assert params.train.lr == raw["train"]["lr"]
    assert params.train.epochs == raw["train"]["epochs"]
    # a dump of the loaded params validates again to the same params
    assert params_from_dict(params.to_dict()) == params


def test_repository_params_document_every_key_of_the_schema():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert _keys(raw) == _keys(Params().to_dict())


def test_defaults_are_sane():
    params = params_from_dict({})
    assert params == Params()
    check_combinations(params)  # the defaults combine
    s = params.split
    assert s.train + s.val + s.test == pytest.approx(1.0)
    assert min(s.train, s.test) > 0
    assert params.train.device == "auto"
    check_device(params.train.device)  # auto works on any machine
    assert params.train.lr > 0 and params.train.epochs >= 1
    assert params.model.hidden and all(h >= 1 for h in params.model.hidden)
    task, n_classes = expected_task(params.data)
    assert (task, n_classes) == ("multiclass", params.data.centers)
    assert default_loss(task) == "cross_entropy"


def test_sections_are_frozen():
    params = params_from_dict(tiny_params())
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        params.train.lr = 1.0  # type: ignore[misc]


# -- good variants --------------------------------------------------------------------------------
GOOD = {
    "moons_bce": {"data": {"source": "moons", "noise": 0.1}, "train": {"loss": "bce"}},
    "circles_cross_entropy": {"data": {"source": "circles"}, "train": {"loss": "cross_entropy"}},
    "linear_l1": {"data": {"source": "linear"}, "train": {"loss": "l1", "monitor": "val_mae"}},
    "linear_huber_rmse": {"data": {"source": "linear"}, "train": {"loss": "huber", "monitor": "val_rmse"}},
    "full_batch": {"train": {"batch_size": "full"}},
    "linear_model": {"model": {"hidden": []}},
    "deep": {"model": {"hidden": [32, 16, 8], "activation": "tanh", "dropout": 0.5, "batch_norm": True}},
    "sgd_nesterov": {"train": {"optimizer": "sgd", "momentum": 0.9, "nesterov": True}},
    "rmsprop_centered": {"train": {"optimizer": "rmsprop", "momentum": 0.5, "centered": True}},
    "no_val_train_loss": {
        "split": {"train": 0.8, "val": 0.0, "test": 0.2},
        "train": {"monitor": "train_loss", "early_stopping_patience": 2},
    },
    "uniform_init": {"model": {"init": {"scheme": "uniform", "low": -0.1, "high": 0.1, "bias": 0.0}}},
    "cuda_index_syntax": {"train": {"device": "cuda:1"}},  # syntax only; check_device is separate
    "mnist_predefined": {"data": {"source": "mnist"}, "split": {"method": "predefined"}},
    "csv_with_path": {"data": {"source": "csv", "path": "x.csv", "target": "y"}},
    "int_lr": {"train": {"lr": 1}},
}


@pytest.mark.parametrize("sections", GOOD.values(), ids=GOOD.keys())
def test_good_variants_validate(sections):
    params = params_from_dict(tiny_params(**sections))
    for section, values in sections.items():
        dumped = params.to_dict()[section]
        for key, value in values.items():
            if isinstance(value, dict):
                assert {k: dumped[key][k] for k in value} == value
            else:
                assert dumped[key] == value


# -- bad variants ---------------------------------------------------------------------------------
BAD = {
    # name: (sections merged over tiny params, key the message names, value as the message shows it)
    "unknown_nested_key": (
        {"model": {"init": {"schem": "xavier_uniform"}}},
        "model.init.schem",
        "'xavier_uniform'",
    ),
    "unknown_section_key": ({"train": {"learning_rate": 0.1}}, "train.learning_rate", "0.1"),
    "lr_string": ({"train": {"lr": "fast"}}, "train.lr", "'fast'"),
    "epochs_float": ({"train": {"epochs": 1.5}}, "train.epochs", "1.5"),
    "shuffle_string": ({"train": {"shuffle": "yes"}}, "train.shuffle", "'yes'"),
    "lr_bool": ({"train": {"lr": True}}, "train.lr", "True"),
    "hidden_not_list": ({"model": {"hidden": "16"}}, "model.hidden", "'16'"),
    "batch_size_word": ({"train": {"batch_size": "half"}}, "train.batch_size", "'half'"),
    "lr_negative": ({"train": {"lr": -1}}, "train.lr", "-1"),
    "val_above_one": ({"split": {"val": 1.5}}, "split.val", "1.5"),
    "dropout_one": ({"model": {"dropout": 1.0}}, "model.dropout", "1.0"),
    "hidden_zero": ({"model": {"hidden": [0]}}, "model.hidden[0]", "0"),
    "seed_negative": ({"split": {"seed": -1}}, "split.seed", "-1"),
    "fractions": ({"split": {"train": 0.5, "val": 0.2, "test": 0.2}}, "split", "0.5+0.2+0.2"),
    "bce_four_blobs": ({"data": {"centers": 4}, "train": {"loss": "bce"}}, "train.loss", "'bce'"),
    "mse_on_blobs": ({"train": {"loss": "mse"}}, "train.loss", "'mse'"),
    "l1_on_moons": ({"data": {"source": "moons"}, "train": {"loss": "l1"}}, "train.loss", "'l1'"),
    "huber_on_digits": ({"data": {"source": "digits"}, "train": {"loss": "huber"}}, "train.loss", "'huber'"),
    "bce_on_linear": ({"data": {"source": "linear"}, "train": {"loss": "bce"}}, "train.loss", "'bce'"),
    "cross_entropy_on_linear": (
        {"data": {"source": "linear"}, "train": {"loss": "cross_entropy"}},
        "train.loss",
        "'cross_entropy'",
    ),
    "val_accuracy_on_linear": (
        {"data": {"source": "linear"}, "train": {"monitor": "val_accuracy"}},
        "train.monitor",
        "'val_accuracy'",
    ),
    "val_rmse_on_blobs": ({"train": {"monitor": "val_rmse"}}, "train.monitor", "'val_rmse'"),
    "patience_without_val": (
        {"split": {"train": 0.8, "val": 0.0, "test": 0.2}, "train": {"early_stopping_patience": 3}},
        "train.early_stopping_patience",
        "3",
    ),
    "restore_best_without_val": (
        {"split": {"train": 0.8, "val": 0.0, "test": 0.2}, "train": {"restore_best": True}},
        "train.restore_best",
        "True",
    ),
    "nesterov_adam": ({"train": {"optimizer": "adam", "nesterov": True}}, "train.nesterov", "True"),
    "nesterov_without_momentum": (
        {"train": {"optimizer": "sgd", "nesterov": True}},
        "train.nesterov",
        "True",
    ),
    "momentum_adam": ({"train": {"optimizer": "adam", "momentum": 0.9}}, "train.momentum", "0.9"),
    "momentum_adamw": ({"train": {"optimizer": "adamw", "momentum": 0.5}}, "train.momentum", "0.5"),
    "device_gpu": ({"train": {"device": "gpu"}}, "train.device", "'gpu'"),
    "device_cuda_word": ({"train": {"device": "cuda:x"}}, "train.device", "'cuda:x'"),
    "predefined_blobs": ({"split": {"method": "predefined"}}, "split.method", "'predefined'"),
    "csv_without_path": ({"data": {"source": "csv", "target": "y"}}, "data.path", "None"),
    "csv_without_target": ({"data": {"source": "csv", "path": "x.csv"}}, "data.target", "None"),
    "uniform_low_high": (
        {"model": {"init": {"scheme": "uniform", "low": 1.0, "high": 0.0}}},
        "model.init.low",
        "1.0",
    ),
    "linear_empty_range": ({"data": {"source": "linear", "end": 0.0}}, "data.end", "0.0"),
}


@pytest.mark.parametrize(("sections", "key", "shown"), BAD.values(), ids=BAD.keys())
def test_bad_params_raise_one_line_naming_key_and_value(sections, key, shown):
    error = _refused(tiny_params(**sections))
    text = str(error)
    assert "\n" not in text
    assert error.key == key
    assert key in text
    assert shown in text
    assert isinstance(error, PipelineError) and error.exit_code == 2


def test_unknown_top_level_key_lists_the_sections():
    raw = tiny_params()
    raw["trian"] = {"lr": 0.1}
    error = _refused(raw)
    text = str(error)
    assert "\n" not in text
    assert error.unknown and error.key == "trian"
    assert "unknown key trian" in text
    for section in ("data", "split", "model", "train", "evaluate", "tracking"):
        assert section in text


def test_unknown_nested_key_lists_the_keys_of_its_section():
    text = str(_refused(tiny_params(model={"init": {"schem": "normal"}})))
    assert "model.init.schem" in text
    assert "scheme" in text.split("known keys here:")[1]


def test_section_that_is_not_a_mapping():
    raw = tiny_params()
    raw["data"] = 3
    error = _refused(raw)
    assert error.key == "data"
    assert "\n" not in str(error)


def test_fraction_error_shows_the_sum():
    text = str(_refused(tiny_params(split={"train": 0.6, "val": 0.3, "test": 0.3})))
    assert "1.2" in text and "summing to 1" in text


def test_bce_on_four_blobs_says_how_many_classes():
    text = str(_refused(tiny_params(data={"centers": 4}, train={"loss": "bce"})))
    assert "4 classes" in text and "cross_entropy" in text


def test_bce_on_two_blobs_is_fine():
    params = params_from_dict(tiny_params(data={"centers": 2}, train={"loss": "bce"}))
    assert expected_task(params.data) == ("binary", 2)


def test_cuda_device_on_this_machine():
    if torch.cuda.is_available():
        check_device("cuda")  # a GPU is here: accepted
        with pytest.raises(ConfigError) as info:
            check_device(f"cuda:{torch.cuda.device_count()}")  # one past the last GPU
    else:
        with pytest.raises(ConfigError) as info:
            check_device("cuda")
    assert info.value.key == "train.device"
    assert "\n" not in str(info.value)


def test_cpu_and_auto_devices_always_pass():
    check_device("cpu")
    check_device("auto")


def test_predefined_refused_for_every_source_without_a_test_set():
    for source in ("blobs", "moons", "circles", "linear", "digits"):
        raw = tiny_params(data={"source": source}, split={"method": "predefined"})
        raw["train"]["loss"] = "mse" if source == "linear" else "auto"
        assert _refused(raw).key == "split.method"


# -- files and overrides --------------------------------------------------------------------------
def test_override_changes_the_value(tmp_path):
    path = write_params(tmp_path / "params.yaml", tiny_params())
    assert load_params(path).train.lr == 0.01
    params = load_params(path, ["train.lr=0.05", "model.hidden=[4, 3]", "data.source=moons"])
    assert params.train.lr == 0.05
    assert params.model.hidden == [4, 3]
    assert params.data.source == "moons"
    # the file itself is not changed
    assert yaml.safe_load(path.read_text()) == tiny_params()


def test_override_of_a_missing_section_key_creates_it(tmp_path):
    path = write_params(tmp_path / "params.yaml", {"data": {"source": "blobs"}})
    assert load_params(path, ["model.init.scheme=xavier_normal"]).model.init.scheme == "xavier_normal"


@pytest.mark.parametrize("override", ["train.lr", "=0.1", "train..lr=0.1", ".lr=1"])
def test_malformed_override(tmp_path, override):
    path = write_params(tmp_path / "params.yaml", tiny_params())
    with pytest.raises(ConfigError) as info:
        load_params(path, [override])
    assert info.value.key == "--set"
    assert repr(override) in str(info.value)
    assert "\n" not in str(info.value)


def test_override_with_a_bad_value_names_the_file_and_key(tmp_path):
    path = write_params(tmp_path / "params.yaml", tiny_params())
    with pytest.raises(ConfigError) as info:
        load_params(path, ["train.lr=fast"])
    text = str(info.value)
    assert text.startswith(f"{path}: train.lr = 'fast'")
    assert "\n" not in text


def test_override_below_a_value(tmp_path):
    path = write_params(tmp_path / "params.yaml", tiny_params())
    with pytest.raises(ConfigError) as info:
        load_params(path, ["train.epochs.x=1"])  # epochs is set in the file, to a number
    assert "epochs is a value" in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_syntax_error_gives_one_line_with_the_line_number(tmp_path):
    path = tmp_path / "params.yaml"
    # line 3 starts with a tab, which YAML does not allow for indentation
    path.write_text("data:\n  source: blobs\n\tcenters: 3\n")
    with pytest.raises(ConfigError) as info:
        load_params(path)
    text = str(info.value)
    assert "\n" not in text
    assert str(path) in text
    assert "line 3" in text


def test_params_file_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert "list" in str(info.value)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_params(tmp_path / "nope.yaml")
    assert info.value.key == "--params"
    assert "nope.yaml" in str(info.value)


def test_empty_params_file_gives_the_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    assert load_params(path) == Params()


def test_data_config_alone_is_strict():
    with pytest.raises(Exception):  # noqa: B017 - pydantic ValidationError, not wrapped here
        DataConfig(source="imagenet")  # type: ignore[arg-type]


# -- the command line -----------------------------------------------------------------------------
def _bad_file(workdir: Path) -> Path:
    return write_params(workdir / "params.yaml", tiny_params(train={"lr": "fast"}))


@pytest.mark.parametrize("command", ["check", "data"])
def test_cli_bad_params_exit_2_with_one_line(workdir, command):
    _bad_file(workdir)
    result = CliRunner().invoke(main, [command])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error:")
    assert "train.lr" in lines[0] and "'fast'" in lines[0]
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped exception


def test_cli_data_with_bad_params_writes_nothing(workdir):
    _bad_file(workdir)
    before = sorted(p.name for p in workdir.iterdir())
    result = CliRunner().invoke(main, ["data"])
    assert result.exit_code == 2
    assert not (workdir / "data").exists()
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_cli_bad_override_exit_2(workdir):
    write_params(workdir / "params.yaml", tiny_params())
    result = CliRunner().invoke(main, ["data", "--set", "train.lr"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error:")
    assert not (workdir / "data").exists()


def test_cli_cuda_on_a_machine_without_it(workdir):
    write_params(workdir / "params.yaml", tiny_params())
    result = CliRunner().invoke(main, ["check", "--set", "train.device=cuda"])
    if torch.cuda.is_available():
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 2
        assert result.output.startswith("error: params.yaml: train.device = 'cuda'")
        assert len(result.output.splitlines()) == 1


def test_cli_check_good_file(workdir):
    write_params(workdir / "params.yaml", tiny_params())
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("params.yaml: ok (blobs, hidden [8], adam lr 0.01)")
    assert not (workdir / "data").exists()


def test_cli_check_other_file_and_override(workdir):
    write_params(workdir / "other.yaml", tiny_params())
    result = CliRunner().invoke(main, ["check", "--params", "other.yaml", "--set", "train.lr=0.5"])
    assert result.exit_code == 0, result.output
    assert "other.yaml: ok" in result.output and "lr 0.5" in result.output


def test_cli_check_missing_file(workdir):
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 2
    assert result.output.startswith("error: --params = 'params.yaml'")


def test_cli_group_help():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in STAGE_COMMANDS:
        assert f"  {command} " in result.output


@pytest.mark.parametrize("command", STAGE_COMMANDS)
def test_cli_command_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: main {command} [OPTIONS]" in result.output
    assert "--params PATH" in result.output and "--set KEY=VALUE" in result.output
