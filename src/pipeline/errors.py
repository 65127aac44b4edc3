"""The two kinds of user-facing failure: a bad configuration (exit 2) and a bad input (exit 1)."""

from __future__ import annotations

from typing import Any


class PipelineError(Exception):
    """A problem with the user's input or environment, reported as one line, exit code 1."""

    exit_code = 1


class ConfigError(PipelineError):
    """A bad value in params.yaml or an override: names the key, the value and what is allowed."""

    exit_code = 2

    def __init__(
        self,
        key: str,
        value: Any,
        allowed: str,
        *,
        unknown: bool = False,
        location: str | None = None,
    ) -> None:
        self.key, self.value, self.allowed, self.unknown = key, value, allowed, unknown
        self.location = location
        super().__init__(key)

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        shown = _short(self.value)
        if self.unknown:
            return f"{where}unknown key {self.key} (value {shown}); known keys here: {self.allowed}"
        return f"{where}{self.key} = {shown}: expected {self.allowed}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
