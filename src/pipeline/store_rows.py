"""A run's params, metric rows, tags and end, written to MLflow's database store in one transaction.

MLflow's client sends each of these through its store's ORM: one session per table per call and
an object per row, 80 % of a flush's time (S0 small: ~85 ms of tracking outside model logging,
~35 ms this way). `write` puts the same rows into the same tables of MLflow's own SQLAlchemy store
in one transaction, as multi-row INSERTs, after MLflow's own validation and with MLflow's own
`latest_metrics` update. Anything else takes MLflow's client calls, which the caller makes when
`write` answers False: a store that is not a database (a tracking server), an MLflow whose
store lacks the parts used here, a row the run has already, or any error inside the transaction
(rolled back first). `tests/test_tracking_rows.py` compares the run this leaves with the run the
client's calls leave.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def write(
    run_id: str | None,
    experiment_id: str | None,
    metrics: Sequence[Any] = (),
    links: dict[int, list[str]] | None = None,
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    status: str | None = None,
) -> bool:
    """Params, metric rows (each also for every model logged at its step in `links`), tags and,
    with `status`, the run's end, in one transaction; False: nothing written (see the module)."""
    store = sql_store()
    if store is None or not run_id or experiment_id is None:
        return False
    import math

    from mlflow.entities import Param, RunStatus, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels import models as db
    from mlflow.tracking.fluent import get_active_model_id
    from mlflow.utils.time import get_current_time_millis
    from mlflow.utils.validation import _validate_batch_log_data
    from sqlalchemy import insert

    metrics, param_list, tag_list = _validate_batch_log_data(
        metrics,
        [Param(k, v) for k, v in (params or {}).items()],
        [RunTag(k, v) for k, v in (tags or {}).items()],
    )
    if any(tag.key == "mlflow.runName" for tag in tag_list):  # MLflow renames the run too
        return False
    active_model = get_active_model_id()  # what the client gives rows without a model
    metric_rows, model_rows, newest, seen = [], [], {}, set()
    for m in metrics:
        nan = math.isnan(m.value)
        value = 0.0 if nan else max(min(m.value, sys.float_info.max), -sys.float_info.max)  # as MLflow's
        if (m.key, m.timestamp, m.step, value, nan) in seen:
            continue
        seen.add((m.key, m.timestamp, m.step, value, nan))
        row = {
            "run_uuid": run_id,
            "key": m.key,
            "value": value,
            "timestamp": m.timestamp,
            "step": m.step,
            "is_nan": nan,
        }
        metric_rows.append(row)
        held = newest.get(m.key)
        if held is None or (m.step, m.timestamp, value) > (held["step"], held["timestamp"], held["value"]):
            newest[m.key] = row
        models = (links or {}).get(m.step) or ([active_model] if active_model else [])
        model_rows += [
            {
                "model_id": model_id,
                "metric_name": m.key,
                "metric_timestamp_ms": m.timestamp,
                "metric_step": m.step,
                "metric_value": value,
                "experiment_id": int(experiment_id),
                "run_id": run_id,
                "dataset_uuid": None,
                "dataset_name": None,
                "dataset_digest": None,
            }
            for model_id in models
        ]
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            run = store._get_run(run_uuid=run_id, session=session)
            store._check_run_is_active(run)
            if param_list:
                session.execute(
                    insert(db.SqlParam.__table__),
                    [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in param_list],
                )
            if metric_rows:
                session.execute(insert(db.SqlMetric.__table__), metric_rows)
                store._update_latest_metrics_if_necessary(
                    [db.SqlMetric(**row) for row in newest.values()], session
                )
            if model_rows:
                session.execute(insert(db.SqlLoggedModelMetric.__table__), model_rows)
            for tag in tag_list:
                session.merge(db.SqlTag(run_uuid=run_id, key=tag.key, value=tag.value))
            if status is not None:
                run.status = RunStatus.to_string(RunStatus.from_string(status))
                run.end_time = get_current_time_millis()
    except MlflowException:  # rolled back, nothing written: a row the run has already (a re-sent
        return False  # flush), a run no longer active, a schema MLflow changed: its client decides
    return True


_STORE_PARTS = (
    "ManagedSessionMaker",
    "_get_run",
    "_check_run_is_active",
    "_update_latest_metrics_if_necessary",
)


def sql_store() -> Any:
    """MLflow's SQLAlchemy store behind the tracking URI, if it has the parts `write` uses."""
    try:
        from mlflow.store.tracking.dbmodels import models as db
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service.utils import _get_store

        from pipeline.tracking import tracking_uri

        store = _get_store(tracking_uri())
    except Exception:
        return None
    parts = all(hasattr(store, name) for name in _STORE_PARTS) and all(
        hasattr(db, model) for model in ("SqlParam", "SqlMetric", "SqlLoggedModelMetric", "SqlTag")
    )
    return store if isinstance(store, SqlAlchemyStore) and parts else None


def leave_active_run(run_id: str | None) -> bool:
    """What `mlflow.end_run` does besides ending the run in the store (done by `write`):
    the run off MLflow's stack of active runs. False if MLflow keeps that stack differently (or
    the run is not on top, or its system metrics are being logged): then `end_run` does it."""
    try:
        from mlflow.environment_variables import MLFLOW_RUN_ID
        from mlflow.tracking import fluent

        stack = fluent._active_run_stack.get()
        if not stack or stack[-1].info.run_id != run_id or run_id in fluent.run_id_to_system_metrics_monitor:
            return False
        MLFLOW_RUN_ID.unset()
        stack.pop()
        fluent._last_active_run_id.set(run_id)
    except Exception:
        return False
    return True
