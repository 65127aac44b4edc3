"""A training's history as checkpoints (one tensor per metric) and history.json (a line per row)
hold it: the same rows back, ints as ints and floats bit for bit."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from pipeline.history import json_text, packed, unpacked

ROWS = [
    {"epoch": 1, "train_loss": 0.1 + 0.2, "val_loss": math.nan, "lr": 1e-300},
    {"epoch": 2, "train_loss": math.inf, "val_loss": -0.0, "lr": 5e-324},
    {"epoch": 3, "train_loss": 1 / 3, "val_loss": 2.0**60, "lr": 0.5},
]


def _exactly(rows: list[dict]) -> list[list[tuple[str, type, str]]]:
    """Each row's keys in order, types and values' reprs (NaN equal to NaN, -0.0 not to 0.0)."""
    return [[(k, type(v), repr(v)) for k, v in row.items()] for row in rows]


def test_packed_rows_come_back_as_they_were_through_a_weights_only_load():
    saved = packed(ROWS)
    assert set(saved["columns"]) == set(ROWS[0]) and saved["columns"]["epoch"].dtype == torch.int64
    buffer = io.BytesIO()
    torch.save({"history": saved}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["history"]
    assert _exactly(unpacked(loaded)) == _exactly(ROWS)


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.4, "test_loss": 0.3}],  # keys differ
        [{"epoch": 1, "loss": 0.5}, {"loss": 0.4, "epoch": 2}],  # key order differs
        [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 1}],  # a column of ints and floats
        [{"epoch": 1, "improved": True}],
        [{"epoch": 1, "loss": None}],
    ],
)
def test_rows_that_do_not_fit_columns_stay_as_they_are(rows):
    assert packed(rows) is rows
    assert unpacked(rows) is rows  # an older checkpoint's list too


def test_history_json_reads_back_the_document_with_a_line_per_row():
    document = {
        "stop_reason": "epochs",
        "epochs": 3,
        "resumed_from": None,
        "history": ROWS,
        "test_history": [],
        "nested": {"a": [1, 2]},
    }
    text = json_text(document)
    back = json.loads(text)
    assert list(back) == list(document)
    assert _exactly(back["history"]) == _exactly(ROWS)
    assert {k: v for k, v in back.items() if k != "history"} == {
        k: v for k, v in document.items() if k != "history"
    }
    lines = text.splitlines()
    assert text.endswith("}\n") and sum(line.lstrip().startswith('{"epoch"') for line in lines) == len(ROWS)
