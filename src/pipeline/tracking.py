"""MLflow, and only here: one run per pipeline execution, opened by train, joined by evaluate.

The default store is `sqlite:///<repo root>/mlflow.db`, with the root found through DVC's
throw-away experiment copies (`<root>/.dvc/tmp/exps/...`), so queued and temporary experiments
land in the user's store; `MLFLOW_TRACKING_URI` overrides it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from pipeline import store_rows
from pipeline.config import TrackingConfig
from pipeline.errors import PipelineError
from pipeline.store_template import commit_without_fsync_in_wal, seed, sqlite_file

EXPERIMENT_COPY = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep
METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
FLUSH_SECONDS = 5.0


def repo_root(start: Path | None = None) -> Path:
    """The user's repository root: the working directory, or the repo a DVC copy was made from."""
    here = (start or Path.cwd()).resolve()
    text = str(here) + os.sep
    if EXPERIMENT_COPY in text:
        return Path(text.split(EXPERIMENT_COPY)[0])
    return here


def tracking_uri(root: Path | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root(root) / 'mlflow.db'}"


def artifact_location(uri: str, root: Path | None = None) -> str | None:
    """Artifacts next to a local store, absolute: `mlartifacts` beside an SQLite file (the
    repository root's for the default store), else under the repository root; a server decides
    for itself."""
    database = sqlite_file(uri)
    if database is not None:
        return (database.parent / "mlartifacts").as_uri()
    if uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri:
        return (repo_root(root) / "mlartifacts").as_uri()
    return None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'train': {'lr': 0.1}} -> {'train.lr': '0.1'}"""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


def _run_params(params: dict[str, Any]) -> dict[str, str]:
    """`params` flattened as a run's params, each cut to MLflow's 6000 characters."""
    return {k: v[:6000] for k, v in flatten(params).items()}


def ask_git(cwd: Path | None = None) -> Callable[[], dict[str, str]]:
    """A run's git tags, asked now and read by calling the result: the commit checked out in `cwd`
    and whether tracked files differ from it ({} outside git). The two commands run on another
    core meanwhile (`git status` takes tens of milliseconds in a real repository); `status` takes
    no optional lock, so that a `git commit` the user runs at the same time does not fail on it."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        asked = [
            subprocess.Popen(
                ["git", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            for args in (("rev-parse", "HEAD"), ("status", "--porcelain", "--untracked-files=no"))
        ]
    except OSError:  # no git
        return dict

    def answer() -> dict[str, str]:
        out = []
        for process in asked:
            try:
                text, _ = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                text = ""
            out.append(text.strip() if process.returncode == 0 else "")
        commit, status = out
        return {"git_commit": commit, "git_dirty": str(bool(status)).lower()} if commit else {}

    return answer


class RunFacts(NamedTuple):
    """A new run's params (as stored) and context tags, kept by the process that wrote them."""

    params: dict[str, str]
    context: dict[str, str]


class Tracker:
    """An open MLflow run, or nothing at all when `tracking.enabled` is false."""

    def __init__(self, cfg: TrackingConfig, run_id: str | None = None) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        # step -> ids of the models logged at that step, whose metrics are linked as they are sent
        self._links: dict[int, list[str]] = {}
        self._pending_tags: dict[str, str] = {}
        self._sent_unlinked: dict[int, list[Any]] = {}  # the newest step's rows sent without a model
        self._models: Any = None  # RunModels, on the first model logged
        self.known: RunFacts | None = None  # what the run holds, where this process wrote all of it
        self.experiment_id: str | None = None

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def start(
        cls, cfg: TrackingConfig, params: dict[str, Any], tags: dict[str, str], run_id: str | None = None
    ) -> Tracker:
        """Open this execution's run: `run_id` (a resume), `MLFLOW_RUN_ID`, or a new one."""
        if not cfg.enabled:
            return cls(cfg)
        uri = tracking_uri()
        mlflow = open_store(uri)
        run_id = os.environ.get("MLFLOW_RUN_ID") or run_id
        new = False
        known: RunFacts | None = None  # set where the run and its params were written as rows
        try:
            run = None
            if run_id:
                try:
                    run = mlflow.start_run(run_id=run_id)
                except mlflow.exceptions.MlflowException:
                    if run_id == os.environ.get("MLFLOW_RUN_ID"):
                        raise
            if run is None:  # a new run; also when the run of a resumed training is gone
                name = cfg.run_name or os.environ.get("DVC_EXP_NAME")
                seeded = random.getstate()  # MLflow draws run names from `random`, seeded for training
                random.seed()
                try:  # as rows with its params where it can (store_rows), else MLflow's way
                    flat = _run_params(params)
                    if (made := store_rows.create_run(cfg.experiment, name, tags, flat)) is not None:
                        run, known = made[0], RunFacts(flat, made[1])
                    else:
                        experiment_id = _experiment_id(mlflow, cfg.experiment, uri)
                        run = mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags)
                finally:
                    random.setstate(seeded)
                new = True
        except mlflow.exceptions.MlflowException as exc:
            raise PipelineError(f"MLflow at {uri}: {str(exc).splitlines()[0]}") from None
        tracker = cls(cfg, run.info.run_id)
        tracker.experiment_id = run.info.experiment_id
        if known is not None:
            tracker.known = known
        else:
            tracker.log_params(params, new_run=new)
        if not new:  # a new run got its tags as it was created
            mlflow.set_tags(tags)
        return tracker

    @classmethod
    def join(cls, cfg: TrackingConfig, run_id: str | None) -> Tracker:
        """Re-open the run train wrote to models/run.json (evaluate logs into it)."""
        if not cfg.enabled or not run_id:
            return cls(cfg)
        mlflow = open_store(tracking_uri())
        try:
            run = mlflow.start_run(run_id=run_id)
        except mlflow.exceptions.MlflowException as exc:
            raise PipelineError(
                f"MLflow run {run_id} from models/run.json cannot be opened at {tracking_uri()}: "
                f"{str(exc).splitlines()[0]}; re-run `pipeline train`"
            ) from None
        tracker = cls(cfg, run_id)
        tracker.experiment_id = run.info.experiment_id  # the rows' one transaction needs it
        return tracker

    def info(self) -> dict[str, Any]:
        if not self.enabled:
            return {"run_id": None, "tracking_uri": None, "experiment_id": None}
        return {
            "run_id": self.run_id,
            "experiment_id": self._run_experiment_id(),
            "tracking_uri": tracking_uri(),
        }

    def _run_experiment_id(self) -> str:
        """The run's experiment (known once the run is opened here; else read from the run once)."""
        if self.experiment_id is None:
            self.experiment_id = str(_mlflow().get_run(self.run_id).info.experiment_id)
        return self.experiment_id

    # -- logging ------------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any], new_run: bool = False) -> None:
        """Log flattened params; a value that differs from one already on the run becomes a tag."""
        if not self.enabled:
            return
        mlflow = _mlflow()
        flat = _run_params(params)
        if new_run and flat and store_rows.write(self.run_id, self.experiment_id, params=flat):
            return
        existing = {} if new_run else mlflow.get_run(self.run_id).data.params
        if not new_run:  # the run's params are no longer only those this process wrote
            self.known = self._models = None
        new = {k: v for k, v in flat.items() if k not in existing}
        changed = {f"changed.{k}": v for k, v in flat.items() if k in existing and existing[k] != v}
        if new:
            mlflow.log_params(new)
        if changed:
            mlflow.set_tags(changed)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffered: sent every few seconds (live curves in the UI for long runs) and on `flush`.

        A short run sends nothing before its models are logged, which keeps `log_model` cheap:
        MLflow links a new model to its step's metrics by reading every metric's whole history.
        """
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self, status: str | None = None) -> bool:
        """Send the buffered metrics, each also linked to the models logged at its step, and tags;
        with `status`, also end the run (True: it was ended here)."""
        if not self.enabled or not (self._pending or self._pending_tags or status):
            return False
        ended = store_rows.write(
            self.run_id, self.experiment_id, self._pending, self._links, self._pending_tags, status=status
        )
        if not ended:
            self._send_through_client()
        unlinked = [m for m in self._pending if not self._links.get(m.step)]
        newest = max((m.step for m in unlinked), default=None)
        if newest is not None:  # a model logged later at this step links them (see log_checkpoint)
            self._sent_unlinked = {newest: [m for m in unlinked if m.step == newest]}
        self._pending, self._pending_tags = [], {}
        self._last_flush = time.monotonic()
        return ended and status is not None

    def _send_through_client(self) -> None:
        """MLflow's client calls, where `store_rows.write` did not write (see there)."""
        from mlflow.entities import Metric, RunTag

        # A row logged with a model id lands in the run's history and in the model's metrics at
        # once; a second model at the same step needs the row again, which MLflow's store only
        # sorts out after a failed insert: those few go in a batch of their own.
        rows, again = [], []
        for m in self._pending:
            first, *more = self._links.get(m.step) or [None]
            rows.append(Metric(m.key, m.value, m.timestamp, m.step, model_id=first))
            again += [Metric(m.key, m.value, m.timestamp, m.step, model_id=other) for other in more]
        client = _mlflow().MlflowClient()
        tags = [RunTag(k, v) for k, v in self._pending_tags.items()]
        for batch in (rows, again):
            for start in range(0, len(batch), METRICS_PER_BATCH):
                client.log_batch(self.run_id, metrics=batch[start : start + METRICS_PER_BATCH], tags=tags)
                tags = []
        if tags:
            client.log_batch(self.run_id, tags=tags)

    def last_logged_step(self, key: str) -> int:
        """The highest step of `key` already in the run (-1: none): where a resume picks up."""
        if not self.enabled:
            return -1
        history = _mlflow().MlflowClient().get_metric_history(self.run_id, key)
        return max((m.step for m in history), default=-1)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Sent with the next flush of metrics, at the latest when the run ends."""
        if self.enabled:
            self._pending_tags.update({k: str(v) for k, v in tags.items()})

    def log_artifacts(self, paths: list[Path], folder: str) -> None:
        if not self.enabled:
            return
        for path in paths:
            if path.is_file():
                _mlflow().log_artifact(str(path), artifact_path=folder)

    def log_model(
        self,
        model_file: Path,
        record: dict[str, Any],
        example: Any = None,
        *,
        name: str = "model",
        step: int = 0,
        tags: dict[str, str] | None = None,
    ) -> Any:
        """Log a model.pt or checkpoint file as the task-speaking pyfunc; returns its model id and
        URI (`run_models.LoggedModel`). `example`: a few feature rows (an array), shown and served
        as the model's input example."""
        from pipeline.run_models import LoggedModel

        if not self.enabled:
            return None
        if (models := self._run_models(model_file, record, example)) is not None:
            model_id = models.log(model_file, name, step, tags or {}, self._sent_unlinked.get(step, ()))
        else:  # MLflow's own way, which also links the step's metrics already sent
            with _pyfunc_arguments(model_file, record, example) as arguments:
                model_id = _mlflow().pyfunc.log_model(name=name, step=step, tags=tags, **arguments).model_id
        self._links.setdefault(step, []).append(model_id)  # its step's metrics still to send
        return LoggedModel(model_id)

    def log_checkpoint(
        self,
        path: Path,
        record: dict[str, Any],
        epoch: int,
        score: float | None,
        larger_is_better: bool,
        example: Any = None,
    ) -> None:
        """A checkpoint as a logged model at its epoch (with the run's input `example`, as the
        final model); keeps the best `keep_checkpoints` of them."""
        if not self.enabled or not self.cfg.log_checkpoints:
            return
        tags = {"checkpoint_epoch": str(epoch), "checkpoint_score": repr(score)}
        self.log_model(path, record, example, name=f"checkpoint-{epoch:06d}", step=epoch, tags=tags)
        keep = self.cfg.keep_checkpoints
        if keep:
            self._keep_best_checkpoints(keep, larger_is_better)

    def _run_models(self, model_file: Path, record: dict[str, Any], example: Any) -> Any:
        """This run's `RunModels`, its folder made from `model_file`; None: MLflow's own way."""
        from pipeline import serving
        from pipeline.run_models import RunModels

        if self._models is None:
            client = _mlflow().MlflowClient()
            self._models = RunModels(client, str(self.run_id), self._run_experiment_id(), self.known)

        def save(folder: Path) -> None:
            with _pyfunc_arguments(model_file, record, example) as arguments:
                _mlflow().pyfunc.save_model(str(folder), **arguments)

        shown = None if example is None else (example.shape, example.dtype.str, example.tobytes())
        ready = self._models.ready(model_file, (serving.signature(record), shown), save)
        return self._models if ready else None

    def _logged_checkpoints(self, client: Any) -> list[Any]:
        """This run's checkpoints logged as models, those of a killed process before a resume too."""
        logged = client.search_logged_models(
            experiment_ids=[self._run_experiment_id()], filter_string=f"source_run_id = '{self.run_id}'"
        )
        return [model for model in logged if "checkpoint_epoch" in model.tags]

    def _keep_best_checkpoints(self, keep: int, larger_is_better: bool) -> None:
        """Delete all but the `keep` best logged checkpoints of this run (a resumed one included)."""
        client = _mlflow().MlflowClient()
        ranked = []
        for model in self._logged_checkpoints(client):
            score = model.tags.get("checkpoint_score", "None")
            value = None if score == "None" else float(score)
            key = (value is None, 0.0 if value is None else (-value if larger_is_better else value))
            ranked.append((*key, -int(model.tags["checkpoint_epoch"]), model.model_id))
        ranked.sort()  # unscored last; ties: the newer first
        for *_, model_id in ranked[keep:]:
            client.delete_logged_model(model_id)
            for ids in self._links.values():
                if model_id in ids:
                    ids.remove(model_id)

    def relink_checkpoints(self) -> None:
        """After a resume: the run's logged checkpoints, so metrics re-sent for them get linked."""
        if not self.enabled:
            return
        for model in self._logged_checkpoints(_mlflow().MlflowClient()):
            self._links.setdefault(int(model.tags["checkpoint_epoch"]), []).append(model.model_id)

    def register(self, model_uri: str, tags: dict[str, str]) -> str | None:
        """A new version of `tracking.model_name` for this run's model; returns its number."""
        if not self.enabled or not self.cfg.register_model or not model_uri:
            return None
        import logging

        logging.getLogger("mlflow.tracking._model_registry").setLevel(logging.WARNING)
        mlflow, name = _mlflow(), self.cfg.registered_name
        model_id = model_uri.removeprefix("models:/")
        client = mlflow.MlflowClient()
        if (
            model_uri.startswith("models:/")
            and "/" not in model_id
            and store_rows.registered_model_exists(client, name)
        ):
            # what `register_model` does for a models:/ URI once the registered model exists
            print(
                f"Registered model {name!r} already exists. Creating a new version of this model...",
                file=sys.stderr,
            )
            version = client.create_model_version(name, model_uri, tags=tags, model_id=model_id)
            print(f"Created version '{version.version}' of model '{version.name}'.", file=sys.stderr)
            _link_version(client, model_id, version)
        else:
            version = mlflow.register_model(model_uri, name, tags=tags)
        return str(version.version)

    def decide_champion(self, version: str | None, metric: str, larger_is_better: bool, value: float) -> str:
        """Move `champion` to `version` when its test metric beats the champion's; say why."""
        if not self.enabled or version is None:
            return ""
        name = self.cfg.registered_name
        client = _mlflow().MlflowClient()
        client.set_model_version_tag(name, version, f"test_{metric}", repr(value))
        current = champion_version(client, name)
        held = current.tags.get(f"test_{metric}") if current is not None else None
        if current is None or held is None:
            decision = f"promoted v{version}: first champion by test_{metric} = {value:.6g}"
        elif current.version == version:
            decision = f"kept v{version}: already champion"
        elif (value > float(held)) if larger_is_better else (value < float(held)):
            decision = f"promoted v{version}: test_{metric} {value:.6g} beats v{current.version}'s {held}"
        else:
            decision = f"kept v{current.version}: its test_{metric} {held} is not beaten by {value:.6g}"
        if decision.startswith("promoted"):
            move_alias(client, name, version)
        self.set_tags({"champion_decision": decision})
        client.set_model_version_tag(name, version, "champion_decision", decision)
        return decision

    def finish(self, status: str = "FINISHED") -> None:
        if not self.enabled:
            return
        if not (self.flush(status) and store_rows.leave_active_run(self.run_id)):
            _mlflow().end_run(status=status)


def _link_version(client: Any, model_id: str, version: Any) -> None:
    """The new version added to its logged model's `mlflow.modelVersions` tag, as
    `mlflow.register_model` adds it (a model gone from the store: no link, a warning there too)."""
    import logging

    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    try:
        if store_rows.link_model_version(model_id, version.name, version.version):
            return
        held = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
        links = store_rows.version_links(held, version.name, version.version)
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: links})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        logging.getLogger(__name__).warning(
            "logged model %s is gone: version %s not linked to it", model_id, version.version
        )


def warm_up(models: bool = False) -> None:
    """MLflow imported and the store opened (its tables created on first use), ahead of the
    first call; with `models`, also what logging a model needs (pyfunc, our model's code)."""
    open_store(tracking_uri())
    if models:
        import mlflow.pyfunc  # noqa: F401

        from pipeline import model_code, serving  # noqa: F401

        model_code.served_files()


def open_store(uri: str) -> Any:
    """MLflow pointed at `uri`, its tracking and registry stores open; one line if they cannot be."""
    mlflow = _mlflow()
    mlflow.set_tracking_uri(uri)
    seed(uri)  # a new SQLite store: a copy of an empty one, not MLflow's 69 migrations again
    commit_without_fsync_in_wal()  # before MLflow's engine connects (store_template)
    try:
        client = mlflow.MlflowClient(uri)
        registry = getattr(client, "_get_registry_client", None)
        if registry is not None:
            registry()
    except Exception as exc:  # a path that cannot hold a database, a server that does not answer
        first = (str(exc).splitlines() or [""])[0]
        what = f"{type(exc).__name__}: {first}"
        raise PipelineError(f"MLflow store at {uri} cannot be opened: {what}") from None
    return mlflow


def _experiment_id(mlflow: Any, name: str, uri: str) -> str:
    """The experiment's id, created if missing; two trainings starting at once (a queue with
    several workers) may both try to create it: the loser takes the winner's."""
    for _ in range(2):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(mlflow.create_experiment(name, artifact_location=artifact_location(uri)))
        except mlflow.exceptions.MlflowException as exc:
            if "already exists" not in str(exc) and "UNIQUE constraint" not in str(exc):
                raise
    raise PipelineError(f"MLflow at {uri}: experiment {name!r} can neither be found nor created")


@contextmanager
def _pyfunc_arguments(
    model_file: Path, record: dict[str, Any], example: Any = None
) -> Iterator[dict[str, Any]]:
    """What `pyfunc.log_model` and `save_model` get for one of our model files, with MLflow set up
    for them (see the two context managers below) for the duration."""
    import warnings

    from pipeline import model_code

    if example is not None:
        import pandas as pd

        example = pd.DataFrame(example.astype("float64"), columns=record["feature_names"])
    with (
        warnings.catch_warnings(),
        _requirements_checked_by_name(),
        _example_served_by_tests(),
        model_code.staged() as code,
    ):
        warnings.simplefilter("ignore", UserWarning)  # MLflow nags about type hints; we sign
        from pipeline import serving

        yield {
            "python_model": serving.__file__,
            "artifacts": {"model": str(model_file)},
            "code_paths": [code],  # serving.py and what it imports: the package's served part
            "signature": serving.signature(record),
            "input_example": example,
            "pip_requirements": serving.pip_requirements(),
        }


_INSTALLED_VERSIONS: dict[tuple[str, str | None], str] = {}


@contextmanager
def _requirements_checked_by_name() -> Iterator[None]:
    """MLflow checks a model's pip requirements against the environment through a module ->
    distribution map it builds once per process by scanning every installed distribution
    (about a second with torch's stack). Ours are pinned by name from importlib.metadata, which
    is also how MLflow looks a name up when the map does not have it: for the duration of our
    `log_model`, an unbuilt map is an empty one, and it is unbuilt again afterwards. The versions
    it then reads (each a parse of a METADATA file, a fifth of a `log_model`) are remembered for
    the process: every checkpoint logged as a model asks for the same ones."""
    try:
        from mlflow.utils import requirements_utils as known
    except ImportError:
        yield
        return
    installed_version = getattr(known, "_get_installed_version", None)
    if installed_version is not None:

        def remembered(package: str, module: str | None = None) -> str:
            key = (package, module)
            if key not in _INSTALLED_VERSIONS:
                _INSTALLED_VERSIONS[key] = installed_version(package, module)
            return _INSTALLED_VERSIONS[key]

        known._get_installed_version = remembered
    unbuilt = getattr(known, "_MODULES_TO_PACKAGES", "absent") is None  # not built, not renamed
    if unbuilt:
        known._MODULES_TO_PACKAGES = {}
    try:
        yield
    finally:
        if unbuilt:
            known._MODULES_TO_PACKAGES = None
        if installed_version is not None:
            known._get_installed_version = installed_version


@contextmanager
def _example_served_by_tests() -> Iterator[None]:
    """MLflow checks every logged model's input example by loading the model it has just saved
    and predicting the example as its scoring server would. For our models that checks our
    serving code (`serving.FFNModel`, the same for every run), not the run: the tests serve
    logged models of every task through `mlflow models serve` and pyfunc. Run on every
    `log_model`, the check costs a third of it (the model loaded again, one prediction) and, in
    a `pipeline train`, torch's import in the tracking process (2.5 s on its critical path). For
    the duration of our `log_model` it is left out; the example is saved and served the same."""
    try:
        from mlflow.models import utils as model_utils
    except ImportError:
        yield
        return
    check = getattr(model_utils, "_validate_serving_input", None)
    if check is None:  # renamed or gone: nothing to leave out
        yield
        return
    model_utils._validate_serving_input = lambda model_uri, serving_input: None
    try:
        yield
    finally:
        model_utils._validate_serving_input = check


def _mlflow() -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline-friendly, and faster
    import logging

    import mlflow

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating tables..."

    return mlflow


def metric_curves(experiment: str, metric: str) -> dict[str, list[tuple[int, float]]]:
    """run name -> [(step, value)] of `metric`, for the finished runs of an MLflow experiment
    (the newest run of a name wins)."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise PipelineError(f"no MLflow experiment {experiment!r} at {tracking_uri()}; there are: {names}")
    runs = client.search_runs(
        [found.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"]
    )
    curves: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        history = client.get_metric_history(run.info.run_id, metric)
        if history:
            curves[run.info.run_name or run.info.run_id] = sorted((m.step, m.value) for m in history)
    if not curves:
        raise PipelineError(f"no finished run of {experiment!r} has the metric {metric!r}")
    return curves


# -- the registry -------------------------------------------------------------------------------
CHAMPION = "champion"
HISTORY_TAG = "champion_history"  # versions that held the alias, oldest first


def champion_version(client: Any, name: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except _mlflow().exceptions.MlflowException:
        return None


def move_alias(client: Any, name: str, version: str) -> None:
    """Point `champion` at `version`, remembering the order for `rollback`."""
    client.set_registered_model_alias(name, CHAMPION, version)
    tags = client.get_registered_model(name).tags
    history = [v for v in tags.get(HISTORY_TAG, "").split(",") if v]
    if history[-1:] != [version]:
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join([*history, version]))


def promote(name: str, version: str) -> str:
    """Give `version` the champion alias by hand."""
    client = _registry_client(name)
    try:
        client.get_model_version(name, version)
    except _mlflow().exceptions.MlflowException:
        raise PipelineError(f"registered model {name!r} has no version {version!r}") from None
    move_alias(client, name, version)
    return f"{name}@{CHAMPION} -> v{version}"


def rollback(name: str) -> str:
    """Give `champion` back to the version that held it before the current one."""
    client = _registry_client(name)
    try:
        tags = client.get_registered_model(name).tags
    except _mlflow().exceptions.MlflowException:
        raise PipelineError(f"no registered model {name!r} at {tracking_uri()}") from None
    history = [v for v in tags.get(HISTORY_TAG, "").split(",") if v]
    if len(history) < 2:
        raise PipelineError(f"{name}@{CHAMPION} has no earlier champion to roll back to")
    previous = history[-2]
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[:-1]))
    return f"{name}@{CHAMPION} -> v{previous} (was v{history[-1]})"


def _registry_client(name: str) -> Any:
    return _mlflow().MlflowClient(tracking_uri=existing_store(f"registered model {name!r}"))


def existing_store(wanted: str) -> str:
    """The tracking URI, refused when it names a local SQLite file that does not exist (reading
    from it would only create an empty store)."""
    uri = tracking_uri()
    database = sqlite_file(uri)
    if database is not None and not database.is_file():
        raise PipelineError(
            f"{wanted}: no MLflow store at {uri}: train a model first, or set MLFLOW_TRACKING_URI"
        )
    return uri
