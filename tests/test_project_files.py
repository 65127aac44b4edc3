"""The project's own files agree with each other: MLproject, dvc.yaml, conf/ and params.yaml."""

from __future__ import annotations

import yaml
from conftest import REPO

from pipeline.config import load_params

# MLproject `main` parameter -> params.yaml key
MAIN_PARAMETERS = {
    "dataset": ("data", "source"),
    "hidden": ("model", "hidden"),
    "activation": ("model", "activation"),
    "optimizer": ("train", "optimizer"),
    "lr": ("train", "lr"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "device": ("train", "device"),
}


def test_mlproject_main_parameters_leave_params_alone_unless_given():
    """Every `main` parameter defaults to "" and reaches one params key through --set-nonempty,
    so a run without -P trains exactly params.yaml."""
    project = yaml.safe_load((REPO / "MLproject").read_text())
    params = load_params(REPO / "params.yaml").to_dict()
    main = project["entry_points"]["main"]
    assert set(main["parameters"]) == {"experiment", *MAIN_PARAMETERS}
    for name, spec in main["parameters"].items():
        assert spec["default"] == "", name
    for name, (section, key) in MAIN_PARAMETERS.items():
        assert key in params[section], name
        assert f"--set-nonempty {section}.{key}={{{name}}}" in main["command"], name
    assert "--experiment={experiment}" in main["command"]


def test_params_yaml_is_the_composition_of_conf(tmp_path, monkeypatch):
    """params.yaml is what `dvc exp run` (Hydra) writes from conf/config.yaml: never drifts."""
    from pipeline.experiments import compose, dump

    dump(tmp_path / "params.yaml", compose(REPO, None))
    assert (tmp_path / "params.yaml").read_text() == (REPO / "params.yaml").read_text()


def test_every_stage_has_an_entry_point_and_a_dvc_stage():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["data", "split", "train", "evaluate"]
    for name, stage in stages.items():
        assert stage["cmd"] == f"pipeline {name}"
        assert f"pipeline {name}" in project["entry_points"][name]["command"]
