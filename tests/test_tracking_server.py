"""Training against a real `mlflow server` process: no database at hand, so the run's rows and
every logged model go through MLflow's client (`store_rows` answers None) and the models'
folders are uploaded through the server's artifact proxy; the run and its models hold what a
local store holds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import free_port, logged_models, stop_group

from pipeline import stages, store_rows
from pipeline.checkpoints import load_model
from pipeline.files import read_json
from pipeline.stages import Layout

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
START_TIMEOUT = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` with its own SQLite store and proxied artifacts; its URI."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = folder / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [BIN / "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield uri
    finally:
        stop_group(process)


def test_a_training_tracked_by_a_server_logs_its_run_and_models(
    server, workdir, make_params, monkeypatch, tmp_path
):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    assert store_rows.sql_store() is None, "a server: MLflow's client calls"
    refused = "models are logged from the run's model folder (run_models), not pyfunc.log_model"
    monkeypatch.setattr(mlflow.pyfunc, "log_model", lambda *args, **kwargs: pytest.fail(refused))
    params = make_params(
        tracking={"enabled": True, "experiment": "served", "log_checkpoints": True, "keep_checkpoints": 0},
        train={"epochs": 3, "checkpoint_every": 1},
    )
    layout = Layout(workdir)
    stages.data(params, layout)
    stages.split(params, layout)
    result = stages.train(params, layout)
    run_json = read_json(layout.run)
    client = mlflow.MlflowClient(tracking_uri=server)
    run = client.get_run(run_json["run_id"])

    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert run.data.params["train.epochs"] == "3" and run.data.tags["stop_reason"] == "epochs"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert history[-1].value == pytest.approx(result["train_loss"])

    models = {m.name: m for m in logged_models(client, run.info.run_id)}
    assert set(models) == {"checkpoint-000001", "checkpoint-000002", "checkpoint-000003", "model"}
    files = {f"checkpoint-{e:06d}": layout.checkpoints / f"epoch_{e:06d}.pt" for e in (1, 2, 3)}
    files["model"] = layout.model
    _, record = load_model(layout.model)
    frame = pd.DataFrame(
        np.random.default_rng(0).normal(size=(4, record["n_inputs"])), columns=record["feature_names"]
    )
    for name, file in files.items():
        model = models[name]
        assert str(model.status) in ("READY", "LoggedModelStatus.READY"), name
        assert len(model.params) > 50 and {m.key for m in model.metrics or []} >= {"train_loss"}, name
        folder = Path(
            mlflow.artifacts.download_artifacts(f"models:/{model.model_id}", dst_path=str(tmp_path / name))
        )
        assert (folder / "artifacts" / file.name).read_bytes() == file.read_bytes(), name
        assert (folder / "input_example.json").is_file(), name
    served = mlflow.pyfunc.load_model(run_json["model_uri"]).predict(frame)
    assert len(served) == 4 and run_json["model_uri"] == f"models:/{models['model'].model_id}"

    version = client.get_model_version(run_json["registered_model"], run_json["model_version"])
    assert version.source == run_json["model_uri"] and version.run_id == run.info.run_id
