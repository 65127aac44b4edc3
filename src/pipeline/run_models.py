"""A run's models (its checkpoints and its final model) logged at a fraction of `pyfunc.log_model`'s cost.

A tracked run logs one model per checkpoint and its final model. `mlflow.pyfunc.log_model` makes
each from nothing: it reads the run to copy its params into the new model, builds the model
folder (MLmodel, environment files, the served code, the input example; YAML through a
pure-Python emitter), reads the run and every metric's history to link the step's metrics, and
uploads the folder: 60-100 ms, five to six times per run in the tutorials' workloads. All models
of a run share that folder but for their weights file and their MLmodel's ids and time. So
MLflow's own `pyfunc.save_model` builds the folder once per run (from the run's first model), and
each model is that folder with its own weights and MLmodel, logged in `Model.log`'s order: create
the logged model (the run's params, read once, and the context tags `Model.log` resolves,
resolved once) and link it to the run at its step, put the folder in the artifact store of the
location it was created with (written in place in a local one, else uploaded), mark it READY
(FAILED if anything fails). In a database store
the two writes are one short transaction each (`store_rows.create_model` / `finish_model`, about
5 ms where the client's four calls took 30); elsewhere they are the client's calls.
Metric rows of its step go with the Tracker's next flush, or, already sent, with the model.
`tests/test_run_models.py` holds the result, both ways, against a `pyfunc.log_model` of the same
file.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline import store_rows

FLAVOR = "python_function"
MLMODEL = "MLmodel"


@dataclass(frozen=True)
class LoggedModel:
    """A model logged here: what the stages need of MLflow's ModelInfo."""

    model_id: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"


class ModelFolder:
    """The model folder `pyfunc.save_model` made for one model file of a run, held in memory:
    every file but MLmodel and the weights, MLmodel's fields, the weights' place in it.

    MLmodel is YAML that MLflow writes through PyYAML's pure-Python emitter, and most of it is
    the signature: MNIST's 784 columns take 40 ms to write, per model. It is a mapping with
    sorted keys, each written at the left margin as a block of its own; the blocks of the fields
    that are the same for every model of the run are made once, here, the rest per model, by
    libyaml's emitter where that writes, checked once per folder, exactly the text MLflow wrote
    (else PyYAML's; else the models take MLflow's way). Per MNIST model: 54 -> 3 ms."""

    def __init__(
        self,
        files: dict[str, bytes],
        fields: dict[str, Any],
        blocks: dict[str, str],
        dumper: Any,
        weights: str,
        weights_size: int,
    ) -> None:
        self.files, self.fields, self.blocks, self.dumper = files, fields, blocks, dumper
        self.weights, self.weights_size = weights, weights_size

    @classmethod
    def saved(cls, model_file: Path, save: Any) -> ModelFolder | None:
        """`save(path)` writes the folder (MLflow's `pyfunc.save_model`); None when the folder is
        not laid out as this module expects (a future MLflow): then models take MLflow's way."""
        import yaml

        with tempfile.TemporaryDirectory(prefix="run-model-") as tmp:
            root = Path(tmp) / "model"
            save(root)
            text = (root / MLMODEL).read_text()
            fields = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            entry = fields.get("flavors", {}).get(FLAVOR, {}).get("artifacts", {}).get("model", {})
            weights = entry.get("path")
            if (
                not isinstance(weights, str)
                or entry.get("uri") != str(model_file)
                or not (root / weights).is_file()
                or not isinstance(fields.get("model_size_bytes"), int)
            ):
                return None
            files = {
                path.relative_to(root).as_posix(): path.read_bytes()
                for path in sorted(root.rglob("*"))
                if path.is_file() and path.relative_to(root).as_posix() not in (MLMODEL, weights)
            }
            for dumper in _dumpers():  # libyaml's where it writes what MLflow wrote, else PyYAML's
                blocks = {
                    key: _block(key, value, dumper) for key, value in fields.items() if key not in PER_MODEL
                }
                if _mlmodel_text(fields, blocks, dumper) == text:
                    return cls(files, fields, blocks, dumper, weights, (root / weights).stat().st_size)
            return None  # not written as this module writes it

    def write(self, root: Path, model_file: Path, model_id: str, location: str, run_id: str) -> None:
        """The folder for `model_file`, logged as model `model_id` at `location` in `run_id`: what
        `Model.log` sets in MLmodel (ids, run, location, time), and the file's weights and size."""
        for relative, data in self.files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        weights = (PurePosixPath(self.weights).parent / model_file.name).as_posix()
        (root / weights).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_file, root / weights)
        flavors = copy.deepcopy(self.fields["flavors"])
        flavors[FLAVOR]["artifacts"]["model"] = {"path": weights, "uri": str(model_file)}
        fields = {
            **self.fields,
            "flavors": flavors,
            "model_size_bytes": self.fields["model_size_bytes"]
            + model_file.stat().st_size
            - self.weights_size,
            "run_id": run_id,
            "artifact_path": location,
            "model_uuid": model_id,
            "model_id": model_id,
            "utc_time_created": str(datetime.now(timezone.utc).replace(tzinfo=None)),
        }
        (root / MLMODEL).write_text(_mlmodel_text(fields, self.blocks, self.dumper))


PER_MODEL = (
    "artifact_path",
    "flavors",
    "model_id",
    "model_size_bytes",
    "model_uuid",
    "run_id",
    "utc_time_created",
)


def _dumpers() -> list[Any]:
    import yaml

    return [d for d in (getattr(yaml, "CSafeDumper", None), yaml.SafeDumper) if d is not None]


def _block(key: str, value: Any, dumper: Any) -> str:
    """One field of MLmodel as `Model.save` writes it (`yaml.safe_dump`, block style)."""
    import yaml

    return yaml.dump({key: value}, Dumper=dumper, default_flow_style=False)


def _mlmodel_text(fields: dict[str, Any], blocks: dict[str, str], dumper: Any) -> str:
    """MLmodel's text: its fields in sorted order (as `yaml.safe_dump` sorts them), each block
    from `blocks` where it is there."""
    return "".join(
        blocks[key] if key in blocks else _block(key, fields[key], dumper) for key in sorted(fields)
    )


_NONE_YET = object()


class RunModels:
    """One run's model files as logged models (see the module's doc)."""

    def __init__(self, client: Any, run_id: str, experiment_id: str, known: Any = None) -> None:
        """`known`: the run's params and context tags (`tracking.RunFacts`), else read here."""
        self.client, self.run_id, self.experiment_id, self.known = client, run_id, experiment_id, known
        self.folder: ModelFolder | None = None
        self.key: Any = _NONE_YET
        self.params: dict[str, str] = {}
        self.context: dict[str, str] = {}
        self.experiment: Any = None

    def ready(self, model_file: Path, key: Any, save: Any) -> bool:
        """The run's folder, made from its first model file (again if `key`, what else the folder
        holds: the signature, the input example, changes); False: the client's way for this one."""
        if key != self.key:  # made once per run, also when it turns out unusable
            self.folder = ModelFolder.saved(model_file, save)
            self.key = key
            if self.known is not None:
                self.params, self.context = dict(self.known.params), dict(self.known.context)
            else:  # the context: the tags `Model.log` resolves, the same all run long
                self.params = {k: str(v) for k, v in self.client.get_run(self.run_id).data.params.items()}
                self.context = store_rows.context_tags()
            self.experiment = self.client.get_experiment(self.experiment_id)
        return self.folder is not None

    def log(
        self, model_file: Path, name: str, step: int, tags: dict[str, str], sent: Sequence[Any] = ()
    ) -> str:
        """Log `model_file` as a model of the run at `step`, linked to `sent`, the metric rows of
        its step already in the run; returns the model's id."""
        from mlflow.entities import LoggedModelStatus

        assert self.folder is not None, "ready() first"
        tags = {**self.context, **{k: str(v) for k, v in tags.items()}}
        rows = store_rows.create_model(self.run_id, self.experiment, name, step, tags, self.params, sent)
        model_id, location = rows or self._create(name, step, tags, sent)
        try:
            self._store(model_file, model_id, location)
        except BaseException:
            self._finish(model_id, LoggedModelStatus.FAILED, rows is not None)
            raise
        self._finish(model_id, LoggedModelStatus.READY, rows is not None)
        return model_id

    def _create(self, name: str, step: int, tags: dict[str, str], sent: Sequence[Any]) -> tuple[str, str]:
        """The client's calls for what `store_rows.create_model` did not write."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric

        logged = self.client.create_logged_model(
            self.experiment_id, name=name, source_run_id=self.run_id, tags=tags, params=self.params
        )
        try:
            self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=step)])
            if sent:
                linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=logged.model_id) for m in sent]
                self.client.log_batch(self.run_id, metrics=linked)
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        return logged.model_id, logged.artifact_location

    def _finish(self, model_id: str, status: Any, by_rows: bool) -> None:
        if not (by_rows and store_rows.finish_model(model_id, status)):
            self.client.finalize_logged_model(model_id, status)

    def _store(self, model_file: Path, model_id: str, location: str) -> None:
        """The model's folder in its artifact store: written in place where that is a local
        folder (what `log_model_artifacts` would copy there), else written and uploaded as
        `log_model_artifacts` does, without first reading the model back from the store for the
        artifact location it already has; Databricks URIs, which need MLflow's profile handling,
        take that call."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        uri = str(self.client.tracking_uri)
        repository = (
            None if uri.startswith("databricks") else get_artifact_repository(location, tracking_uri=uri)
        )
        if isinstance(repository, LocalArtifactRepository):
            self.folder.write(Path(repository.artifact_dir), model_file, model_id, location, self.run_id)
            return
        with tempfile.TemporaryDirectory(prefix="run-model-") as tmp:
            self.folder.write(Path(tmp), model_file, model_id, location, self.run_id)
            if repository is None:
                self.client.log_model_artifacts(model_id, tmp)
            else:
                repository.log_artifacts(tmp)
