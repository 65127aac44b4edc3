"""The pyfunc model `mlflow models serve` runs: named features in, labels or values out."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd


def output_columns(record: dict[str, Any]) -> list[str]:
    if record["task"] == "regression":
        return ["prediction"]
    return ["label"] + [f"prob_{name}" for name in record["class_names"]]


def signature(record: dict[str, Any]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("double", name) for name in record["feature_names"]])
    if record["task"] == "regression":
        outputs = Schema([ColSpec("double", "prediction")])
    else:
        outputs = Schema(
            [ColSpec("string", "label")] + [ColSpec("double", c) for c in output_columns(record)[1:]]
        )
    return ModelSignature(inputs=inputs, outputs=outputs)


@functools.cache
def pip_requirements() -> list[str]:
    """Pinned to what trained the model; explicit, so MLflow need not infer them (slow). Read
    once per process: every checkpoint logged as a model asks again."""
    pins = []
    for name in ("mlflow", "torch", "numpy", "pandas", "pydantic", "pyyaml"):
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def answer(record: dict[str, Any], outputs: np.ndarray) -> pd.DataFrame:
    """Model outputs (probabilities or values) -> the served table."""
    if record["task"] == "regression":
        return pd.DataFrame({"prediction": outputs})
    names = np.asarray(record["class_names"], dtype=object)
    table = {"label": names[outputs.argmax(axis=1)]}
    table.update({col: outputs[:, i] for i, col in enumerate(output_columns(record)[1:])})
    return pd.DataFrame(table)


def checked_features(frame: Any, names: list[str]) -> np.ndarray:
    """Named columns (any order) or exactly len(names) unnamed ones -> finite float32 rows.

    Raises MlflowException(INVALID_PARAMETER_VALUE): the scoring server answers 400, not 500.
    """
    if isinstance(frame, pd.DataFrame) and set(names) <= set(map(str, frame.columns)):
        frame = frame[names]
    else:
        frame = pd.DataFrame(
            np.asarray(frame, dtype=object) if not isinstance(frame, pd.DataFrame) else frame
        )
    if frame.ndim != 2 or frame.shape[1] != len(names):
        raise _bad_input(
            f"expected {len(names)} feature columns ({', '.join(names[:8])}), got {frame.shape[-1]}"
        )
    if len(frame) == 0:
        raise _bad_input("no rows to score")
    try:
        features = frame.to_numpy(dtype=np.float32)
    except (TypeError, ValueError):
        raise _bad_input("every feature must be a number") from None
    bad = ~np.isfinite(features)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise _bad_input(f"row {row}, feature {names[col]}: {features[row, col]} is not a finite number")
    return features


def _bad_input(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class FFNModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from pipeline.checkpoints import load_model

        self.model, self.record = load_model(context.artifacts["model"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from pipeline.evaluation import predict

        features = checked_features(model_input, self.record["feature_names"])
        outputs = predict(self.model, features, self.record["loss"])
        return answer(self.record, outputs)


mlflow.models.set_model(FFNModel())  # this file is the model's code ("models from code")
