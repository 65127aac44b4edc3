"""Named experiments through the real tools: `dvc exp run` (queued too) and `mlflow run`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from test_e2e import GIT_USER, Project, _copy_repository, _run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A committed copy of the repository whose base config is the default one."""
    root = _copy_repository(tmp_path_factory.mktemp("e2e-experiments"))
    _run(["git", "init", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", *GIT_USER, "commit", "-q", "-m", "copy"], root)
    yield Project(root)


def _runs(project: Project, experiment: str) -> list:
    client = project.client()
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_dvc_exp_run_queue_selects_a_named_experiment(project):
    project.run("dvc", "exp", "run", "--queue", "-S", "experiment=linear_l1", "-S", "train.epochs=40")
    project.run("dvc", "exp", "run", "--run-all")
    runs = _runs(project, "linear-regression")  # the MLflow experiment the named one sets
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "linear_l1"
    assert run.data.params["data.source"] == "linear" and run.data.params["train.loss"] == "l1"
    assert run.data.params["train.epochs"] == "40"
    assert "test_mae" in run.data.metrics  # evaluate logged into the queued run
    # dvc exp show sees what the named experiment changed
    shown = project.run("dvc", "exp", "show", "--json").stdout
    assert '"linear"' in shown and '"l1"' in shown
    # the workspace's params.yaml is untouched by a queued experiment
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    assert params["data"]["source"] == "blobs"


def test_mlflow_run_with_a_named_experiment_and_an_override(project):
    project.run(
        "mlflow",
        "run",
        ".",
        "--env-manager",
        "local",
        "--experiment-name",
        "tiny-e2e",
        "-P",
        "experiment=tiny_moons",
        "-P",
        "epochs=200",
    )
    runs = _runs(project, "tiny-e2e")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["data.source"] == "moons" and params["model.hidden"] == "[2]"
    assert params["train.epochs"] == "200" and params["train.lr"] == "0.2"  # -P given, the rest as named
    assert "test_accuracy" in run.data.metrics
    history = project.client().get_metric_history(run.info.run_id, "train_loss")
    # tracking.log_every_epochs: auto sends about 100 points of a 200-epoch curve: every 2nd epoch
    assert sorted(m.step for m in history) == list(range(2, 201, 2))
