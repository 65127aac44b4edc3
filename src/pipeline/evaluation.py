"""Test metrics and plot data (pure: arrays in, numbers and rows out)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.model import predict_outputs


@torch.no_grad()
def predict(
    model: nn.Module,
    features: np.ndarray,
    loss: str,
    batch_size: int = 8192,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Class probabilities (n, classes) or predictions (n,), as float64."""
    model.eval().to(device)
    chunks = []
    for start in range(0, len(features), batch_size):
        xb = torch.tensor(features[start : start + batch_size], device=device).float()
        chunks.append(predict_outputs(model(xb), loss).double().cpu())
    if not chunks:
        return np.zeros((0,), dtype=np.float64)
    return torch.cat(chunks).numpy()


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[actual, predicted]"""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    y_pred = probs.argmax(axis=1)
    counts = confusion_matrix(y_true, y_pred, len(class_names))
    tp = np.diag(counts).astype(np.float64)
    predicted, actual = counts.sum(axis=0), counts.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    eps = np.finfo(probs.dtype).eps
    p_true = np.clip(probs[np.arange(len(y_true)), y_true] / probs.sum(axis=1), eps, 1 - eps)
    return {
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": float(f1.mean()),
        "log_loss": float(-np.log(p_true).mean()),
        "n": len(y_true),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual[i]),
            }
            for i, name in enumerate(class_names)
        },
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    y_true = y_true.astype(np.float64)
    err = y_pred - y_true
    mse = float(np.mean(err**2))
    total = float(np.sum((y_true - y_true.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / total if total > 0 else 0.0
    return {"mse": mse, "rmse": mse**0.5, "mae": float(np.mean(np.abs(err))), "r2": r2, "n": len(y_true)}


def flat_metrics(metrics: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
    """{'accuracy': .9, 'per_class': {'0': {'recall': 1}}} -> {'test_accuracy': .9, 'test_recall_0': 1}"""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "per_class":
            for name, scores in value.items():
                safe = "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)
                for score, number in scores.items():
                    flat[f"{prefix}{score}_{safe}"] = float(number)
        elif key != "n":
            flat[f"{prefix}{key}"] = float(value)
    return flat


def confusion_rows(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> list[dict[str, str]]:
    """One row per test sample, as DVC's confusion template reads them."""
    return [
        {"actual": class_names[a], "predicted": class_names[p]} for a, p in zip(y_true, y_pred, strict=True)
    ]


def prediction_rows(y_true: np.ndarray, y_pred: np.ndarray) -> list[dict[str, float]]:
    return [{"actual": float(a), "predicted": float(p)} for a, p in zip(y_true, y_pred, strict=True)]
