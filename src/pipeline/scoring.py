"""`pipeline predict`: score a CSV with any model — a run's, a registry alias, a checkpoint file."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.files import write_text

Scorer = Callable[[pd.DataFrame], pd.DataFrame]


def load_scorer(uri: str) -> tuple[Scorer, list[str]]:
    """(score a frame of named features, the feature names) for a file path or an MLflow URI."""
    if Path(uri).is_file():
        from pipeline import serving
        from pipeline.checkpoints import load_model
        from pipeline.evaluation import predict

        model, record = load_model(uri)

        def score(frame: pd.DataFrame) -> pd.DataFrame:
            features = serving.checked_features(frame, record["feature_names"])
            return serving.answer(record, predict(model, features, record["loss"]))

        return score, list(record["feature_names"])
    if "://" not in uri and ":/" not in uri:
        raise PipelineError(f"--model {uri}: no such file, and not an MLflow URI (runs:/, models:/)")
    import mlflow

    from pipeline.tracking import existing_store

    mlflow.set_tracking_uri(existing_store(f"--model {uri}"))
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MLflow raises several kinds for a bad URI
        raise PipelineError(f"--model {uri}: cannot load ({str(exc).splitlines()[0]})") from None
    schema = loaded.metadata.get_input_schema()
    names = schema.input_names() if schema is not None else []
    return loaded.predict, list(names)


def read_features(path: Path, names: list[str]) -> pd.DataFrame:
    """A CSV with a header naming the features (any order, extra columns ignored), or exactly
    len(names) unnamed numeric columns in the model's order."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"--input {path}: cannot read ({exc})") from None
    if not text.strip():
        raise PipelineError(f"--input {path}: the file is empty")
    try:
        frame = pd.read_csv(io.StringIO(text))
        if not set(names) <= set(map(str, frame.columns)):
            frame = pd.read_csv(io.StringIO(text), header=None)
            if frame.shape[1] != len(names):
                raise PipelineError(
                    f"--input {path}: {frame.shape[1]} columns; expected a header naming "
                    f"{', '.join(names[:8])}{'...' if len(names) > 8 else ''} or {len(names)} unnamed columns"
                )
            frame.columns = names
    except (ValueError, pd.errors.ParserError) as exc:
        raise PipelineError(f"--input {path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    frame.columns = frame.columns.map(str)
    return frame[names]


def predict_file(uri: str, input_path: Path, output_path: Path) -> int:
    score, names = load_scorer(uri)
    frame = read_features(input_path, names)
    try:
        numbers = frame.apply(pd.to_numeric, errors="raise").astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise PipelineError(f"--input {input_path}: a feature is not a number ({exc})") from None
    try:
        answers = score(numbers)
    except Exception as exc:
        raise PipelineError(f"--input {input_path}: {str(exc).splitlines()[0]}") from None
    write_text(output_path, pd.DataFrame(answers).to_csv(index=False))
    return len(answers)
