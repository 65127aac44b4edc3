"""The part of this package a logged model carries as its code: `serving.py` and the modules it
imports, directly or through others (imports inside functions too), not the whole package.

MLflow copies a model's code twice on every `log_model` (into a temporary model folder, then
into the artifact store), and a run logs one model per checkpoint: the package's 27 files made a
quarter of each `log_model`. A served model only runs `serving.FFNModel` (load a model file,
predict), which needs 8 of them. The set is read from the source, so a new import in a served
module travels with the models logged after it.
"""

from __future__ import annotations

import ast
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
NAME = PACKAGE.name  # "pipeline"
ENTRY = "serving.py"


@functools.cache
def served_files() -> tuple[str, ...]:
    """Package-relative paths of the files a served model imports, with every package
    `__init__.py` on the way (the package's own included)."""
    found: set[str] = set()
    todo = ["__init__.py", ENTRY]
    while todo:
        relative = todo.pop()
        if relative in found:
            continue
        found.add(relative)
        tree = ast.parse((PACKAGE / relative).read_text(encoding="utf-8"), filename=relative)
        for name in _imported_names(tree):
            todo += _files_of(name)
    return tuple(sorted(found))


def _imported_names(tree: ast.AST) -> Iterator[str]:
    """Dotted names of this package that `tree` imports (`pipeline.x`, and for `from pipeline.x
    import y` also `pipeline.x.y`, which may be a module)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if _ours(alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _ours(node.module):
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _ours(name: str) -> bool:
    return name == NAME or name.startswith(NAME + ".")


def _files_of(name: str) -> list[str]:
    """The files importing `name` runs: each package's `__init__.py` down to the module itself
    (nothing for a name that is not a module here: an attribute such as `__version__`)."""
    parts = name.split(".")[1:]
    files = []
    for depth in range(len(parts) + 1):
        folder = Path(*parts[:depth])
        if (PACKAGE / folder / "__init__.py").is_file():
            files.append((folder / "__init__.py").as_posix())
        elif depth == len(parts) and (PACKAGE / folder.with_suffix(".py")).is_file():
            files.append(folder.with_suffix(".py").as_posix())
        else:
            break
    return files


@contextmanager
def staged() -> Iterator[str]:
    """A temporary `pipeline/` folder holding only the served files, for `code_paths`; removed
    afterwards. Hard links where the file system allows (nothing copied), else copies."""
    with tempfile.TemporaryDirectory(prefix="ffn-model-code-") as scratch:
        folder = Path(scratch, NAME)
        for relative in served_files():
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(PACKAGE / relative, target)
            except OSError:
                shutil.copyfile(PACKAGE / relative, target)
        yield str(folder)
