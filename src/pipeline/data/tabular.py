"""A user's CSV: numeric feature columns and one target column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import DataConfig
from pipeline.data.dataset import Dataset
from pipeline.errors import ConfigError, PipelineError


def csv(cfg: DataConfig) -> Dataset:
    import pandas as pd

    path = Path(cfg.path or "")
    if not path.is_file():
        raise ConfigError("data.path", cfg.path, "an existing CSV file")
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if cfg.target not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise ConfigError("data.target", cfg.target, f"a column of {path}: {columns}")
    if len(frame) < 4:
        raise PipelineError(f"{path}: {len(frame)} rows; at least 4 are needed to split and train")
    features = frame.drop(columns=[cfg.target])
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise PipelineError(f"{path}: column {bad[0]!r} is not numeric; feature columns must be numbers")
    if features.shape[1] == 0:
        raise PipelineError(f"{path}: no feature columns besides the target {cfg.target!r}")
    x = features.to_numpy(dtype=np.float32)
    if not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise PipelineError(f"{path}: row {row + 2} has a missing or infinite feature value")
    target = frame[cfg.target]
    if target.isna().any():
        raise PipelineError(f"{path}: target column {cfg.target!r} has missing values")
    task = cfg.task
    if task == "auto":
        numeric = pd.api.types.is_numeric_dtype(target)
        integral = numeric and np.all(np.mod(target.to_numpy(dtype=float), 1) == 0)
        task = "regression" if numeric and not (integral and target.nunique() <= 20) else "multiclass"
        if task == "multiclass" and target.nunique() == 2:
            task = "binary"
    names = [str(c) for c in features.columns]
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(target):
            raise PipelineError(
                f"{path}: target {cfg.target!r} is not numeric; set data.task to multiclass or binary"
            )
        return Dataset(x, target.to_numpy(dtype=np.float32), "regression", names, source="csv")
    classes = sorted(target.unique(), key=lambda v: (str(type(v)), v))
    if task == "binary" and len(classes) != 2:
        raise ConfigError("data.task", "binary", f"multiclass: {cfg.target!r} has {len(classes)} classes")
    lookup = {value: i for i, value in enumerate(classes)}
    y = target.map(lookup).to_numpy(dtype=np.int64)
    return Dataset(x, y, task, names, [str(c) for c in classes], source="csv")
