"""A run's start, params, metric rows, tags and end, written to MLflow's database store in one transaction.

MLflow's client sends each of these through its store's ORM: one session per table per call and
an object per row, 80 % of a flush's time (S0 small: ~85 ms of tracking outside model logging,
~35 ms this way). `write` puts the same rows into the same tables of MLflow's own SQLAlchemy store
in one transaction, as multi-row INSERTs, after MLflow's own validation and with MLflow's own
`latest_metrics` update. Anything else takes MLflow's client calls, which the caller makes when
`write` answers False: a store that is not a database (a tracking server), an MLflow whose
store lacks the parts used here, a row the run has already, or any error inside the transaction
(rolled back first). `tests/test_tracking_rows.py` compares the run this leaves with the run the
client's calls leave.

`create_run` does the same for a new run of an existing experiment: its row, the context tags
`mlflow.start_run` resolves, its tags and params in one transaction, then MLflow's stack of active
runs as `mlflow.start_run` leaves it (`test_a_run_started_as_rows_is_the_run_mlflow_starts`).
`create_model` and `finish_model` do the same for a logged model (a run's checkpoint or final
model, `run_models`): its row, params, tags, its link to the run and to metric rows already
sent, then its status, each in one transaction where the client's calls take five ORM sessions
(`tests/test_run_models.py`, and `tests/test_tracking_server.py` for the client's way).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
    from mlflow.entities import Param, RunStatus, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels import models as db
    from mlflow.tracking.fluent import get_active_model_id
    from mlflow.utils.time import get_current_time_millis
    from sqlalchemy import insert

    metrics, param_list, tag_list = validated(
        metrics,
        [Param(k, v) for k, v in (params or {}).items()],
        [RunTag(k, v) for k, v in (tags or {}).items()],
    )
    if any(tag.key == "mlflow.runName" for tag in tag_list):  # MLflow renames the run too
        return False
    active_model = get_active_model_id()  # what the client gives rows without a model
    metric_rows, model_rows, newest, seen = [], [], {}, set()
    for m in metrics:
        value, nan = _stored(m.value)
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
        model_rows += _model_metric_rows(m, value, models, experiment_id, run_id)
    try:
        with _active_run_session(store, run_id) as (session, run):
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


def validated(metrics: Sequence[Any], params: list[Any], tags: list[Any]) -> tuple[Any, list[Any], list[Any]]:
    """MLflow's checks of a batch (`_validate_batch_log_data`): the same rows back, the same first
    error. Where every metric is a float at an int step and timestamp (what `Tracker.log_metrics`
    sends), only the name can fail, so each name is checked once, at its first row (a third of a
    flush was MLflow checking the same few names once per row)."""
    from mlflow.utils.validation import _validate_batch_log_data, _validate_metric

    plain = all(
        type(m.key) is str and type(m.value) is float and type(m.step) is int
        and type(m.timestamp) is int and m.timestamp >= 0
        for m in metrics
    )
    if not plain:
        return _validate_batch_log_data(metrics, params, tags)
    first: dict[str, int] = {}
    for index, m in enumerate(metrics):
        first.setdefault(m.key, index)
    for index in first.values():  # in row order: the first bad name raises, as row by row
        m = metrics[index]
        _validate_metric(m.key, m.value, m.timestamp, m.step, path=f"metrics[{index}]")
    return (metrics, *_validate_batch_log_data([], params, tags)[1:])


def create_run(
    experiment_name: str, run_name: str | None, tags: dict[str, str], params: dict[str, str]
) -> tuple[Any, dict[str, str]] | None:
    """A new run of the existing, active experiment `experiment_name`, RUNNING, with `tags` over
    the context tags `mlflow.start_run` resolves (`context_tags()`) and `params`, in one
    transaction, put on MLflow's stack of active runs as `mlflow.start_run` puts it; returns the
    active run and the context tags, or None: nothing written, `mlflow.start_run` does it (a new
    experiment, a resumed run, see the module). `mlflow.start_run` takes seven ORM sessions,
    reads the experiment twice and the run back."""
    store = sql_store()
    if store is None or not _starts_like_mlflow(store):
        return None
    context = context_tags()  # only here: where `mlflow.start_run` takes over, it resolves them
    import uuid

    from mlflow.entities import LifecycleStage, Param, Run, RunInputs, RunStatus, RunTag, SourceType, ViewType
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels import models as db
    from mlflow.tracking import fluent
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
    from mlflow.utils.name_utils import _generate_random_name
    from mlflow.utils.time import get_current_time_millis
    from mlflow.utils.uri import append_to_uri_path
    from mlflow.utils.validation import _validate_batch_log_data
    from sqlalchemy import insert

    name = run_name or _generate_random_name()
    run_id = uuid.uuid4().hex
    try:
        _, param_list, tag_list = _validate_batch_log_data(
            [],
            [Param(k, v) for k, v in params.items()],
            [RunTag(k, v) for k, v in {**context, **tags, MLFLOW_RUN_NAME: name}.items()],
        )
        with store.ManagedSessionMaker(read_only=False) as session:
            stages = LifecycleStage.view_type_to_stages(ViewType.ALL)
            experiment = (
                store._get_query(session, db.SqlExperiment)
                .filter(db.SqlExperiment.name == experiment_name)
                .filter(db.SqlExperiment.lifecycle_stage.in_(stages))
                .one_or_none()
            )
            if experiment is None or experiment.lifecycle_stage != LifecycleStage.ACTIVE:
                return None  # MLflow creates it, or says why it cannot hold a run
            location = experiment.artifact_location
            run = db.SqlRun(
                name=name,
                artifact_uri=append_to_uri_path(location, run_id, store.ARTIFACTS_FOLDER_NAME),
                run_uuid=run_id,
                experiment_id=experiment.experiment_id,
                source_type=SourceType.to_string(SourceType.UNKNOWN),
                source_name="",
                entry_point_name="",
                user_id=next((t.value for t in tag_list if t.key == MLFLOW_USER), "unknown"),
                status=RunStatus.to_string(RunStatus.RUNNING),
                start_time=get_current_time_millis(),
                end_time=None,
                deleted_time=None,
                source_version="",
                lifecycle_stage=LifecycleStage.ACTIVE,
            )
            columns = {c.key: getattr(run, c.key) for c in db.SqlRun.__table__.columns}
            session.execute(insert(db.SqlRun.__table__), [columns])
            for table, rows in (
                (db.SqlTag, [{"key": t.key, "value": t.value} for t in tag_list]),
                (db.SqlParam, [{"key": p.key, "value": p.value} for p in param_list]),
            ):
                if rows:
                    session.execute(insert(table.__table__), [{"run_uuid": run_id, **row} for row in rows])
    except MlflowException:  # rolled back: `mlflow.start_run` decides
        return None
    # the entity MLflow's store returns (its params come later there), not read back
    run.tags = [db.SqlTag(key=t.key, value=t.value) for t in tag_list]
    entity = run.to_mlflow_entity()
    active = fluent.ActiveRun(Run(entity.info, entity.data, RunInputs(dataset_inputs=[])))
    fluent._active_run_stack.get().append(active)
    return active, context


def context_tags() -> dict[str, str]:
    """The tags MLflow resolves from where it runs (user, source, git commit), as `start_run`
    and `Model.log` resolve them under the caller's own."""
    from mlflow.tracking.context.registry import resolve_tags

    return resolve_tags({})


def _starts_like_mlflow(store: Any) -> bool:
    """Whether `mlflow.start_run` would only create a run in `store` and stack it: no run active,
    none to resume, no system metrics, and MLflow's own `create_run` and run stack."""
    try:
        from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING, MLFLOW_RUN_ID
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking import fluent

        return (
            type(store).create_run is SqlAlchemyStore.create_run
            and not fluent._active_run_stack.get()
            and not MLFLOW_RUN_ID.get()
            and not MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get()
            and fluent._get_sgc_job_run_id_tag_key() is None
            and hasattr(fluent, "ActiveRun")
        )
    except Exception:  # an MLflow laid out otherwise
        return False


@contextmanager
def _active_run_session(store: Any, run_id: str) -> Iterator[tuple[Any, Any]]:
    """One transaction of `store` and the run's row, checked active as MLflow's store checks it
    before writing to a run (an MlflowException otherwise); committed on leaving, else rolled back."""
    with store.ManagedSessionMaker(read_only=False) as session:
        run = store._get_run(run_uuid=run_id, session=session)
        store._check_run_is_active(run)
        yield session, run


def _stored(value: float) -> tuple[float, bool]:
    """A metric's value as MLflow's store keeps it: NaN as 0.0 and a flag, infinities clamped."""
    nan = math.isnan(value)
    return (0.0 if nan else max(min(value, sys.float_info.max), -sys.float_info.max)), nan


def _model_metric_rows(
    metric: Any, value: float, model_ids: Sequence[str], experiment_id: str | int, run_id: str
) -> list[dict[str, Any]]:
    """`metric` (its `value` as stored) as a row of each model's metrics."""
    return [
        {
            "model_id": model_id,
            "metric_name": metric.key,
            "metric_timestamp_ms": metric.timestamp,
            "metric_step": metric.step,
            "metric_value": value,
            "experiment_id": int(experiment_id),
            "run_id": run_id,
            "dataset_uuid": None,
            "dataset_name": None,
            "dataset_digest": None,
        }
        for model_id in model_ids
    ]


def create_model(
    run_id: str,
    experiment: Any,
    name: str,
    step: int,
    tags: dict[str, str],
    params: dict[str, str],
    metrics: Sequence[Any] = (),
) -> Any:
    """A new logged model of `run_id` in `experiment` (MLflow's Experiment), PENDING, as the
    client's `create_logged_model` and `log_outputs` leave it, its step's `metrics` (already in
    the run) linked to it, in one transaction; returns (model_id, artifact_location), or None:
    nothing written, the client's calls do it (see the module)."""
    store = sql_store()
    if store is None:
        return None
    import uuid

    from mlflow.entities import LifecycleStage, LoggedModelStatus
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels import models as db
    from mlflow.utils.time import get_current_time_millis
    from mlflow.utils.uri import append_to_uri_path
    from mlflow.utils.validation import _validate_logged_model_name
    from sqlalchemy import insert

    _validate_logged_model_name(name)  # raises as the client would
    if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
        return None  # the client says why
    model_id = f"m-{uuid.uuid4().hex}"  # MLflow's form of a model id
    location = append_to_uri_path(
        experiment.artifact_location, store.MODELS_FOLDER_NAME, model_id, store.ARTIFACTS_FOLDER_NAME
    )
    now = get_current_time_millis()
    experiment_id = int(experiment.experiment_id)
    model = {
        "model_id": model_id,
        "experiment_id": experiment_id,
        "name": name,
        "artifact_location": location,
        "creation_timestamp_ms": now,
        "last_updated_timestamp_ms": now,
        "status": LoggedModelStatus.PENDING.to_int(),
        "lifecycle_stage": LifecycleStage.ACTIVE,
        "model_type": None,
        "source_run_id": run_id,
        "status_message": None,
    }
    output = {
        "input_uuid": uuid.uuid4().hex,
        "source_type": "RUN_OUTPUT",
        "source_id": run_id,
        "destination_type": "MODEL_OUTPUT",
        "destination_id": model_id,
        "step": step,
    }
    metric_rows = [
        row
        for m in metrics
        for row in _model_metric_rows(m, _stored(m.value)[0], [model_id], experiment_id, run_id)
    ]
    try:
        with _active_run_session(store, run_id) as (session, _):
            session.execute(insert(db.SqlLoggedModel.__table__), [model])
            ids = {"model_id": model_id, "experiment_id": experiment_id}
            for table, rows in (
                (db.SqlLoggedModelParam, [{"param_key": k, "param_value": v} for k, v in params.items()]),
                (db.SqlLoggedModelTag, [{"tag_key": k, "tag_value": v} for k, v in tags.items()]),
            ):
                if rows:
                    session.execute(insert(table.__table__), [{**ids, **row} for row in rows])
            session.execute(insert(db.SqlInput.__table__), [output])
            if metric_rows:
                session.execute(insert(db.SqlLoggedModelMetric.__table__), metric_rows)
    except MlflowException:  # rolled back: the client's calls decide
        return None
    return model_id, location


def finish_model(model_id: str, status: Any) -> bool:
    """A logged model made by `create_model` marked READY or FAILED (MLflow's LoggedModelStatus),
    as the client's `finalize_logged_model` does; False: not done here, the client's call does it."""
    store = sql_store()
    if store is None:
        return False
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels import models as db
    from mlflow.utils.time import get_current_time_millis
    from sqlalchemy import update

    table = db.SqlLoggedModel.__table__
    change = {"status": status.to_int(), "last_updated_timestamp_ms": get_current_time_millis()}
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            done = session.execute(update(table).where(table.c.model_id == model_id).values(**change))
            return done.rowcount == 1
    except MlflowException:
        return False


_STORE_PARTS = (
    "ManagedSessionMaker",
    "_get_run",
    "_check_run_is_active",
    "_update_latest_metrics_if_necessary",
    "MODELS_FOLDER_NAME",
    "ARTIFACTS_FOLDER_NAME",
)


_STORE_TABLES = (
    "SqlParam",
    "SqlMetric",
    "SqlTag",
    "SqlLoggedModel",
    "SqlLoggedModelParam",
    "SqlLoggedModelTag",
    "SqlLoggedModelMetric",
    "SqlInput",
    "SqlRun",
    "SqlExperiment",
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
        hasattr(db, model) for model in _STORE_TABLES
    )
    return store if isinstance(store, SqlAlchemyStore) and parts else None


def registered_model_exists(client: Any, name: str) -> bool | None:
    """Whether the registry holds the registered model `name` (None: not a database registry, ask
    MLflow). One indexed read of its row: `mlflow.register_model` finds out by failing to insert
    it and then reading it back with every version it has, longer with each version registered."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
        from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

        store = client._get_registry_client().store
        if not isinstance(store, SqlAlchemyStore) or not hasattr(store, "_get_registered_model"):
            return None
        with store.ManagedSessionMaker() as session:
            store._get_registered_model(session, name)
        return True
    except MlflowException as exc:
        return False if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST) else None
    except Exception:  # an MLflow laid out otherwise
        return None


def link_model_version(model_id: str, name: str, version: Any) -> bool:
    """The registered `version` of `name` added to its logged model's `mlflow.modelVersions` tag,
    read from the tag's row (`mlflow.register_model` reads the whole logged model twice for it,
    its params and metrics included, and the client's `set_logged_model_tags` once more); False:
    not a database store, the client's calls do it. A model gone: MLflow's error, as theirs."""
    store = sql_store()
    if store is None or not hasattr(store, "set_logged_model_tags"):
        return False
    from mlflow.entities import LoggedModelTag
    from mlflow.store.tracking.dbmodels import models as db
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    tag = getattr(db, "SqlLoggedModelTag", None)
    if tag is None:
        return False
    with store.ManagedSessionMaker() as session:
        held = (
            session.query(tag.tag_value)
            .filter(tag.model_id == model_id, tag.tag_key == MLFLOW_MODEL_VERSIONS)
            .scalar()
        )
    links = version_links(held, name, version)
    store.set_logged_model_tags(model_id, [LoggedModelTag(MLFLOW_MODEL_VERSIONS, links)])
    return True


def version_links(held: str | None, name: str, version: Any) -> str:
    """A logged model's `mlflow.modelVersions` tag (`held`, JSON) with one version more."""
    import json

    return json.dumps((json.loads(held) if held else []) + [{"name": name, "version": version}])


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
