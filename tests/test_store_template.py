"""A new SQLite store as a copy of an empty one made by MLflow's own migrations (store_template)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import store_template
from pipeline.config import TrackingConfig
from pipeline.tracking import Tracker, open_store


def _schema(database: Path) -> list[tuple[str, ...]]:
    """Every table, index and trigger; a statement's lines sorted, since MLflow's own migrations
    order a table's constraints differently from one store to the next."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        return [
            (kind, name, table, "\n".join(sorted(str(sql).splitlines())))
            for kind, name, table, sql in rows
        ]


def _contents(database: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(database) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"'))) for table in tables}


def _mlflow_makes(database: Path) -> None:
    """A store MLflow makes itself, in a process that knows nothing of the template."""
    code = "import sys, mlflow; mlflow.MlflowClient(sys.argv[1]).search_experiments()"
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{database}"], check=True, capture_output=True)


def test_a_seeded_store_is_the_store_mlflow_makes_itself(tmp_path, monkeypatch):
    (tmp_path / "seeded").mkdir()
    (tmp_path / "migrated").mkdir()
    seeded, migrated = tmp_path / "seeded" / "mlflow.db", tmp_path / "migrated" / "mlflow.db"
    assert store_template.seed(f"sqlite:///{seeded}")
    assert list(store_template.cache_folder().glob("mlflow-*.db"))  # made once, kept
    _mlflow_makes(migrated)
    monkeypatch.chdir(tmp_path / "seeded")
    _mlflow_makes(seeded)  # MLflow opens it: checks the revision, adds its default experiment
    assert _schema(seeded) == _schema(migrated)
    assert _contents(seeded).keys() == _contents(migrated).keys()
    assert _contents(seeded)["alembic_version"] == _contents(migrated)["alembic_version"]
    experiments = _contents(seeded)["experiments"]
    assert len(experiments) == 1 and "'Default'" in experiments[0]
    assert str(tmp_path / "seeded") in experiments[0]  # the new store's artifact root, not the cache's


def test_runs_are_tracked_in_a_seeded_store(workdir):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    assert store_template.seed(uri)  # what open_store does first with a store that does not exist
    mlflow = open_store(uri)
    run = Tracker.start(TrackingConfig(enabled=True, experiment="seeded"), {"a": 1}, {"t": "v"})
    run.finish()
    assert mlflow.MlflowClient(uri).get_run(run.run_id).data.params == {"a": "1"}


def test_an_existing_store_is_never_replaced(tmp_path):
    database = tmp_path / "mlflow.db"
    _mlflow_makes(database)
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE mine (x INTEGER)")
    before = database.read_bytes()
    assert not store_template.seed(f"sqlite:///{database}")
    assert database.read_bytes() == before


@pytest.mark.parametrize(
    "uri", ["sqlite://", "sqlite:///:memory:", "file:///tmp/mlruns", "http://127.0.0.1:5000", "postgresql://x/y"]
)
def test_only_a_local_sqlite_file_is_seeded(uri):
    assert not store_template.seed(uri)


def test_without_a_usable_cache_mlflow_makes_the_store(tmp_path, monkeypatch):
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    database = tmp_path / "mlflow.db"
    assert not store_template.seed(f"sqlite:///{database}")
    assert not database.exists() and not list(tmp_path.glob(".*partial"))
    open_store(f"sqlite:///{database}")  # MLflow's migrations, as without the template
    assert _contents(database)["alembic_version"]


def test_no_folder_no_store(tmp_path):
    assert not store_template.seed(f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")
    assert not (tmp_path / "missing").exists()
