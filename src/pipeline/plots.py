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
    """A figure drawn straight onto the Agg canvas: no pyplot (its import and global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    write_bytes(path, lambda handle: fig.savefig(handle, format="png"))


def learning_curves_png(path: Path, history: list[dict[str, float]]) -> None:
    fig, ax = _figure()
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
    _save(fig, path)


def confusion_png(path: Path, counts: np.ndarray, class_names: list[str]) -> None:
    fig, ax = _figure()
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
    _save(fig, path)


def predictions_png(path: Path, y_true: np.ndarray, y_pred: np.ndarray) -> None:
    fig, ax = _figure()
    ax.scatter(y_true, y_pred, s=12, alpha=0.7)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="gray", linestyle="--", label="y = x")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.legend()
    ax.set_title("Predictions against the truth (test)")
    _save(fig, path)


def decision_regions_png(
    path: Path,
    classify: Any,
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: list[str],
    resolution: int = 300,
) -> None:
    """2-D data (train dots, test rings) over the classes the model predicts on a grid.

    `classify` maps an (n, 2) float32 array to (n,) class indices.
    """
    fig, ax = _figure()
    points = np.concatenate([x for x, _ in parts.values()]).astype(np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.1 * (high - low) + 1e-6
    xs = np.linspace(low[0] - margin[0], high[0] + margin[0], resolution)
    ys = np.linspace(low[1] - margin[1], high[1] + margin[1], resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)  # (resolution, resolution) each
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)  # (r*r, 2)
    regions = classify(grid).reshape(grid_x.shape)
    n = len(class_names)
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    ax.contourf(
        grid_x, grid_y, regions, levels=np.arange(n + 1) - 0.5, cmap=cmap, alpha=0.25, vmin=0, vmax=cmap.N - 1
    )
    for name, (x, y) in parts.items():
        style = (
            {"s": 10, "alpha": 0.6}
            if name == "train"
            else {"s": 28, "edgecolors": "black", "linewidths": 0.6}
        )
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap=cmap, vmin=0, vmax=cmap.N - 1, label=name, **style)
    ax.legend(loc="best")
    ax.set_xlabel("x0")
    ax.set_ylabel("x1")
    ax.set_title("Decision regions (train dots, test rings)")
    _save(fig, path)


def regression_fit_png(path: Path, predict: Any, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """1-D regression: the data against x, and the model's line over the whole range."""
    fig, ax = _figure()
    for name, (x, y) in parts.items():
        ax.scatter(x[:, 0], y, s=14, label=f"{name} data")
    points = np.concatenate([x for x, _ in parts.values()])
    line = np.linspace(points.min(), points.max(), 200, dtype=np.float32)[:, None]  # (200, 1)
    ax.plot(line[:, 0], predict(line), color="tab:red", label="model")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend()
    ax.set_title("Model against the data")
    _save(fig, path)


def compare_png(path: Path, curves: dict[str, list[tuple[int, float]]], metric: str, title: str) -> None:
    """One line per run: `metric` against its step."""
    fig, ax = _figure()
    for label, points in sorted(curves.items()):
        ax.plot([s for s, _ in points], [v for _, v in points], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.legend()
    ax.set_title(title)
    _save(fig, path)
