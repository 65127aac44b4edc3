"""A new SQLite store as a copy of an empty one made by MLflow's own migrations (store_template)."""

from __future__ import annotations

import contextlib
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


def _journal_mode(database: Path) -> str:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_a_new_store_on_a_local_filesystem_writes_ahead(tmp_path):
    assert store_template.filesystem_type(tmp_path) in store_template.LOCAL_FILESYSTEMS
    database = tmp_path / "mlflow.db"
    assert store_template.seed(f"sqlite:///{database}")
    assert _journal_mode(database) == "wal"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]  # no log left beside it


def test_an_existing_store_keeps_its_journal(tmp_path):
    database = tmp_path / "mlflow.db"
    _mlflow_makes(database)
    open_store(f"sqlite:///{database}")
    assert _journal_mode(database) == "delete"


def test_a_store_on_a_network_filesystem_keeps_the_rollback_journal(tmp_path, monkeypatch):
    monkeypatch.setattr(store_template, "filesystem_type", lambda path: "nfs4")
    database = tmp_path / "mlflow.db"
    assert store_template.seed(f"sqlite:///{database}")
    assert _journal_mode(database) == "delete"


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /home rw,relatime shared:2 - nfs4 server:/home rw,vers=4.2
31 30 0:41 / /home/me/fast rw,relatime shared:3 - tmpfs tmpfs rw
32 22 0:42 / /mnt/my\\040disk rw - xfs /dev/sdb1 rw
33 22 0:43 / /mnt/my\\040disk rw - fuse.sshfs host:/x rw
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/", "ext4"),
        ("/srv/repo", "ext4"),
        ("/home", "nfs4"),
        ("/home/me/repo", "nfs4"),
        ("/homely", "ext4"),  # a sibling whose name only starts like the mount point
        ("/home/me/fast/repo", "tmpfs"),  # the deepest mount holds it
        ("/mnt/my disk/repo", "fuse.sshfs"),  # escaped spaces; of two mounts on one point, the later
    ],
)
def test_the_filesystem_is_the_deepest_mount_that_holds_the_path(path, kind):
    assert store_template.filesystem_type(Path(path), MOUNTINFO) == kind


def test_a_writer_and_a_reader_of_a_wal_store_do_not_wait_for_each_other(workdir):
    """`mlflow ui` reading in the middle of a transaction while a training writes its run: in
    the rollback-journal mode the writer's commit waits for the reader (MLflow's busy timeout,
    20 s, then an error)."""
    uri = os.environ["MLFLOW_TRACKING_URI"]
    open_store(uri)
    first = Tracker.start(TrackingConfig(enabled=True, experiment="wal"), {"a": 1}, {})
    first.finish()
    reader = sqlite3.connect(workdir / "mlflow.db", timeout=0, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM runs").fetchone() == (1,)
        run = Tracker.start(TrackingConfig(enabled=True, experiment="wal"), {"a": 2}, {})
        run.log_metrics({"loss": 0.5}, step=1)
        run.finish()
        assert reader.execute("SELECT count(*) FROM runs").fetchone() == (1,)  # its snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM runs").fetchone() == (2,)
        assert reader.execute("SELECT status FROM runs WHERE run_uuid = ?", (run.run_id,)).fetchone() == (
            "FINISHED",
        )
    finally:
        reader.close()


def test_this_process_commits_to_a_wal_store_without_fsync(workdir, monkeypatch):
    from pipeline import store_rows

    open_store(os.environ["MLFLOW_TRACKING_URI"])
    with store_rows.sql_store().engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL; FULL is 2
    other = workdir / "delete.db"
    _mlflow_makes(other)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    open_store(f"sqlite:///{other}")
    with store_rows.sql_store().engine.connect() as conn:  # a rollback-journal store: as SQLite has it
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
