"""What the benchmark commands share on their command lines: bad arguments refused in one line
before any work, and JSON rows written whole or not at all to a path checked up front (a run
takes minutes; a typo in `--json` found after it would lose them)."""

from __future__ import annotations

import argparse
import json
import tempfile
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
    """An argparse type: where the rows will go, tried now by making (and removing) a file in its
    folder, as the atomic write will (access checks say yes to root everywhere)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file's path")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no folder {path.parent}")
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text}: cannot write there ({e.strerror})") from None
    return path


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """The rows as a JSON list, whole or not at all (the pipeline's atomic write)."""
    from pipeline.files import write_text

    write_text(path, json.dumps(rows, indent=2, default=str) + "\n")
