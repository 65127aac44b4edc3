"""scikit-learn's generators and the linear-regression toy set."""

from __future__ import annotations

import numpy as np

from pipeline.config import DataConfig
from pipeline.data.dataset import Dataset


def _classification(x: np.ndarray, y: np.ndarray, n_classes: int, source: str) -> Dataset:
    return Dataset(
        features=x.astype(np.float32),
        targets=y.astype(np.int64),
        task="binary" if n_classes == 2 else "multiclass",
        feature_names=[f"x{i}" for i in range(x.shape[1])],
        class_names=[str(c) for c in range(n_classes)],
        source=source,
    )


def blobs(cfg: DataConfig) -> Dataset:
    from sklearn.datasets import make_blobs

    x, y = make_blobs(
        n_samples=cfg.n_samples,
        centers=cfg.centers,
        n_features=cfg.n_features,
        cluster_std=cfg.cluster_std,
        random_state=cfg.random_state,
    )
    return _classification(x, y, cfg.centers, "blobs")


def moons(cfg: DataConfig) -> Dataset:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=cfg.n_samples, noise=cfg.noise or None, random_state=cfg.random_state)
    return _classification(x, y, 2, "moons")


def circles(cfg: DataConfig) -> Dataset:
    from sklearn.datasets import make_circles

    x, y = make_circles(
        n_samples=cfg.n_samples, noise=cfg.noise or None, factor=0.5, random_state=cfg.random_state
    )
    return _classification(x, y, 2, "circles")


def linear(cfg: DataConfig) -> Dataset:
    """y = weight * x + bias on arange(start, end, step), plus optional Gaussian noise."""
    x = np.arange(cfg.start, cfg.end, cfg.step, dtype=np.float32)  # (n,)
    y = cfg.weight * x + cfg.bias
    if cfg.noise:
        y = y + np.random.default_rng(cfg.random_state).normal(0.0, cfg.noise, size=y.shape)
    return Dataset(
        features=x[:, None],  # (n, 1)
        targets=np.asarray(y, dtype=np.float32),
        task="regression",
        feature_names=["x"],
        source="linear",
    )
