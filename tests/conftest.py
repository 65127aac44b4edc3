"""Shared fixtures: a tiny, fast configuration (few rows, few epochs, CPU, tracking to tmp_path)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import Params, params_from_dict
from pipeline.stages import Layout

REPO = Path(__file__).resolve().parents[1]


def tiny_params(**sections: dict[str, Any]) -> dict[str, Any]:
    """A params dict for a run of a second or less; sections given here are merged over it."""
    raw: dict[str, Any] = {
        "data": {"source": "blobs", "n_samples": 200, "centers": 3, "random_state": 0},
        "split": {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 0},
        "model": {"hidden": [8], "activation": "relu"},
        "train": {"epochs": 3, "batch_size": 32, "device": "cpu", "checkpoint_every": 1,
                  "progress": "off", "seed": 0},
        "evaluate": {"plots": False},
        "tracking": {"enabled": False},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


@pytest.fixture
def make_params():
    def build(**sections: dict[str, Any]) -> Params:
        return params_from_dict(tiny_params(**sections))

    return build


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the working directory, its own MLflow store inside."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def layout(workdir: Path) -> Layout:
    return Layout(workdir)


def run_script(code: str, folder: Path, *args: str) -> str:
    """`python -c code folder args` in a fresh process, run in `folder` with its own MLflow store
    there and tests/ on its path (the script may import conftest); the last line it printed."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder), *args], cwd=folder, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a server a test starts)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process: Any) -> None:
    """Stop a server started with `start_new_session=True`: SIGTERM to its process group, SIGKILL
    if it does not go, then SIGKILL to whatever is left in the group (a server's workers)."""
    import contextlib
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(process.pid, sig)  # start_new_session: the group id is the leader's pid
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def logged_models(client: Any, run_id: str) -> list[Any]:
    """The models logged by run `run_id` (MLflow's LoggedModel entities)."""
    experiment_id = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(experiment_ids=[experiment_id])
    return [m for m in found if m.source_run_id == run_id]


def write_params(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(autouse=True, scope="session")
def _store_template_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """New MLflow stores are copies of an empty one made once (pipeline.store_template) in the
    user's cache; the tests make theirs in a cache of their own, for the whole session (commands
    the tests start inherit it)."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _quiet_env() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
