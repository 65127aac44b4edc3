"""The tracker's own writes to a local store (`store_rows.write`: one transaction per flush,
the run's end with the last) leave the run exactly as MLflow's client calls do."""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline import store_rows, tracking
from pipeline.config import TrackingConfig
from pipeline.errors import PipelineError


def _no_start_run_if(direct: bool, monkeypatch: pytest.MonkeyPatch, experiment: str = "rows") -> None:
    """Direct: the experiment made ahead and `mlflow.start_run` an error (the rows must do); else
    no rows at all (`sql_store` None): MLflow's client calls."""
    import mlflow

    if not direct:
        monkeypatch.setattr(store_rows, "sql_store", lambda: None)
        return
    tracking.open_store(tracking.tracking_uri())
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment)

    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("mlflow.start_run called where the run is written as rows")

    monkeypatch.setattr(mlflow, "start_run", refused)


def _logged_run(monkeypatch: pytest.MonkeyPatch, direct: bool, status: str) -> dict[str, Any]:
    """A run as a training logs it: params, tags, metric curves with NaN and inf, models at two
    steps (two at the last), a mid-run flush, tags at the end; what MLflow shows of it."""
    import mlflow
    from mlflow.entities import LoggedModelOutput

    _no_start_run_if(direct, monkeypatch)
    clock = itertools.count(1_700_000_000_000)  # the same metric timestamps on both paths
    monkeypatch.setattr(
        tracking, "time", SimpleNamespace(time=lambda: next(clock) / 1000, monotonic=time.monotonic)
    )
    params = {"train": {"lr": 0.1, "epochs": 4, "betas": [0.9, 0.999]}, "model": {"hidden": [8]}}
    tracker = tracking.Tracker.start(TrackingConfig(experiment="rows"), params, {"device": "cpu"})
    client = mlflow.MlflowClient()
    names = {}
    for step in range(1, 5):
        tracker.log_metrics({"train_loss": 1.0 / step, "val_loss": float("nan") if step == 2 else 2.0}, step)
        tracker.log_metrics({"big": float("inf")}, step)
        if step == 2:
            tracker.flush()  # a long run's live curve: before the models of later steps
        if step >= 3:
            for name in ("checkpoint", "model")[: step - 2]:
                model = client.create_logged_model(tracker.experiment_id, name=f"{name}-{step}")
                client.log_outputs(tracker.run_id, [LoggedModelOutput(model.model_id, step)])
                tracker._links.setdefault(step, []).append(model.model_id)
                names[model.model_id] = model.name
    tracker.set_tags({"stop_reason": "epochs"})
    tracker.finish(status)
    run = client.get_run(tracker.run_id)
    database = sqlite3.connect(tracking.sqlite_file(tracking.tracking_uri()))
    rows = database.execute(
        "SELECT model_id, metric_name, metric_value, metric_step, metric_timestamp_ms, experiment_id"
        " FROM logged_model_metrics WHERE run_id = ?",
        (tracker.run_id,),
    )
    return {
        "status": run.info.status,
        "ended": run.info.end_time is not None,
        "active": mlflow.active_run() is not None,
        "params": run.data.params,
        "tags": {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"},
        "latest": {k: repr(v) for k, v in run.data.metrics.items()},
        "history": {
            key: sorted(
                (m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run.info.run_id, key)
            )
            for key in ("train_loss", "val_loss", "big")
        },
        "model_rows": sorted((names[m], *rest) for m, *rest in rows),
    }


def _same_both_ways(monkeypatch: pytest.MonkeyPatch, observe: Any, *args: Any) -> dict[str, Any]:
    """`observe(patched, direct, *args)` as rows and through MLflow's client alone, each with its
    own patches: the two must be equal; returns the rows' one."""
    seen = []
    for direct in (True, False):
        with monkeypatch.context() as patched:
            seen.append(observe(patched, direct, *args))
    assert seen[0] == seen[1]
    return seen[0]


@pytest.mark.parametrize("status", ["FINISHED", "FAILED"])
def test_direct_writes_leave_the_run_as_mlflows_client_calls_do(workdir: Path, monkeypatch, status):
    direct = _same_both_ways(monkeypatch, _logged_run, status)
    assert direct["status"] == status and direct["ended"] and not direct["active"]
    assert len(direct["model_rows"]) == 3 * 3  # step 3: one model, step 4: two; three metrics each


def test_a_row_the_run_has_already_goes_through_mlflows_client(workdir: Path):
    """A re-sent row (a retried flush) is no error: the transaction is undone and MLflow's
    client calls sort the duplicate out."""
    import mlflow

    tracker = tracking.Tracker.start(TrackingConfig(experiment="rows"), {}, {})
    tracker.log_metrics({"loss": 1.0}, 1)
    sent = list(tracker._pending)
    tracker.flush()
    tracker._pending = [*sent, *tracker._pending]
    tracker.log_metrics({"loss": 0.5}, 2)
    tracker.finish()
    history = mlflow.MlflowClient().get_metric_history(tracker.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 0.5)]
    assert mlflow.MlflowClient().get_run(tracker.run_id).info.status == "FINISHED"


def _started_run(monkeypatch: pytest.MonkeyPatch, direct: bool, name: str | None) -> dict[str, Any]:
    """A new run as `Tracker.start` leaves it, while it runs: its row in the store (ids and times
    aside), tags, params, inputs, and the run MLflow holds active."""
    import mlflow

    _no_start_run_if(direct, monkeypatch)
    params = {"train": {"lr": 0.1, "hidden": [8, 4]}, "note": "x" * 7000}  # cut to 6000
    tracker = tracking.Tracker.start(
        TrackingConfig(experiment="rows", run_name=name), params, {"device": "cpu"}
    )
    active = mlflow.active_run()
    run = mlflow.MlflowClient().get_run(tracker.run_id)
    database = sqlite3.connect(tracking.sqlite_file(tracking.tracking_uri()))
    database.row_factory = sqlite3.Row
    row = dict(database.execute("SELECT * FROM runs WHERE run_uuid = ?", (tracker.run_id,)).fetchone())
    tracker.finish()
    assert active is not None and active.info.run_id == tracker.run_id
    assert active.info.run_name == run.info.run_name == run.data.tags["mlflow.runName"] == row["name"]
    assert row["start_time"] > 0 and row["end_time"] is None
    assert row["artifact_uri"].endswith(f"/{tracker.run_id}/artifacts")
    for moving in ("run_uuid", "start_time", "artifact_uri", "name"):
        row.pop(moving)
    return {
        "row": row,
        "artifact_root": run.info.artifact_uri.replace(tracker.run_id, "<run>"),
        "name": run.info.run_name if name else bool(run.info.run_name),
        "tags": {k: v for k, v in run.data.tags.items() if name or k != "mlflow.runName"},
        "params": run.data.params,
        "inputs": run.inputs.dataset_inputs,
        "active_data": (
            dict(active.data.params),
            {k: v for k, v in active.data.tags.items() if name or k != "mlflow.runName"},
        ),
        "status_after": mlflow.MlflowClient().get_run(tracker.run_id).info.status,
        "active_after": mlflow.active_run(),
    }


@pytest.mark.parametrize("name", [None, "named-run"])
def test_a_run_started_as_rows_is_the_run_mlflow_starts(workdir: Path, monkeypatch, name):
    direct = _same_both_ways(monkeypatch, _started_run, name)
    assert direct["params"]["note"] == "x" * 6000 and direct["params"]["train.hidden"] == "[8, 4]"
    assert direct["tags"]["device"] == "cpu" and "mlflow.user" in direct["tags"]
    assert direct["row"]["status"] == "RUNNING" and direct["status_after"] == "FINISHED"
    assert direct["active_after"] is None


def test_a_new_or_deleted_experiment_takes_mlflows_way(workdir: Path):
    """No experiment yet: MLflow's start creates it; a deleted one: one line saying so."""
    import mlflow

    first = tracking.Tracker.start(TrackingConfig(experiment="fresh"), {"a": 1}, {})
    first.finish()
    assert mlflow.get_experiment_by_name("fresh").lifecycle_stage == "active"
    assert mlflow.MlflowClient().get_run(first.run_id).data.params == {"a": "1"}
    mlflow.delete_experiment(mlflow.get_experiment_by_name("fresh").experiment_id)
    with pytest.raises(PipelineError, match=r"^MLflow at sqlite:.*active") as raised:
        tracking.Tracker.start(TrackingConfig(experiment="fresh"), {"a": 1}, {})
    assert "\n" not in str(raised.value) and mlflow.active_run() is None


def test_where_mlflow_starts_the_run_the_context_is_resolved_by_mlflow_alone(workdir: Path, monkeypatch):
    """No store for rows (a server, say): `Tracker.start` leaves the context tags to
    `mlflow.start_run` and does not resolve them itself too."""
    resolved = []
    monkeypatch.setattr(store_rows, "sql_store", lambda: None)
    monkeypatch.setattr(store_rows, "context_tags", lambda: resolved.append(1) or {})
    tracker = tracking.Tracker.start(TrackingConfig(experiment="rows"), {"a": 1}, {})
    tracker.finish()
    assert resolved == [] and tracker.known is None


def _batches() -> list[tuple[str, list[Any], list[Any], list[Any]]]:
    import numpy as np
    from mlflow.entities import Metric, Param, RunTag

    good = [Metric(k, float(i) / 3, 1700000000000 + i, i) for i in range(40) for k in ("loss", "val/acc")]
    nan = [Metric("loss", float("nan"), 1, 0), Metric("loss", float("inf"), 1, 1)]
    params, tags = [Param("lr", "0.1")], [RunTag("t", "v")]
    bad_later = [*good[:5], Metric("bad name!", 1.0, 1, 5), Metric("also bad?", 1.0, 1, 6)]
    return [
        ("plain", good, params, tags),
        ("nan and inf", nan, [], []),
        ("empty", [], params, tags),
        ("a bad name after good rows", bad_later, [], []),
        ("a bad name first", [Metric("../up", 1.0, 1, 0), *good], [], []),
        ("a numpy value", [*good, Metric("loss", np.float64(0.5), 1, 3)], [], []),
        ("a bool value", [*good[:3], Metric("loss", True, 1, 3)], [], []),
        ("a negative timestamp", [*good[:3], Metric("loss", 0.5, -1, 3)], [], []),
        ("a float step", [Metric("loss", 0.5, 1, 2.0)], [], []),
        ("a bad param", good[:2], [Param("p?", "1")], []),
        ("a bad tag", good[:2], [], [RunTag("", "1")]),
    ]


@pytest.mark.parametrize("batch", _batches(), ids=lambda b: b[0])
def test_a_batch_is_checked_as_mlflow_checks_it(batch):
    """`validated` checks each metric name once where the rows are plain: the same rows back
    and the same first error as MLflow's row-by-row checks, for good and bad batches alike."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_batch_log_data

    _, metrics, params, tags = batch

    def outcome(check: Any) -> Any:
        try:
            rows, checked_params, checked_tags = check(list(metrics), list(params), list(tags))
        except MlflowException as exc:
            return "error", exc.message, exc.error_code
        return [(m.key, m.value, m.timestamp, m.step) for m in rows], checked_params, checked_tags

    ours, mlflows = outcome(store_rows.validated), outcome(_validate_batch_log_data)
    assert repr(ours) == repr(mlflows)  # repr: NaN rows compare equal
