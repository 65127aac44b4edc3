"""End to end: the real `dvc`, `mlflow` and `pipeline` commands in a temporary copy of this repository.

The copy holds the tracked (and untracked but not ignored) files only, is its own git repository,
and keeps MLflow's default store, `sqlite:///<copy root>/mlflow.db` (MLFLOW_TRACKING_URI is unset
for every command). A tiny params.yaml keeps each pipeline execution to a few seconds; the tests of
one module share the copy and run in file order: repro, no-op repro, experiments, `mlflow run`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from benchmarks.overhead import UNSET  # the variables a copy of the repository must not inherit

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: dvc, mlflow, pipeline
EXPERIMENT = "ffn-pipeline"
EPOCHS = 5
TIMEOUT = 600
NOT_COPIED = {".venv", "mlflow.db", "mlflow.db-journal", "mlartifacts", "mlruns"}  # at any depth
NOT_COPIED_TOP = {"data", "models"}  # pipeline outputs at the root (src/pipeline/data is source)
GIT_USER = ("-c", "user.name=e2e tests", "-c", "user.email=e2e@example.invalid")
STAGES = ("data", "split", "train", "evaluate")

PREDICT_SCRIPT = """
import json, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.DataFrame({"x0": [0.0, 4.0, -6.0, 9.0], "x1": [0.0, 4.0, 2.0, -3.0]})
out = model.predict(frame)
print(json.dumps({"type": type(out).__name__, "columns": [str(c) for c in out.columns],
                  "rows": out.astype(object).to_dict(orient="records")}, default=str))
"""


# -- helpers ----------------------------------------------------------------------------------------
def _tail(proc: subprocess.CompletedProcess[str], limit: int = 4000) -> str:
    return (
        f"\n$ {' '.join(map(str, proc.args))}\nexit code {proc.returncode}"
        f"\n--- stdout (tail) ---\n{proc.stdout[-limit:]}\n--- stderr (tail) ---\n{proc.stderr[-limit:]}"
    )


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env.update(extra)
    return env


def _run(
    args: list[str], cwd: Path, *, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, f"command failed:{_tail(proc)}"
    return proc


def _repository_files() -> list[str]:
    """Tracked files plus untracked-but-not-ignored ones, minus the venv, stores and outputs."""
    names: set[str] = set()
    for extra in ([], ["--others", "--exclude-standard"]):
        out = subprocess.run(
            ["git", "ls-files", "-z", *extra],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        names.update(name for name in out.stdout.split("\0") if name)
    return sorted(
        name
        for name in names
        if not NOT_COPIED & set(PurePosixPath(name).parts)
        and PurePosixPath(name).parts[0] not in NOT_COPIED_TOP
        and (REPO / name).is_file()
    )


def _copy_repository(dest: Path) -> Path:
    for name in _repository_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under `folder`: modification time and SHA-256."""
    return {
        str(path.relative_to(folder)): (
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _experiment_name(output: str) -> str:
    found = re.search(r"Ran experiment\(s\): (\S+)", output)
    assert found, f"no experiment name in the output of dvc exp run:\n{output[-3000:]}"
    return found.group(1)


def _names_in(tree: Any) -> set[str]:
    """Every "name" value anywhere in `dvc exp show --json` output."""
    if isinstance(tree, dict):
        found = {tree["name"]} if isinstance(tree.get("name"), str) else set()
        return found.union(*(_names_in(v) for v in tree.values()))
    if isinstance(tree, list):
        return set().union(*(_names_in(v) for v in tree))
    return set()


@dataclass
class Project:
    root: Path

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(list(args), self.root, ok=ok)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def client(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri)

    def runs(self) -> list[Any]:
        """The experiment's runs, oldest first."""
        assert (self.root / "mlflow.db").is_file(), "no mlflow.db at the root of the copy"
        client = self.client()
        experiment = client.get_experiment_by_name(EXPERIMENT)
        assert experiment is not None, f"no experiment {EXPERIMENT!r} in {self.tracking_uri}"
        return client.search_runs(
            [experiment.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"]
        )

    def new_run(self, before: set[str]) -> Any:
        runs = self.runs()
        new = [r for r in runs if r.info.run_id not in before]
        assert len(new) == 1, f"expected exactly one new run, got {len(new)}: {[r.info.run_id for r in new]}"
        assert len(runs) == len(before) + 1
        return new[0]

    def run_ids(self) -> set[str]:
        return {r.info.run_id for r in self.runs()}

    def read_json(self, rel: str) -> Any:
        return json.loads((self.root / rel).read_text())

    def steps(self, run_id: str, metric: str) -> list[int]:
        return sorted(m.step for m in self.client().get_metric_history(run_id, metric))


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A committed copy of the repository with tiny params (blobs, 300 rows, 5 epochs, CPU).

    `dvc exp run` composes params.yaml from conf/config.yaml (Hydra), so the base config is made
    tiny and params.yaml composed from it with `pipeline compose`, as a user would.
    """
    root = _copy_repository(tmp_path_factory.mktemp("e2e-repo"))
    config = yaml.safe_load((root / "conf" / "config.yaml").read_text())
    config["data"]["n_samples"] = 300
    config["train"].update(epochs=EPOCHS, device="cpu")
    (root / "conf" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _run(["pipeline", "compose"], root)
    _run(["git", "init", "-q"], root)
    for key, value in (("user.name", "e2e tests"), ("user.email", "e2e@example.invalid")):
        _run(["git", "config", key, value], root)  # DVC commits experiments with it too
    _run(["git", "add", "-A"], root)
    _run(["git", *GIT_USER, "commit", "-q", "-m", "e2e copy"], root)
    yield Project(root)


@pytest.fixture(scope="module")
def reproduced(project: Project) -> subprocess.CompletedProcess[str]:
    """The first `dvc repro` of the copy (the experiments below start from its results)."""
    return project.run("dvc", "repro")


# -- dvc repro --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dvc_repro_runs_every_stage_into_one_finished_mlflow_run(project, reproduced):
    output = reproduced.stdout + reproduced.stderr
    for stage in STAGES:
        assert f"Running stage '{stage}'" in output, _tail(reproduced)
    for rel in ("models/model.pt", "models/history.json", "models/run.json", "metrics/eval.json"):
        assert (project.root / rel).is_file(), f"{rel} missing after dvc repro"

    runs = project.runs()
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert params["train.lr"] == "0.01"
    assert params["train.epochs"] == str(EPOCHS)
    assert params["model.hidden"] == "[16]"
    assert params["model.init.scheme"] == "default"
    assert params["data.source"] == "blobs"
    assert params["evaluate.plots"] == "True"  # logged by evaluate into the same run
    assert project.steps(run_id, "train_loss") == list(range(1, EPOCHS + 1))
    assert project.steps(run_id, "val_loss") == list(range(1, EPOCHS + 1))

    record = project.read_json("models/run.json")
    assert record["run_id"] == run_id
    assert record["tracking_uri"] == project.tracking_uri
    evaluation = project.read_json("metrics/eval.json")
    assert run.data.metrics["test_accuracy"] == pytest.approx(evaluation["accuracy"])

    tags = run.data.tags
    head = project.run("git", "rev-parse", "HEAD").stdout.strip()
    assert tags["git_commit"] == head
    assert tags["git_dirty"] in ("true", "false")
    assert tags["data_fingerprint"] == project.read_json("data/split/meta.json")["fingerprint"]
    assert tags["device"] == "cpu"
    assert tags["package_version"] == version("ffn-pipeline")
    assert tags["stop_reason"] == "epochs"
    assert "dvc_exp_name" not in tags  # a plain repro is no DVC experiment

    plots = {a.path for a in project.client().list_artifacts(run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/confusion_matrix.png"} <= plots, plots
    assert run.info.artifact_uri.startswith((project.root / "mlartifacts").as_uri())


@pytest.mark.slow
def test_logged_model_predicts_labels_and_probabilities_from_named_columns(project, reproduced):
    model_uri = project.read_json("models/run.json")["model_uri"]
    assert model_uri and model_uri.startswith("models:/"), model_uri
    proc = _run(
        [sys.executable, "-c", PREDICT_SCRIPT, model_uri],
        project.root,
        env=_env(MLFLOW_TRACKING_URI=project.tracking_uri),
    )
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["type"] == "DataFrame"
    columns = answer["columns"]
    probs = [c for c in columns if c.startswith("prob_")]
    assert columns[0] == "label"
    assert len(probs) == 4, columns  # default blobs: 4 centers
    classes = {c.removeprefix("prob_") for c in probs}
    assert len(answer["rows"]) == 4
    for row in answer["rows"]:
        assert str(row["label"]) in classes
        assert sum(float(row[c]) for c in probs) == pytest.approx(1.0, abs=1e-5)
        assert all(0.0 <= float(row[c]) <= 1.0 for c in probs)
        assert str(row["label"]) == max(probs, key=lambda c: float(row[c])).removeprefix("prob_")


@pytest.mark.slow
def test_second_dvc_repro_skips_every_stage_and_opens_no_run(project, reproduced):
    before = project.run_ids()
    run_json = (project.root / "models/run.json").read_bytes()
    bytecode = project.root / "src/pipeline/data/__pycache__"  # Python writes it when it imports:
    bytecode.mkdir(exist_ok=True)  # it is no source change (.dvcignore)
    (bytecode / "written_since.cpython-311.pyc").write_bytes(b"\x00")
    proc = project.run("dvc", "repro")
    output = proc.stdout + proc.stderr
    assert "Data and pipelines are up to date" in output, _tail(proc)
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in output, _tail(proc)
    assert "Running stage" not in output, _tail(proc)
    assert project.run_ids() == before
    assert (project.root / "models/run.json").read_bytes() == run_json


# -- dvc exp run ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dvc_exp_run_adds_one_run_tagged_with_the_experiment_name(project, reproduced):
    before = project.run_ids()
    proc = project.run("dvc", "exp", "run", "-S", "train.lr=0.05")
    output = proc.stdout + proc.stderr
    name = _experiment_name(output)
    shown = json.loads(project.run("dvc", "exp", "show", "--json").stdout)
    assert name in _names_in(shown), f"{name} not in dvc exp show --json"

    for stage in ("data", "split"):
        assert f"Stage '{stage}' didn't change, skipping" in output, _tail(proc)
        assert f"Running stage '{stage}'" not in output, _tail(proc)
    assert "Running stage 'train'" in output, _tail(proc)

    run = project.new_run(before)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.05"
    assert run.data.tags["dvc_exp_name"] == name
    assert run.data.tags["mlflow.runName"] == name
    assert "test_accuracy" in run.data.metrics
    assert project.read_json("models/run.json")["run_id"] == run.info.run_id  # applied to the workspace


@pytest.mark.slow
def test_dvc_exp_run_temp_logs_into_the_store_at_the_repository_root(project, reproduced):
    before = project.run_ids()
    proc = project.run("dvc", "exp", "run", "--temp", "-S", "train.epochs=2")
    output = proc.stdout + proc.stderr
    name = _experiment_name(output)
    assert "Running stage 'data'" not in output, _tail(proc)

    run = project.new_run(before)  # in <root>/mlflow.db, not in the throw-away .dvc/tmp/exps copy
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.tags["dvc_exp_name"] == name
    assert project.steps(run_id, "train_loss") == [1, 2]
    assert "test_accuracy" in run.data.metrics
    # its artifacts outlive the temporary copy: they are in <root>/mlartifacts
    assert run.info.artifact_uri.startswith((project.root / "mlartifacts").as_uri())
    assert project.client().list_artifacts(run_id, "plots")
    stores = [p for p in project.root.rglob("*") if p.name in ("mlflow.db", "mlruns")]
    assert stores == [project.root / "mlflow.db"], stores


# -- mlflow run -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mlflow_run_is_one_run_that_train_and_evaluate_join(project, reproduced):
    before = project.run_ids()
    proc = project.run(
        "mlflow", "run", ".", "--env-manager", "local", "--experiment-name", EXPERIMENT, "-P", "epochs=3"
    )
    run = project.new_run(before)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED", _tail(proc)
    assert run.data.params["epochs"] == "3"  # MLproject's parameter, logged by mlflow run
    assert run.data.params["train.epochs"] == "3"  # ours, logged by train into the same run
    assert project.steps(run_id, "train_loss") == [1, 2, 3]
    assert "test_accuracy" in run.data.metrics  # evaluate joined it too
    assert run.data.tags.get("mlflow.project.entryPoint") == "main"
    assert project.read_json("models/run.json")["run_id"] == run_id


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "key"),
    [("negative-lr", "train.lr"), ("unknown-key", "train.learning_rate")],
)
def test_bad_params_exit_2_with_one_line_and_leave_models_alone(project, reproduced, tmp_path, case, key):
    if case == "negative-lr":
        args = ["pipeline", "train", "--set", "train.lr=-1"]
    else:
        raw = yaml.safe_load((project.root / "params.yaml").read_text())
        raw["train"]["learning_rate"] = 0.1
        bad = tmp_path / "params.yaml"
        bad.write_text(yaml.safe_dump(raw, sort_keys=False))
        args = ["pipeline", "train", "--params", str(bad)]
    models = project.root / "models"
    before = _snapshot(models)
    assert "model.pt" in before
    runs_before = project.run_ids()

    proc = project.run(*args, ok=False)
    assert proc.returncode == 2, _tail(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, _tail(proc)
    assert lines[0].startswith("error:"), _tail(proc)
    assert key in lines[0], _tail(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _snapshot(models) == before
    assert project.run_ids() == runs_before


# -- the repository's own params --------------------------------------------------------------------
@pytest.mark.slow
def test_default_params_reach_90_percent_test_accuracy(tmp_path_factory):
    root = _copy_repository(tmp_path_factory.mktemp("e2e-defaults"))
    assert (root / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()
    proc = _run(["pipeline", "run"], root)
    evaluation = json.loads((root / "metrics" / "eval.json").read_text())
    assert evaluation["accuracy"] >= 0.90, f"{evaluation}{_tail(proc)}"


@pytest.mark.slow
@pytest.mark.parametrize("value", ["on", "off"])
def test_documented_progress_values_are_accepted_as_written_in_params_yaml(tmp_path, value):
    """params.yaml documents `progress: auto | on | off`; written plainly (as `dvc exp run -S` writes
    it back) the value must still load."""
    text = (REPO / "params.yaml").read_text()
    edited, count = re.subn(r"(?m)^(\s+progress:) \S+", rf"\1 {value}", text)
    assert count == 1
    (tmp_path / "params.yaml").write_text(edited)
    proc = _run(["pipeline", "check"], tmp_path, ok=False)
    assert proc.returncode == 0, _tail(proc)
