"""What the benchmark commands share on their command lines: bad arguments refused in one line
before any work, and JSON rows written whole or not at all to a path checked up front (a run
takes minutes; a typo in `--json` found after it would lose them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """argparse, its refusals in one line: `python -m benchmarks: argument --reps: ...`, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {value}")
    return value


def rows_path(text: str) -> Path:
    """An argparse type: where the rows will go, tried now by writing (and removing) the file the
    rows are first written to (access checks say yes to root everywhere)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file's path")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no folder {path.parent}")
    partial = _partial(path)
    try:
        partial.touch()
        partial.unlink()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text}: cannot write there ({e.strerror})") from None
    return path


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """The rows as a JSON list, whole or not at all: written beside `path`, then moved onto it."""
    partial = _partial(path)
    partial.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    partial.replace(path)


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")
