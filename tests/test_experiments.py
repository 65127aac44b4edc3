"""Named experiments: each composes, validates and trains for a step; the commands around them."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO
from idx import write_idx_dataset

from pipeline import stages
from pipeline.cli import main
from pipeline.config import apply_overrides, params_from_dict
from pipeline.errors import ConfigError
from pipeline.experiments import compose, describe, names

NAMES = names(REPO)


def test_every_workload_of_the_tutorials_has_named_experiments():
    expected = {
        "blobs4_sigmoid_lr1",
        "blobs4_sigmoid_lr02",
        "blobs4_wide",
        "blobs64_adam",
        "blobs64_rmsprop",
        "blobs64_sgd",
        "tiny_blobs4",
        "tiny_blobs4_deep",
        "tiny_blobs4_nesterov",
        "tiny_blobs4_adam",
        "tiny_blobs4_rmsprop",
        "tiny_moons",
        "linear_l1",
        "linear_relu_net",
    } | {
        f"{data}_{model}"
        for data in ("mnist", "fashion", "digits")
        for model in ("a_sigmoid", "b_tanh", "c_relu", "d_relu2", "e_relu3")
    }
    assert set(NAMES) == expected


@pytest.mark.parametrize("name", NAMES)
def test_named_experiment_validates_and_trains_a_step(name, workdir, layout):
    raw = compose(REPO, name)
    params = params_from_dict(raw)
    assert params.tracking.run_name == name  # the run is named after its experiment
    if params.data.source in ("mnist", "fashion_mnist"):
        folder = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[params.data.source]
        write_idx_dataset(workdir / "idx", folder, n_train=30, n_test=10)
        raw = apply_overrides(raw, ["data.root=idx", "data.download=false"])
    raw = apply_overrides(
        raw,
        [
            "train.max_steps=1",
            "train.epochs=1",
            "train.checkpoint_every=0",
            "train.progress=off",
            "tracking.enabled=false",
            "evaluate.plots=false",
        ],
    )
    small = params_from_dict(raw)
    stages.data(small, layout)
    stages.split(small, layout)
    summary = stages.train(small, layout)
    assert summary["step"] == 1
    assert summary["train_loss"] == summary["train_loss"]  # not NaN
    assert stages.evaluate(small, layout)["n"] > 0


def test_composition_matches_the_experiment_file_over_the_base():
    raw = compose(REPO, "blobs64_rmsprop")
    assert raw["data"]["n_features"] == 64 and raw["data"]["cluster_std"] == 10.0  # from blobs64_adam
    assert raw["train"]["optimizer"] == "rmsprop" and raw["train"]["centered"] is True
    assert raw["train"]["batch_size"] == 16 and raw["split"]["method"] == "ordered"
    base = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    assert raw["evaluate"] == base["evaluate"]  # untouched sections come from the base


def test_unknown_experiment_is_refused_with_the_names():
    with pytest.raises(ConfigError) as caught:
        compose(REPO, "blobs64_adamw")
    assert "blobs64_adam" in str(caught.value) and "\n" not in str(caught.value)


def test_experiments_command_lists_one_line_each(monkeypatch):
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(main, ["experiments"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # every one has a description
    assert dict(describe(REPO))["linear_l1"].startswith("Workload 4")


def test_compose_writes_params_for_dvc_repro_and_refuses_bad_overrides(workdir):
    (workdir / "conf").symlink_to(REPO / "conf")
    runner = CliRunner()
    result = runner.invoke(main, ["compose", "tiny_moons", "--set", "train.epochs=7"])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((workdir / "params.yaml").read_text())
    assert written["data"]["source"] == "moons" and written["train"]["epochs"] == 7
    before = (workdir / "params.yaml").read_bytes()
    bad = runner.invoke(main, ["compose", "tiny_moons", "--set", "train.lr=-1"])
    assert bad.exit_code == 2 and "train.lr" in bad.output
    assert (workdir / "params.yaml").read_bytes() == before  # nothing half-written


def test_run_with_experiment_trains_it_without_touching_params_yaml(workdir):
    (workdir / "conf").symlink_to(REPO / "conf")
    (workdir / "params.yaml").write_text("data: {source: blobs}\n")
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--experiment",
            "linear_l1",
            "--set",
            "train.epochs=20",
            "--set",
            "tracking.enabled=false",
            "--set-nonempty",
            "train.lr=",
            "--set-nonempty",
            "train.seed=7",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (workdir / "params.yaml").read_text() == "data: {source: blobs}\n"
    history = yaml.safe_load((workdir / "models" / "history.json").read_text())
    assert history["epochs"] == 20
    record = yaml.safe_load((workdir / "models" / "run.json").read_text())
    assert record["run_id"] is None
    assert [p["step"] for p in history["test_history"]] == []  # 20 steps < test_every_steps 100
