"""The model registry, logged checkpoints and `pipeline predict`, in process, against a sqlite store in tmp.

Every training registers a version of `tracking.model_name` (default: the experiment name), evaluate
moves the `champion` alias to a version whose test metric beats the champion's, and `pipeline
promote` / `pipeline rollback` move it by hand. Checkpoints are logged as models at their epoch.
`pipeline predict` scores a CSV with a model file, a checkpoint, a registry alias or a run's model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import logged_models, run_script, tiny_params

from pipeline import stages
from pipeline.cli import main
from pipeline.config import params_from_dict
from pipeline.files import read_json
from pipeline.stages import Layout

NAME = "reg-test"


# -- helpers ----------------------------------------------------------------------------------------
def _client() -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def _tracking(**extra: Any) -> dict[str, Any]:
    return {"enabled": True, "experiment": NAME, "log_checkpoints": False, **extra}


def _execute(params: Any, root: Path) -> dict[str, Any]:
    """data -> split -> train -> evaluate in `root`; what train and evaluate wrote."""
    layout = Layout(root)
    stages.data(params, layout)
    stages.split(params, layout)
    stages.train(params, layout)
    summary = stages.evaluate(params, layout)
    return {
        "summary": summary,
        "run": read_json(layout.run),
        "eval": read_json(layout.metrics),
        "history": read_json(layout.history),
        "meta": read_json(layout.split_dir / "meta.json"),
    }


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _one_error_line(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def _champion(client: Any) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)


# -- the registry -----------------------------------------------------------------------------------
def test_each_training_registers_a_version_and_champion_follows_the_better_test_metric(workdir, make_params):
    client = _client()
    # 1 epoch vs 20 epochs: the longer training should be clearly better, but the metrics decide
    short = _execute(make_params(tracking=_tracking(), train={"epochs": 1}), workdir)
    long = _execute(make_params(tracking=_tracking(), train={"epochs": 20}), workdir)
    first, second = short["run"], long["run"]

    assert first["model_version"] == "1", first
    assert second["model_version"] == "2", second
    assert first["registered_model"] == second["registered_model"] == NAME
    assert first["run_id"] != second["run_id"]
    for record, result in ((first, short), (second, long)):
        version = client.get_model_version(NAME, record["model_version"])
        assert version.tags["run_id"] == record["run_id"]
        assert version.run_id == record["run_id"]
        assert version.tags["data_fingerprint"] == result["meta"]["fingerprint"]
        assert record["model_uri"] and record["model_uri"].startswith("models:/m-"), record
        assert version.source == record["model_uri"]
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{NAME}'"))
    assert versions == [1, 2]

    accuracy = {"1": short["eval"]["accuracy"], "2": long["eval"]["accuracy"]}
    assert accuracy["1"] != accuracy["2"], f"the two trainings should differ in test accuracy: {accuracy}"
    better = max(accuracy, key=accuracy.get)
    assert better == "2", f"expected 20 epochs to beat 1 epoch on test accuracy: {accuracy}"
    assert _champion(client) == better

    decision = client.get_run(second["run_id"]).data.tags["champion_decision"]
    assert decision.startswith("promoted v2"), decision
    assert long["summary"]["champion"] == decision  # evaluate says why, too
    first_decision = client.get_run(first["run_id"]).data.tags["champion_decision"]
    assert first_decision.startswith("promoted v1: first champion"), first_decision
    assert client.get_model_version(NAME, "2").tags["test_accuracy"] == repr(accuracy["2"])

    # a third, worse training: a new version, and the alias stays
    worse = _execute(make_params(tracking=_tracking(), train={"epochs": 1, "seed": 1}), workdir)
    third = worse["run"]
    assert third["model_version"] == "3"
    assert worse["eval"]["accuracy"] < accuracy["2"], (worse["eval"]["accuracy"], accuracy)
    assert _champion(client) == "2"
    kept = client.get_run(third["run_id"]).data.tags["champion_decision"]
    assert kept.startswith("kept v2"), kept
    assert client.get_model_version(NAME, "3").tags["champion_decision"] == kept

    # rollback: back to the champion before v2
    result = _cli("rollback", "--model-name", NAME)
    assert result.exit_code == 0, result.output
    assert "v1" in result.stdout
    assert _champion(client) == "1"

    # nothing held the alias before v1
    result = _cli("rollback", "--model-name", NAME)
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert NAME in line
    assert _champion(client) == "1"

    # promote by hand, then roll that back too
    result = _cli("promote", "3", "--model-name", NAME)
    assert result.exit_code == 0, result.output
    assert _champion(client) == "3"
    result = _cli("rollback", "--model-name", NAME)
    assert result.exit_code == 0, result.output
    assert _champion(client) == "1"
    result = _cli("promote", "2", "--model-name", NAME)
    assert result.exit_code == 0, result.output
    assert _champion(client) == "2"

    # a version that does not exist: one line, the alias untouched
    result = _cli("promote", "99", "--model-name", NAME)
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert "99" in line
    assert _champion(client) == "2"


@pytest.mark.parametrize("link", ["rows", "client"])
def test_a_version_of_an_existing_model_is_the_one_mlflow_registers(workdir, make_params, capsys, link):
    """Once the registered model exists, a run registers its new version without MLflow's failed
    insert and read-back of every version; the version, the logged model and the words on stderr
    are those of `mlflow.register_model`."""
    import mlflow

    from pipeline import store_rows
    from pipeline.config import TrackingConfig
    from pipeline.tracking import Tracker

    client = _client()
    assert store_rows.registered_model_exists(client, NAME) is False
    run = _execute(make_params(tracking=_tracking()), workdir)["run"]  # v1, MLflow's way (new model)
    assert store_rows.registered_model_exists(client, NAME) is True
    tags = {"run_id": run["run_id"], "data_fingerprint": "x"}
    capsys.readouterr()
    theirs = mlflow.register_model(run["model_uri"], NAME, tags=tags)
    their_words = capsys.readouterr().err
    tracker = Tracker(TrackingConfig(**_tracking()), run["run_id"])
    with pytest.MonkeyPatch.context() as patch:  # not through MLflow's way this time
        patch.setattr(mlflow, "register_model", lambda *a, **k: pytest.fail("mlflow.register_model called"))
        if link == "client":  # the logged model's link through the client's calls (a server)
            patch.setattr(store_rows, "link_model_version", lambda *a: False)
        ours = client.get_model_version(NAME, tracker.register(run["model_uri"], tags))
    assert capsys.readouterr().err == their_words.replace("'2'", "'3'")
    assert (str(theirs.version), str(ours.version)) == ("2", "3")

    def fields(version: Any) -> dict[str, Any]:
        out = {
            k: v
            for k, v in vars(version).items()
            if k not in ("_version", "_creation_time", "_last_updated_timestamp")
        }
        return {**out, "_tags": dict(version.tags)}

    assert fields(ours) == fields(client.get_model_version(NAME, "2"))
    logged = client.get_logged_model(run["model_uri"].removeprefix("models:/"))
    assert [v["version"] for v in json.loads(logged.tags["mlflow.modelVersions"])] == [1, 2, 3]


@pytest.mark.parametrize(
    "args", [("rollback", "--model-name", "no-such-model"), ("promote", "1", "--model-name", "no-such-model")]
)
def test_rollback_and_promote_of_an_unknown_model_fail_with_one_line(workdir, args):
    _client().search_experiments()  # the store exists, the model does not
    result = _cli(*args)
    assert result.exit_code == 1, result.output
    assert "no-such-model" in _one_error_line(result)


@pytest.mark.parametrize(
    "args", [("rollback", "--model-name", "no-such-model"), ("promote", "1", "--model-name", "no-such-model")]
)
def test_registry_commands_without_a_store_say_one_line_and_create_none(workdir, args):
    """A fresh checkout (no mlflow.db yet): a one-line error, not MLflow's database set-up chatter,
    and no empty store left behind."""
    result = _cli(*args)
    assert result.exit_code == 1, result.output
    assert "no-such-model" in _one_error_line(result)
    assert not (workdir / "mlflow.db").exists(), "an empty mlflow.db was created by a failing command"


def test_predict_with_a_registry_uri_without_a_store_says_one_line_and_creates_none(workdir):
    (workdir / "in.csv").write_text("x0,x1\n1.0,2.0\n")
    result = _cli(
        "predict", "--model", "models:/no-such-model@champion", "--input", "in.csv", "--output", "out.csv"
    )
    assert result.exit_code == 1, result.output
    assert "no-such-model" in _one_error_line(result)
    assert not (workdir / "out.csv").exists()
    assert not (workdir / "mlflow.db").exists(), "an empty mlflow.db was created by a failing command"


# -- checkpoints as logged models -------------------------------------------------------------------
def _logged_models(client: Any, run_id: str) -> dict[str, Any]:
    return {m.name: m for m in logged_models(client, run_id)}


def _output_steps(client: Any, run_id: str) -> dict[str, int]:
    """model id -> the step it was logged at (the run's model outputs)."""
    outputs = client.get_run(run_id).outputs
    return {o.model_id: o.step for o in (outputs.model_outputs if outputs else [])}


def test_every_checkpoint_is_a_logged_model_at_its_epoch(workdir, make_params):
    params = make_params(
        tracking=_tracking(log_checkpoints=True, keep_checkpoints=0),
        train={"epochs": 3, "checkpoint_every": 1},
    )
    run_id = _execute(params, workdir)["run"]["run_id"]
    client = _client()
    models = _logged_models(client, run_id)
    assert set(models) == {"checkpoint-000001", "checkpoint-000002", "checkpoint-000003", "model"}, set(
        models
    )
    steps = _output_steps(client, run_id)
    for epoch in (1, 2, 3):
        model = models[f"checkpoint-{epoch:06d}"]
        assert steps[model.model_id] == epoch
        linked = {m.key: m for m in model.metrics or []}
        assert "val_loss" in linked, f"checkpoint {epoch}: no metrics linked to the model"
        assert all(m.step == epoch for m in model.metrics), [(m.key, m.step) for m in model.metrics]
    assert steps[models["model"].model_id] == 3
    assert {m.step for m in models["model"].metrics or []} == {3}, "the final model's metrics: epoch 3"
    history = client.get_metric_history(run_id, "val_loss")
    assert sorted(m.step for m in history) == [1, 2, 3], "each epoch once in the run's history"


def test_long_runs_send_a_curve_of_about_100_points_and_every_checkpoint_epoch(workdir, make_params):
    params = make_params(
        tracking=_tracking(log_checkpoints=True), train={"epochs": 610, "checkpoint_every": 200}
    )
    result = _execute(params, workdir)
    run_id = result["run"]["run_id"]
    client = _client()
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))
    # auto: every ceil(610 / 100) = 7th epoch, plus checkpoints (200, 400, 600) and the last (610)
    assert steps == sorted({*range(7, 611, 7), 200, 400, 600, 610}), steps[:10]
    assert len(result["history"]["history"]) == 610, "history.json keeps every epoch"
    for name, model in _logged_models(client, run_id).items():
        epoch = 610 if name == "model" else int(name.split("-")[1])
        assert {m.step for m in model.metrics or []} == {epoch}, name
    params = make_params(tracking=_tracking(log_every_epochs=1), train={"epochs": 610})
    run_id = _execute(params, workdir)["run"]["run_id"]
    assert len(client.get_metric_history(run_id, "train_loss")) == 610


def test_keep_checkpoints_keeps_only_the_best_by_the_monitor(workdir, make_params):
    params = make_params(
        tracking=_tracking(log_checkpoints=True, keep_checkpoints=1),
        train={"epochs": 3, "checkpoint_every": 1, "monitor": "val_loss"},
    )
    result = _execute(params, workdir)
    run_id = result["run"]["run_id"]
    losses = {int(row["epoch"]): row["val_loss"] for row in result["history"]["history"]}
    best = min(losses, key=lambda epoch: (losses[epoch], -epoch))  # ties: the newer
    models = _logged_models(_client(), run_id)
    checkpoints = sorted(name for name in models if name.startswith("checkpoint-"))
    assert checkpoints == [f"checkpoint-{best:06d}"], (checkpoints, losses)
    assert "model" in models


def test_keep_checkpoints_holds_across_a_resumed_training(workdir, make_params):
    """A resume logs into the same run; the checkpoints logged before it count towards the limit."""
    sections = {"tracking": _tracking(log_checkpoints=True, keep_checkpoints=1)}
    first = _execute(make_params(train={"epochs": 3, "checkpoint_every": 1}, **sections), workdir)
    resumed = _execute(
        make_params(train={"epochs": 6, "checkpoint_every": 1, "resume": True}, **sections), workdir
    )
    run_id = resumed["run"]["run_id"]
    assert run_id == first["run"]["run_id"], "the resumed training should continue the same run"
    assert resumed["history"]["resumed_from"] == 3
    losses = {int(row["epoch"]): row["val_loss"] for row in resumed["history"]["history"]}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    sent = sorted(m.step for m in _client().get_metric_history(run_id, "val_loss"))
    assert sent == [1, 2, 3, 4, 5, 6], "a resumed run's history: each epoch once"
    best = min(losses, key=lambda epoch: (losses[epoch], -epoch))
    checkpoints = sorted(name for name in _logged_models(_client(), run_id) if name.startswith("checkpoint-"))
    assert checkpoints == [f"checkpoint-{best:06d}"], (checkpoints, losses)


# -- pipeline predict -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One tracked training (3 epochs, a checkpoint each), registered as v1 and champion."""
    root = tmp_path_factory.mktemp("predict")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "DVC_EXP_NAME"):
            patch.delenv(name, raising=False)
        params = params_from_dict(
            tiny_params(tracking=_tracking(), train={"epochs": 3, "checkpoint_every": 1})
        )
        result = _execute(params, root)
    from pipeline.data import load_dataset

    test = load_dataset(root / "data" / "split" / "test.npz")
    yield {
        "root": root,
        "uri": uri,
        **result,
        "features": test.features,
        "names": result["meta"]["feature_names"],
    }


@pytest.fixture
def in_trained(trained, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.chdir(trained["root"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)
    return trained


SOURCES = ("model.pt", "checkpoint", "champion", "run-model")


def _model_arg(source: str, trained: dict[str, Any]) -> str:
    return {
        "model.pt": "models/model.pt",
        "checkpoint": "models/checkpoints/epoch_000003.pt",  # the last epoch: the same weights
        "champion": f"models:/{NAME}@champion",
        "run-model": trained["run"]["model_uri"],
    }[source]


def _write_rows(path: Path, rows: np.ndarray, header: list[str] | None) -> Path:
    lines = [",".join(header)] if header is not None else []
    lines += [",".join(f"{float(v):.17g}" for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _predict(model: str, input_path: Path, output_path: Path) -> Any:
    return _cli("predict", "--model", model, "--input", str(input_path), "--output", str(output_path))


@pytest.fixture(scope="module")
def reference(trained) -> pd.DataFrame:
    """What models/model.pt answers for the test rows, computed without the CLI."""
    from pipeline import serving
    from pipeline.checkpoints import load_model
    from pipeline.evaluation import predict

    model, record = load_model(trained["root"] / "models" / "model.pt")
    features = trained["features"].astype(np.float32)
    return serving.answer(record, predict(model, features, record["loss"]))


@pytest.mark.parametrize("source", SOURCES)
def test_predict_gives_the_same_answers_with_and_without_a_header(in_trained, reference, tmp_path, source):
    trained = in_trained
    names, rows = trained["names"], trained["features"]
    inputs = {
        "header": _write_rows(tmp_path / "header.csv", rows, names),
        "positional": _write_rows(tmp_path / "positional.csv", rows, None),
        # a header in another order, with a column the model does not use
        "reordered": _write_rows(
            tmp_path / "reordered.csv",
            np.column_stack([rows[:, ::-1], np.arange(len(rows))]),
            [*names[::-1], "row_id"],
        ),
    }
    answers = {}
    for kind, path in inputs.items():
        out = tmp_path / f"{kind}.out.csv"
        result = _predict(_model_arg(source, trained), path, out)
        assert result.exit_code == 0, f"{kind}: {result.output}"
        assert f"{len(rows)} predictions" in result.stdout
        answers[kind] = pd.read_csv(out)

    probs = [f"prob_{c}" for c in trained["meta"]["class_names"]]
    for kind, frame in answers.items():
        assert list(frame.columns) == ["label", *probs], (kind, list(frame.columns))
        assert len(frame) == len(rows)
        np.testing.assert_allclose(frame[probs].sum(axis=1), 1.0, atol=1e-5, err_msg=kind)
        assert (frame["label"].astype(str) == reference["label"].astype(str)).all(), kind
        np.testing.assert_allclose(
            frame[probs].to_numpy(), reference[probs].to_numpy(), atol=1e-6, err_msg=kind
        )
        argmax = np.asarray(trained["meta"]["class_names"])[frame[probs].to_numpy().argmax(axis=1)]
        assert (frame["label"].astype(str).to_numpy() == argmax).all(), kind


def test_a_logged_model_carries_only_the_code_it_serves_and_runs_from_it(in_trained, reference, tmp_path):
    """The model's code folder holds serving.py and what it imports (pipeline.model_code), and a
    fresh Python that loads it imports every `pipeline` module from there: none is missing (the
    model's `pipeline` package shadows the installed one, so a missing module fails the load)."""
    import mlflow

    from pipeline import model_code

    local = Path(mlflow.artifacts.download_artifacts(in_trained["run"]["model_uri"], dst_path=str(tmp_path)))
    code = (local / "code" / "pipeline").resolve()
    carried = sorted(p.relative_to(code).as_posix() for p in code.rglob("*") if p.is_file())
    assert carried == list(model_code.served_files())
    assert {"serving.py", "checkpoints.py", "model.py", "evaluation.py"} <= set(carried)
    assert not {"tracking.py", "stages.py", "cli.py", "training.py"} & set(carried)

    rows = tmp_path / "rows.npy"
    np.save(rows, in_trained["features"])
    script = """
import json, sys
import numpy as np, pandas as pd, mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[2])
answer = model.predict(pd.DataFrame(np.load(sys.argv[3]), columns=sys.argv[4].split(",")))
ours = [m for n, m in sys.modules.items() if n.split(".")[0] == "pipeline"]
files = {m.__name__: m.__file__ for m in ours if getattr(m, "__file__", None)}
print(json.dumps({"labels": [str(v) for v in answer["label"]], "files": files}))
"""
    found = json.loads(run_script(script, tmp_path, str(local), str(rows), ",".join(in_trained["names"])))
    assert found["labels"] == [str(v) for v in reference["label"]]
    assert {"pipeline", "pipeline.checkpoints", "pipeline.evaluation"} <= set(found["files"])
    outside = {n: f for n, f in found["files"].items() if not Path(f).resolve().is_relative_to(code)}
    assert not outside, outside


BAD_INPUTS = {
    "nan": "x0,x1\n1.0,2.0\n3.0,nan\n",
    "nan-positional": "1.0,2.0\nnan,4.0\n",
    "infinity": "x0,x1\n1.0,inf\n",
    "string": "x0,x1\n1.0,2.0\n3.0,abc\n",
    "string-positional": "1.0,hello\n",
    "three-columns": "1.0,2.0,3.0\n4.0,5.0,6.0\n",
    "one-column": "1.0\n2.0\n",
    "wrong-names": "a,b,c\n1,2,3\n",
    "empty": "",
    "blank-lines": "\n\n  \n",
    "header-only": "x0,x1\n",
}


@pytest.mark.parametrize("source", ["model.pt", "champion"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_predict_refuses_bad_input_with_one_line_and_no_output(in_trained, tmp_path, source, case):
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD_INPUTS[case])
    out = tmp_path / "out.csv"
    result = _predict(_model_arg(source, in_trained), bad, out)
    assert result.exit_code == 1, f"{case}: exit {result.exit_code}\n{result.output}"
    _one_error_line(result)
    assert not out.exists(), f"{case}: {out} written"
    assert not list(tmp_path.glob(".out.csv.*")), "a temporary output file was left behind"


@pytest.mark.parametrize(
    "model",
    [
        "models:/no-such-model@champion",
        f"models:/{NAME}/99",
        "models:/m-00000000000000000000000000000000",
        "models/missing.pt",
    ],
)
def test_predict_refuses_a_model_that_does_not_exist(in_trained, tmp_path, model):
    good = _write_rows(tmp_path / "in.csv", in_trained["features"][:3], in_trained["names"])
    out = tmp_path / "out.csv"
    result = _predict(model, good, out)
    assert result.exit_code == 1, result.output
    _one_error_line(result)
    assert not out.exists()


def test_predict_refuses_a_missing_input_file(in_trained, tmp_path):
    out = tmp_path / "out.csv"
    result = _predict("models/model.pt", tmp_path / "absent.csv", out)
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert "absent.csv" in line
    assert not out.exists()


def test_predict_refuses_a_file_that_is_not_a_model(in_trained, tmp_path):
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not a torch file")
    good = _write_rows(tmp_path / "in.csv", in_trained["features"][:3], in_trained["names"])
    out = tmp_path / "out.csv"
    result = _predict(str(fake), good, out)
    assert result.exit_code == 1, result.output
    _one_error_line(result)
    assert not out.exists()


# -- trainings starting together ------------------------------------------------------------------------
_START = """
import sys, time
import mlflow
from pipeline.config import TrackingConfig
from pipeline.tracking import Tracker, tracking_uri
mlflow.set_tracking_uri(tracking_uri())
mlflow.search_experiments()  # the store opened (cached per process) before the common instant
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # all start at the same instant
tracker = Tracker.start(TrackingConfig(experiment="raced"), {}, {})
tracker.finish()
print(tracker.run_id)
"""


def test_trainings_starting_at_once_share_the_new_experiment(workdir):
    """A queue with several workers starts trainings together: each creates the missing
    experiment, one wins, the others must use it rather than fail."""
    import subprocess
    import sys
    import time

    import mlflow

    _client().search_experiments()  # the store exists and is migrated; the experiment does not
    at = str(time.time() + 6.0)
    command = [sys.executable, "-c", _START, at]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "cwd": workdir}
    procs = [subprocess.Popen(command, **pipes) for _ in range(4)]
    results = [(*proc.communicate(timeout=120), proc.returncode) for proc in procs]
    assert all(code == 0 for *_, code in results), [err[-600:] for _, err, code in results if code]
    experiment = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_experiment_by_name("raced")
    runs = _client().search_runs([experiment.experiment_id])
    assert len(runs) == 4


def test_lr_is_a_metric_only_when_a_scheduler_moves_it(workdir, make_params):
    client = _client()
    fixed = _execute(make_params(tracking=_tracking(), train={"epochs": 3}), workdir)["run"]["run_id"]
    assert "lr" not in client.get_run(fixed).data.metrics
    assert client.get_run(fixed).data.params["train.lr"]
    params = make_params(
        tracking=_tracking(), train={"epochs": 3, "scheduler": "step", "step_size": 1, "gamma": 0.5}
    )
    moving = _execute(params, workdir)["run"]["run_id"]
    values = [m.value for m in sorted(client.get_metric_history(moving, "lr"), key=lambda m: m.step)]
    assert len(values) == 3 and values[0] > values[1] > values[2]


def test_logged_models_pin_the_installed_versions_and_mlflow_is_left_as_found(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each checkpoint logged as a model reads the same installed versions: they are read once
    (MLflow would parse every METADATA file again per model); MLflow's reload-and-predict check of
    the input example is left out (test_serving serves it); MLflow's own functions are back in
    place afterwards."""
    from importlib.metadata import version

    from mlflow.models import utils as model_utils
    from mlflow.utils import requirements_utils

    before, modules_map = requirements_utils._get_installed_version, requirements_utils._MODULES_TO_PACKAGES
    checks: list[str] = []
    monkeypatch.setattr(
        model_utils, "_validate_serving_input", lambda model_uri, serving_input: checks.append(model_uri)
    )
    check = model_utils._validate_serving_input
    raw = tiny_params(train={"epochs": 2, "checkpoint_every": 1}, tracking=_tracking(log_checkpoints=True))
    params = params_from_dict(raw)
    stages.data(params, Layout(workdir))
    stages.split(params, Layout(workdir))
    stages.train(params, Layout(workdir))
    assert requirements_utils._get_installed_version is before
    assert requirements_utils._MODULES_TO_PACKAGES is modules_map
    assert model_utils._validate_serving_input is check and checks == []
    client = _client()
    run_id = read_json(Layout(workdir).run)["run_id"]
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert len(logged) == 3  # two checkpoints and the final model
    import mlflow

    for model in logged:
        requirements = mlflow.artifacts.download_artifacts(f"{model.artifact_location}/requirements.txt")
        pins = Path(requirements).read_text().split()
        assert f"torch=={version('torch').split('+')[0]}" in pins
        assert f"mlflow=={mlflow.__version__}" in pins
    final = next(model for model in logged if "checkpoint_epoch" not in model.tags)
    example = mlflow.artifacts.download_artifacts(f"{final.artifact_location}/serving_input_example.json")
    assert len(json.loads(Path(example).read_text())["dataframe_split"]["data"]) == 3


@pytest.mark.parametrize(
    ("uri", "where"),
    [
        ("sqlite:///{tmp}/stores/mlflow.db", "{tmp}/stores/mlartifacts"),  # beside the database
        ("sqlite:///{tmp}/stores/mlflow.db?timeout=20", "{tmp}/stores/mlartifacts"),
        ("sqlite:///mlflow.db", "{cwd}/mlartifacts"),  # a relative file is the working directory's
        ("sqlite://", "{root}/mlartifacts"),  # in memory: the repository root
        ("file:///{tmp}/mlruns", "{root}/mlartifacts"),
        ("http://127.0.0.1:5000", None),  # a server decides
    ],
)
def test_artifacts_go_beside_a_local_store(tmp_path, monkeypatch, uri, where):
    from pipeline.tracking import artifact_location

    root, cwd = tmp_path / "repo", tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    names = {"tmp": tmp_path, "cwd": cwd, "root": root}
    expected = Path(where.format(**names)).as_uri() if where else None
    assert artifact_location(uri.format(**names), root) == expected
