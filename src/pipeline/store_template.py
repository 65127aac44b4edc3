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
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


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
