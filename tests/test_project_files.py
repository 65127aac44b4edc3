"""The project's own files agree with each other: MLproject, dvc.yaml, conf/ and params.yaml."""

from __future__ import annotations

import yaml
from conftest import REPO, run_script

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


# modules every command runs that decide nothing a stage writes: the command layer (parses and
# calls one function), the package's version string, its error type, the collector's schedule
COMMAND_LAYER = {"src/pipeline/__init__.py", "src/pipeline/__main__.py", "src/pipeline/cli.py",
                 "src/pipeline/errors.py", "src/pipeline/gc_control.py"}  # fmt: skip

_STAGE_MODULES = """
import json, sys
from pathlib import Path
from conftest import tiny_params
from pipeline.config import params_from_dict
from pipeline import stages
raw = tiny_params(evaluate={"plots": True}, tracking={"enabled": True, "process": False})
getattr(stages, sys.argv[2])(params_from_dict(raw), stages.Layout(Path(sys.argv[1])))
print(json.dumps(sorted(m for m in sys.modules if m == "pipeline" or m.startswith("pipeline."))))
"""


def test_each_dvc_stage_depends_on_the_package_modules_it_runs(tmp_path):
    """A change to a module a stage imports re-runs that stage: dvc.yaml lists it in `deps`
    (a module, or its package folder). Measured: each stage in a fresh process of its own, in
    order (MLflow in the same process), and the pipeline modules loaded at its end."""
    import importlib.util
    import json
    import os

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        modules = json.loads(run_script(_STAGE_MODULES, tmp_path, name))
        files = {os.path.relpath(importlib.util.find_spec(m).origin, REPO) for m in modules}
        deps = [d for d in stage["deps"] if isinstance(d, str) and d.startswith("src/")]
        missing = sorted(
            path for path in files - COMMAND_LAYER
            if not any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)
        )  # fmt: skip
        assert not missing, f"dvc.yaml stage {name} runs {missing} without listing them in deps"
