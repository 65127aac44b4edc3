"""Plot files: CSV for `dvc plots`, PNG for MLflow. Written atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import write_bytes, write_text


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(6, 4.5), dpi=100)


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    write_bytes(path, lambda handle: fig.savefig(handle, format="png"))
    plt.close(fig)


def learning_curves_png(path: Path, history: list[dict[str, float]]) -> None:
    plt, (fig, ax) = _figure()
    epochs = [row["epoch"] for row in history]
    for key in ("train_loss", "val_loss"):
        if history and key in history[0]:
            ax.plot(epochs, [row[key] for row in history], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    second = next((k for k in ("val_accuracy", "train_accuracy") if history and k in history[0]), None)
    if second:
        twin = ax.twinx()
        twin.plot(epochs, [row[second] for row in history], color="tab:green", label=second)
        twin.set_ylabel(second)
        twin.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title("Learning curves")
    _save(plt, fig, path)


def confusion_png(path: Path, counts: np.ndarray, class_names: list[str]) -> None:
    plt, (fig, ax) = _figure()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45 if len(class_names) > 4 else 0)
    ax.set_yticks(ticks, class_names)
    if len(class_names) <= 20:
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix (test)")
    _save(plt, fig, path)


def predictions_png(path: Path, y_true: np.ndarray, y_pred: np.ndarray) -> None:
    plt, (fig, ax) = _figure()
    ax.scatter(y_true, y_pred, s=12, alpha=0.7)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="gray", linestyle="--", label="y = x")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.legend()
    ax.set_title("Predictions against the truth (test)")
    _save(plt, fig, path)
