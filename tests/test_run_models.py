"""A run's models (checkpoints and the final model) logged from one folder per run
(`pipeline.run_models`) hold what `mlflow.pyfunc.log_model` would have logged for the same file,
serve the same answers, and get their step's metrics even when those were sent before the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import logged_models

from pipeline import stages, store_rows, tracking
from pipeline.checkpoints import load_model
from pipeline.files import read_json
from pipeline.run_models import ModelFolder
from pipeline.stages import Layout, _load_split

NAME = "ckpt-models"
CHANGING = ("model_id", "model_uuid", "artifact_path", "utc_time_created")  # per logged model


def _client() -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def _train(make_params: Any, root: Path, **train: Any) -> dict[str, Any]:
    params = make_params(
        tracking={"enabled": True, "experiment": NAME, "log_checkpoints": True, "keep_checkpoints": 0},
        train={"epochs": 3, "checkpoint_every": 1, **train},
    )
    layout = Layout(root)
    stages.data(params, layout)
    stages.split(params, layout)
    stages.train(params, layout)
    return {"params": params, "layout": layout, "run_id": read_json(layout.run)["run_id"]}


def _folder(client: Any, model: Any, into: Path) -> dict[str, Any]:
    """relative path -> bytes, and MLmodel as a dict, of a logged model's artifacts."""
    import mlflow

    root = Path(mlflow.artifacts.download_artifacts(f"models:/{model.model_id}", dst_path=str(into)))
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    text = files.pop("MLmodel").decode()
    return {"files": files, "mlmodel": yaml.safe_load(text), "mlmodel_text": text}


def _names_logged_by_pyfunc(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the models MLflow's `pyfunc.log_model` logs from now on."""
    import mlflow.pyfunc

    names: list[str] = []
    original = mlflow.pyfunc.log_model

    def counted(*args: Any, **kwargs: Any) -> Any:
        names.append(kwargs.get("name", "model"))
        return original(*args, **kwargs)

    monkeypatch.setattr(mlflow.pyfunc, "log_model", counted)
    return names


@pytest.mark.parametrize("path", ["rows", "client"])
@pytest.mark.parametrize("name", ["checkpoint-000002", "model"])
def test_a_run_model_holds_what_pyfunc_log_model_logs_for_its_file(
    workdir, make_params, tmp_path, monkeypatch, path, name
):
    """A checkpoint or the final model, written as rows into the local store
    (`store_rows.create_model`) or, where that is not possible, by MLflow's client calls: either
    way what `pyfunc.log_model` logs for its file with the run's input example."""
    import mlflow

    resolved = []  # the context tags, resolved once a run where the run is started as rows
    if path == "client":
        monkeypatch.setattr(store_rows, "sql_store", lambda: None)
    else:  # its experiment made ahead: the run is started as rows and its models use what it wrote
        uri = tracking.tracking_uri()
        tracking._experiment_id(tracking.open_store(uri), NAME, uri)
        context_tags = store_rows.context_tags
        monkeypatch.setattr(store_rows, "context_tags", lambda: resolved.append(1) or context_tags())
    trained = _train(make_params, workdir)
    assert resolved == ([1] if path == "rows" else [])
    run_id, layout = trained["run_id"], trained["layout"]
    client = _client()
    ours = {m.name: m for m in logged_models(client, run_id)}[name]
    step = 2 if name.startswith("checkpoint") else 3
    path = layout.checkpoints / "epoch_000002.pt" if step == 2 else layout.model
    _, record = load_model(path)
    tags = {k: v for k, v in ours.tags.items() if k.startswith("checkpoint_")} or None
    example = _load_split(layout, ("train",))[1]["train"].features[:3]
    with mlflow.start_run(run_id=run_id), tracking._pyfunc_arguments(path, record, example) as arguments:
        reference = mlflow.pyfunc.log_model(name=name, step=step, tags=tags, **arguments)  # MLflow's way
    theirs = client.get_logged_model(reference.model_id)

    # the logged model: same name, tags (MLflow's context tags too), params, state, run and step
    assert theirs.model_id != ours.model_id
    for field in ("name", "params", "status", "source_run_id", "experiment_id", "model_type"):
        assert getattr(ours, field) == getattr(theirs, field), field
    registered = "mlflow.modelVersions"  # the final model's registration, after its logging
    assert {k: v for k, v in ours.tags.items() if k != registered} == theirs.tags
    assert str(ours.status) in ("READY", "LoggedModelStatus.READY")
    assert len(ours.params) > 50, "the run's params, copied into the model as Model.log does"
    steps = {o.model_id: o.step for o in client.get_run(run_id).outputs.model_outputs}
    assert steps[ours.model_id] == steps[theirs.model_id] == step
    linked = [
        sorted((m.key, m.value, m.step, m.timestamp) for m in model.metrics or []) for model in (ours, theirs)
    ]
    assert linked[0] == linked[1] and {k for k, *_ in linked[0]} >= {"train_loss", "val_loss"}, linked
    assert ours.creation_timestamp <= ours.last_updated_timestamp
    assert ours.artifact_location.endswith(f"/models/{ours.model_id}/artifacts")

    # its artifacts: the same files, byte for byte; MLmodel the same but for its own ids and time
    mine = _folder(client, ours, tmp_path / "ours")
    reference_folder = _folder(client, theirs, tmp_path / "ref")
    assert mine["files"] == reference_folder["files"]
    assert mine["files"][f"artifacts/{path.name}"] == path.read_bytes()
    assert "input_example.json" in mine["files"] and "saved_input_example_info" in mine["mlmodel"]
    assert {k: v for k, v in mine["mlmodel"].items() if k not in CHANGING} == {
        k: v for k, v in reference_folder["mlmodel"].items() if k not in CHANGING
    }
    assert mine["mlmodel"]["model_id"] == mine["mlmodel"]["model_uuid"] == ours.model_id
    assert mine["mlmodel"]["artifact_path"] == ours.artifact_location
    assert mine["mlmodel"]["utc_time_created"] != reference_folder["mlmodel"]["utc_time_created"]
    for written in (mine, reference_folder):  # and written as `Model.save` writes it
        assert written["mlmodel_text"] == yaml.safe_dump(written["mlmodel"], default_flow_style=False)

    # and it serves the same answers as the checkpoint file
    rows = np.random.default_rng(0).normal(size=(5, record["n_inputs"]))
    frame = pd.DataFrame(rows, columns=record["feature_names"])
    served = mlflow.pyfunc.load_model(f"models:/{ours.model_id}").predict(frame)
    expected = mlflow.pyfunc.load_model(f"models:/{theirs.model_id}").predict(frame)
    assert served.equals(expected)


def test_each_checkpoint_model_carries_its_own_weights(workdir, make_params, tmp_path, monkeypatch):
    through_mlflow = _names_logged_by_pyfunc(monkeypatch)
    trained = _train(make_params, workdir)
    assert through_mlflow == [], "every model of the run is logged from the run's model folder"
    client = _client()
    models = {m.name: m for m in logged_models(client, trained["run_id"])}
    assert {"checkpoint-000001", "checkpoint-000002", "checkpoint-000003", "model"} == set(models)
    layout = trained["layout"]
    files = {f"checkpoint-{e:06d}": layout.checkpoints / f"epoch_{e:06d}.pt" for e in (1, 2, 3)}
    for name, file in {**files, "model": layout.model}.items():
        folder = _folder(client, models[name], tmp_path / name)
        weights = [k for k in folder["files"] if k.startswith("artifacts/")]
        assert weights == [f"artifacts/{file.name}"], weights
        assert folder["files"][weights[0]] == file.read_bytes()
        entry = folder["mlmodel"]["flavors"]["python_function"]["artifacts"]["model"]
        assert entry == {"path": f"artifacts/{file.name}", "uri": str(file)}


def test_run_models_go_to_a_local_store_as_rows(workdir, make_params, monkeypatch):
    """In a database store each model of the run is two short transactions of our own
    (`store_rows`), not MLflow's five calls, and its folder is written in place."""
    import mlflow

    calls: list[str] = []
    for name in ("create_logged_model", "log_outputs", "finalize_logged_model"):
        original = getattr(mlflow.MlflowClient, name)

        def counted(
            self: Any, *args: Any, _name: str = name, _original: Any = original, **kwargs: Any
        ) -> Any:
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(mlflow.MlflowClient, name, counted)
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    def copied(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append("log_artifacts")  # a folder written elsewhere, then copied into the store

    monkeypatch.setattr(LocalArtifactRepository, "log_artifacts", copied)
    trained = _train(make_params, workdir)
    assert calls == []
    models = logged_models(_client(), trained["run_id"])
    assert len(models) == 4 and {str(m.status) for m in models} <= {"READY", "LoggedModelStatus.READY"}


def test_metrics_sent_before_their_checkpoint_model_are_linked_to_it(workdir, make_params, monkeypatch):
    """A long run sends its buffered metrics every FLUSH_SECONDS, which can fall between an
    epoch's metrics and its checkpoint: the model still gets them, as Model.log would link them."""
    monkeypatch.setattr(tracking, "FLUSH_SECONDS", -1.0)  # every epoch's metrics go out at once
    trained = _train(make_params, workdir)
    client = _client()
    models = {m.name: m for m in logged_models(client, trained["run_id"])}
    for epoch in (1, 2, 3):
        linked = models[f"checkpoint-{epoch:06d}"].metrics or []
        assert {m.key for m in linked} >= {"train_loss", "val_loss"}, (epoch, linked)
        assert {m.step for m in linked} == {epoch}
    history = client.get_metric_history(trained["run_id"], "val_loss")
    assert sorted(m.step for m in history) == [1, 2, 3], "each epoch once in the run's history"


def test_a_failed_write_leaves_the_model_failed_and_says_so(workdir, make_params, monkeypatch):
    original = ModelFolder.write

    def refuse(self: Any, root: Path, *args: Any) -> None:
        original(self, root, *args)  # into the model's artifact folder (a local store), then:
        raise OSError("disk full")

    monkeypatch.setattr(ModelFolder, "write", refuse)
    with pytest.raises(OSError, match="disk full"):
        _train(make_params, workdir)
    client = _client()
    run = client.search_runs([client.get_experiment_by_name(NAME).experiment_id])[0]
    failed = [m for m in logged_models(client, run.info.run_id) if m.name.startswith("checkpoint-")]
    assert [str(m.status) for m in failed] in (["FAILED"], ["LoggedModelStatus.FAILED"]), failed
    assert run.info.status == "FAILED"


def test_an_unexpected_model_folder_leaves_checkpoints_to_mlflow(workdir, make_params, monkeypatch):
    """If a future MLflow lays the folder out otherwise, checkpoints take `pyfunc.log_model`."""
    tried: list[Path] = []
    monkeypatch.setattr(
        ModelFolder, "saved", classmethod(lambda cls, model_file, save: tried.append(model_file))
    )
    calls = _names_logged_by_pyfunc(monkeypatch)
    trained = _train(make_params, workdir)
    assert calls == ["checkpoint-000001", "checkpoint-000002", "checkpoint-000003", "model"]
    assert len(tried) == 1, "the run's folder is tried once, not again for every model"
    names = {m.name for m in logged_models(_client(), trained["run_id"])}
    assert names == {"checkpoint-000001", "checkpoint-000002", "checkpoint-000003", "model"}


def test_mlmodel_is_written_as_mlflow_wrote_it_or_left_to_mlflow(tmp_path, monkeypatch):
    """MLmodel's text is made from blocks by a YAML dumper that is checked, once per folder,
    to write what MLflow wrote; with none that does, the run's models take MLflow's way."""
    import yaml

    from pipeline import run_models

    class Narrow(yaml.SafeDumper):  # another writer: folds long strings at 20 columns
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "width": 20})

    model_file = tmp_path / "epoch_000001.pt"
    model_file.write_bytes(b"weights")
    fields = {
        "flavors": {
            "python_function": {
                "artifacts": {"model": {"path": "artifacts/epoch_000001.pt", "uri": str(model_file)}}
            }
        },
        "model_size_bytes": 100,
        "signature": {"inputs": '[{"type": "double", "name": "a long column name"}]' * 20},
        "utc_time_created": "2026-11-23 08:00:00.000000",
    }

    def save(root: Path) -> None:  # as pyfunc.save_model writes it: Model.save's yaml.safe_dump
        (root / "artifacts").mkdir(parents=True)
        (root / "artifacts" / model_file.name).write_bytes(b"weights")
        (root / "MLmodel").write_text(yaml.safe_dump(fields, default_flow_style=False))

    monkeypatch.setattr(run_models, "_dumpers", lambda: [Narrow, yaml.SafeDumper])
    folder = ModelFolder.saved(model_file, save)
    assert folder is not None and folder.dumper is yaml.SafeDumper
    folder.write(tmp_path / "out", model_file, "m-1", "file:///store/m-1/artifacts", "run-1")
    written = yaml.safe_load((tmp_path / "out" / "MLmodel").read_text())
    assert written == {
        **fields,
        "model_id": "m-1",
        "model_uuid": "m-1",
        "run_id": "run-1",
        "artifact_path": "file:///store/m-1/artifacts",
        "utc_time_created": written["utc_time_created"],
    }
    assert written["utc_time_created"] != fields["utc_time_created"]
    assert (tmp_path / "out" / "MLmodel").read_text() == yaml.safe_dump(written, default_flow_style=False)

    monkeypatch.setattr(run_models, "_dumpers", lambda: [Narrow])
    assert ModelFolder.saved(model_file, save) is None
