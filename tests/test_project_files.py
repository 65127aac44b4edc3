"""The project's own files agree with each other: MLproject defaults mirror params.yaml."""

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


def test_mlproject_main_defaults_mirror_params_yaml():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    params = load_params(REPO / "params.yaml").to_dict()
    main = project["entry_points"]["main"]
    assert set(main["parameters"]) == set(MAIN_PARAMETERS)
    for name, (section, key) in MAIN_PARAMETERS.items():
        default = yaml.safe_load(str(main["parameters"][name]["default"]))
        assert default == params[section][key], name
        assert f"--set {section}.{key}={{{name}}}" in main["command"], name


def test_every_stage_has_an_entry_point_and_a_dvc_stage():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["data", "split", "train", "evaluate"]
    for name, stage in stages.items():
        assert stage["cmd"] == f"pipeline {name}"
        assert f"pipeline {name}" in project["entry_points"][name]["command"]
