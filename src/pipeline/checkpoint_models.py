"""Checkpoints logged as MLflow models at a fraction of `pyfunc.log_model`'s cost per checkpoint.

A tracked run logs one model per checkpoint. `mlflow.pyfunc.log_model` makes each from nothing:
it reads the run to copy its params into the new model, builds the model folder (MLmodel,
environment files, the served code; YAML through a pure-Python emitter), reads the run and every
metric's history to link the step's metrics, and uploads the folder: 60-70 ms, four to five
times per run in the tutorials' workloads. All checkpoints of a run share that folder but for
their weights file and their MLmodel's ids and time. So MLflow's own `pyfunc.save_model` builds
the folder once per run (from the run's first checkpoint), and each checkpoint is that folder
with its own weights and MLmodel, logged with the client calls `Model.log` makes, in its order:
create the logged model (the run's params, read once, and the context tags `Model.log` resolves),
link it to the run at its step, upload the folder (to the artifact store of the location it was
created with), mark it READY (FAILED if anything fails).
Metric rows of its step are linked by the Tracker, as MLflow's own linking would.
`tests/test_checkpoint_models.py` holds the result against a `pyfunc.log_model` of the same file.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

FLAVOR = "python_function"
MLMODEL = "MLmodel"


class ModelFolder:
    """The model folder `pyfunc.save_model` made for one checkpoint of a run, held in memory:
    every file but MLmodel and the weights, the MLmodel, the weights' place in it."""

    def __init__(self, files: dict[str, bytes], mlmodel: Any, weights: str, weights_size: int) -> None:
        self.files, self.mlmodel, self.weights, self.weights_size = files, mlmodel, weights, weights_size

    @classmethod
    def saved(cls, model_file: Path, save: Any) -> ModelFolder | None:
        """`save(path)` writes the folder (MLflow's `pyfunc.save_model`); None when the folder is
        not laid out as this module expects (a future MLflow): then checkpoints take MLflow's way."""
        from mlflow.models import Model

        with tempfile.TemporaryDirectory(prefix="checkpoint-model-") as tmp:
            root = Path(tmp) / "model"
            save(root)
            mlmodel = Model.load(str(root / MLMODEL))
            entry = mlmodel.flavors.get(FLAVOR, {}).get("artifacts", {}).get("model", {})
            weights = entry.get("path")
            if (
                not isinstance(weights, str)
                or entry.get("uri") != str(model_file)
                or not (root / weights).is_file()
                or mlmodel.model_size_bytes is None
            ):
                return None
            files = {
                path.relative_to(root).as_posix(): path.read_bytes()
                for path in sorted(root.rglob("*"))
                if path.is_file() and path.relative_to(root).as_posix() not in (MLMODEL, weights)
            }
            return cls(files, mlmodel, weights, (root / weights).stat().st_size)

    def write(self, root: Path, model_file: Path, logged: Any, run_id: str) -> None:
        """The folder for `model_file`, logged as `logged` (MLflow's LoggedModel) in `run_id`."""
        for relative, data in self.files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        weights = (PurePosixPath(self.weights).parent / model_file.name).as_posix()
        (root / weights).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_file, root / weights)
        mlmodel = copy.deepcopy(self.mlmodel)
        mlmodel.flavors[FLAVOR]["artifacts"]["model"] = {"path": weights, "uri": str(model_file)}
        mlmodel.model_size_bytes += model_file.stat().st_size - self.weights_size
        mlmodel.run_id, mlmodel.artifact_path = run_id, logged.artifact_location
        mlmodel.model_uuid = mlmodel.model_id = logged.model_id
        mlmodel.utc_time_created = str(datetime.now(timezone.utc).replace(tzinfo=None))
        mlmodel.save(str(root / MLMODEL))


class CheckpointModels:
    """One run's checkpoints as logged models (see the module's doc)."""

    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id
        self.folder: ModelFolder | None = None
        self.signature: Any = None
        self.params: dict[str, str] = {}

    def ready(self, model_file: Path, signature: Any, save: Any) -> bool:
        """The run's folder, made on the first checkpoint (again if the signature changes)."""
        if self.folder is None or signature != self.signature:
            self.folder = ModelFolder.saved(model_file, save)
            self.signature = signature
            self.params = {k: str(v) for k, v in self.client.get_run(self.run_id).data.params.items()}
        return self.folder is not None

    def log(self, model_file: Path, name: str, step: int, tags: dict[str, str]) -> str:
        """Log `model_file` as a model of the run at `step`; returns the model's id."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.tracking.context.registry import resolve_tags

        assert self.folder is not None, "ready() first"
        logged = self.client.create_logged_model(
            self.experiment_id,
            name=name,
            source_run_id=self.run_id,
            tags=resolve_tags({k: str(v) for k, v in tags.items()}),
            params=self.params,
        )
        try:
            self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=step)])
            with tempfile.TemporaryDirectory(prefix="checkpoint-model-") as tmp:
                self.folder.write(Path(tmp), model_file, logged, self.run_id)
                self._upload(logged, tmp)
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return logged.model_id

    def _upload(self, logged: Any, folder: str) -> None:
        """Into the model's artifact store, as `log_model_artifacts` does without first reading
        the model back from the store for the artifact location it already has (a fifth of each
        model's time); Databricks URIs, which need MLflow's profile handling, take that call."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = str(self.client.tracking_uri)
        if uri.startswith("databricks"):
            self.client.log_model_artifacts(logged.model_id, folder)
            return
        get_artifact_repository(logged.artifact_location, tracking_uri=uri).log_artifacts(folder)
