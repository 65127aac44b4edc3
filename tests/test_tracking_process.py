"""MLflow in its own process beside train and evaluate: the same run as in-process tracking,
no MLflow in the stage's own process, errors in one line, and no process left behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import run_script, tiny_params

from pipeline import stages
from pipeline.config import params_from_dict
from pipeline.errors import PipelineError
from pipeline.files import read_json
from pipeline.stages import Layout


def _pipeline(root: Path, process: bool) -> dict[str, Any]:
    """data -> split -> train -> evaluate in `root` with checkpoints logged as models; the run."""
    raw = tiny_params(
        train={"epochs": 4, "checkpoint_every": 2},
        tracking={"enabled": True, "experiment": "proc", "process": process, "keep_checkpoints": 1},
    )
    params = params_from_dict(raw)
    layout = Layout(root)
    stages.data(params, layout)
    stages.split(params, layout)
    stages.train(params, layout)
    stages.evaluate(params, layout)
    return read_json(layout.run)


def _summary(run_id: str) -> dict[str, Any]:
    """What a user sees of a run: params, tags we set, every metric's history, logged models."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(run_id)
    histories = {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in run.data.metrics
    }
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    ours = ("stop_reason", "data_fingerprint", "device", "champion_decision", "git_dirty")
    return {
        "status": run.info.status,
        "params": run.data.params,
        "tags": {k: v for k, v in run.data.tags.items() if k in ours},
        "metrics": histories,
        "models": sorted((m.name, m.tags.get("checkpoint_epoch"), str(m.status)) for m in models),
        "linked": sorted(
            (m.name, sorted((x.key, x.step, x.value) for x in m.metrics or [])) for m in models
        ),
    }


def test_a_run_logged_from_the_tracking_process_equals_one_logged_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summaries = []
    for process in (True, False):
        root = tmp_path / str(process)
        root.mkdir()
        monkeypatch.chdir(root)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        run = _pipeline(root, process)
        assert run["model_version"] == "1"
        summaries.append(_summary(run["run_id"]))
    remote, local = summaries
    for summary in summaries:
        del summary["params"]["tracking.process"]
    assert remote == local
    assert remote["status"] == "FINISHED"
    assert ("checkpoint-000004", "4", "READY") in remote["models"]  # the best one kept
    assert len(remote["models"]) == 2  # one checkpoint kept, and the model
    assert len(remote["metrics"]["train_loss"]) == 4


def test_the_stage_process_imports_no_mlflow(tmp_path: Path) -> None:
    """Train and evaluate leave MLflow to the tracking process: their own process never imports it."""
    code = (
        "import sys; from pathlib import Path; from conftest import tiny_params;"
        "from pipeline.config import params_from_dict; from pipeline import stages;"
        "p = params_from_dict(tiny_params(tracking={'enabled': True}));"
        "layout = stages.Layout(Path(sys.argv[1]));"
        "stages.data(p, layout); stages.split(p, layout);"
        "stages.train(p, layout); stages.evaluate(p, layout);"
        "print('mlflow' in sys.modules, 'torch._dynamo' in sys.modules)"
    )
    assert run_script(code, tmp_path) == "False False"
    assert read_json(tmp_path / "models" / "run.json")["model_version"] == "1"
    _store_file_alone_holds_the_run(tmp_path)


def _store_file_alone_holds_the_run(root: Path) -> None:
    """The processes that wrote the WAL store folded its log back as they left: mlflow.db alone
    (here, a copy of it) holds the finished run with its metrics."""
    import shutil
    import sqlite3

    assert sorted(p.name for p in root.glob("mlflow.db*")) == ["mlflow.db"]
    copy = root.parent / f"{root.name}-copy.db"
    shutil.copyfile(root / "mlflow.db", copy)
    run_id = read_json(root / "models" / "run.json")["run_id"]
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        status = conn.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        assert status == ("FINISHED",)
        assert conn.execute("SELECT count(*) FROM metrics WHERE run_uuid = ?", (run_id,)).fetchone()[0] > 0


def test_in_process_tracking_folds_the_log_at_exit(tmp_path: Path) -> None:
    """`pipeline train` and `evaluate` commands tracking in their own process (whose exit skips
    Python's final collection, gc_control) fold the log as they exit."""
    import subprocess
    import sys

    import yaml

    raw = tiny_params(tracking={"enabled": True, "process": False})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    for stage in ("data", "split", "train", "evaluate"):
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", stage], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
    _store_file_alone_holds_the_run(tmp_path)


def _no_children_left() -> bool:
    """No child process of this one, running or unreaped."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_a_store_that_cannot_be_opened_is_one_line_and_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the store's folder should be")
    layout = Layout(tmp_path)
    stages.data(params_from_dict(tiny_params()), layout)
    stages.split(params_from_dict(tiny_params()), layout)
    for process in (True, False):  # the same line from the tracking process and in-process
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocked / 'mlflow.db'}")
        params = params_from_dict(tiny_params(tracking={"enabled": True, "process": process}))
        refused = r"^MLflow store at sqlite:///.*not-a-dir/mlflow.db cannot be opened"
        with pytest.raises(PipelineError, match=refused):
            stages.train(params, layout)
        assert _no_children_left()


def test_a_stage_failing_before_its_run_opens_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = params_from_dict(tiny_params(tracking={"enabled": True, "process": True}))
    with pytest.raises(PipelineError, match="pipeline split"):
        stages.train(params, Layout(tmp_path))  # no split yet
    assert _no_children_left()


def test_auto_keeps_tracking_in_a_process_that_has_loaded_mlflow_already() -> None:
    """A long-lived process (this test session) paid for MLflow already; `pipeline` commands have
    not (test_the_stage_process_imports_no_mlflow shows they fork)."""
    import mlflow  # noqa: F401

    from pipeline.config import TrackingConfig
    from pipeline.tracking_process import TrackingProcess

    assert TrackingProcess.fork(TrackingConfig(process="auto")) is None
    assert TrackingProcess.fork(TrackingConfig(process=False)) is None
    assert TrackingProcess.fork(TrackingConfig(enabled=False, process=True)) is None
