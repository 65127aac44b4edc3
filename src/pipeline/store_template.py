"""A new local MLflow store starts as a copy of an empty one that MLflow's migrations made once.

MLflow creates an SQLite store by running every schema migration it has ever had (69 in 3.17):
2-3 s of the first `pipeline train` in a repository, and of every test with a store of its own.
The result is the same file each time for one MLflow version, so it is made once per version
and schema revision, in the user's cache (`$XDG_CACHE_HOME/ffn-pipeline`, else
`~/.cache/ffn-pipeline`), by MLflow's own migrations, and copied where a new store is wanted.
MLflow then opens the copy as any store it made: it checks the schema revision and adds its
default experiment, with the artifact root of the new store. Anything unusual (not a local
SQLite file, a file already there, no folder for it, an unwritable cache, MLflow's internals
moved) leaves the store to MLflow, as before.

A new store on a local filesystem is put in SQLite's write-ahead-log mode (WAL, kept in the
file): a commit appends to the log instead of rewriting the database through a rollback journal
(3-4x faster here), and readers (`mlflow ui`, a queued experiment) no longer block a training's
writes nor it theirs. This process's connections to a WAL store also commit without an fsync
(`synchronous=NORMAL`): a power cut may lose the last commits, never the database; a killed
process loses nothing. A network filesystem cannot share WAL's index, so a store there, or where
the filesystem is unknown (no /proc), keeps MLflow's rollback journal; an existing store keeps
whatever mode it has (`PRAGMA journal_mode=DELETE` on it switches back for good).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import sqlite3
import weakref
from pathlib import Path
from typing import Any

# filesystems whose files every process of the machine maps alike, as WAL's shared index needs
LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "bcachefs", "jfs", "tmpfs", "ramfs", "overlay"}
)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a local SQLite store URI (None for anything else or memory)."""
    if not uri.startswith("sqlite:"):
        return None
    database = uri.split("?")[0].partition(":///")[2]
    return Path(database).resolve() if database and database != ":memory:" else None


def cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ffn-pipeline"


def seed(uri: str) -> bool:
    """Put an empty, migrated store where `uri` names an SQLite file that does not exist yet;
    True if it did. A store that appears meanwhile (another process) is kept as it is."""
    target = sqlite_file(uri)
    if target is None or target.exists() or not target.parent.is_dir():
        return False
    try:
        template = _template()
        if template is None:
            return False
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            shutil.copyfile(template, partial)
            if filesystem_type(target.parent) in LOCAL_FILESYSTEMS:
                write_ahead(partial)
            os.link(partial, target)  # never over a store that appeared meanwhile
        finally:
            partial.unlink(missing_ok=True)
    except Exception:  # a store that appeared meanwhile, an unwritable folder or cache, a failed
        return False  # migration: MLflow makes the store (and says what is wrong) as usual
    return True


def _template() -> Path | None:
    """The cached empty store of this MLflow version and schema revision, made if missing."""
    try:
        import mlflow
        import sqlalchemy
        from mlflow.store.db.utils import _get_latest_schema_revision, _initialize_tables
    except ImportError:  # MLflow's internals moved: it creates its stores itself
        return None
    revision = _get_latest_schema_revision()
    template = cache_folder() / f"mlflow-{mlflow.__version__}-{revision}.db"
    if template.is_file():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(f".{template.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
    try:
        _initialize_tables(engine)  # MLflow's own: the initial tables, then every migration
    finally:
        engine.dispose()
    with contextlib.suppress(OSError):
        os.replace(partial, template)  # whole or not at all; a racing maker wrote the same
    partial.unlink(missing_ok=True)
    return template if template.is_file() else None


def write_ahead(database: Path) -> None:
    """Put the SQLite file `database`, which no one else has open, in WAL mode (kept in its header)."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # the last connection's close folds the log back


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem that holds `path`, from /proc/self/mountinfo (None: unknown)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target, found, longest = os.path.realpath(path), None, -1
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        if len(fields.split()) < 5 or not rest:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields.split()[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= longest:  # the deepest mount; of equals, the later one
            found, longest = rest.split()[0], len(point)
    return found


def commit_without_fsync_in_wal() -> None:
    """From now on, this process's new SQLite connections to a WAL-mode database commit with
    `synchronous=NORMAL` (no fsync per commit; see the module), and its SQLite engines' pools
    are closed at exit (`fold_logs`). Idempotent."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not event.contains(Engine, "connect", _relax_sync):
        event.listen(Engine, "connect", _relax_sync)
        event.listen(Engine, "engine_connect", _remember_engine)
        atexit.register(fold_logs)


def fold_logs() -> None:
    """Close the pooled connections of this process's SQLite engines. The last connection to a
    WAL store to close folds the log into the database and removes `-wal` and `-shm`, so the
    file alone (or a copy of it) holds every run; left open, the log keeps those rows safe
    until the next connection folds it. At exit, and by the tracking process before it leaves."""
    for engine in list(_SQLITE_ENGINES):
        with contextlib.suppress(Exception):
            engine.dispose()


_SQLITE_ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()


def _remember_engine(connection: Any) -> None:
    if connection.engine.dialect.name == "sqlite":
        _SQLITE_ENGINES.add(connection.engine)


def _relax_sync(connection: object, _record: object) -> None:
    if isinstance(connection, sqlite3.Connection):
        cursor = connection.cursor()
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()
