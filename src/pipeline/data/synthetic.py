"""The blobs, moons and circles of scikit-learn's generators, and the linear-regression toy set."""

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
    x, y = make_blobs(cfg.n_samples, cfg.centers, cfg.n_features, cfg.cluster_std, cfg.random_state)
    return _classification(x, y, cfg.centers, "blobs")


def make_blobs(
    n_samples: int, centers: int, n_features: int, cluster_std: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's `make_blobs(n_samples, n_features, centers=<a count>, cluster_std,
    random_state=seed)`: the same draws from the same seeded generator, so the same arrays, bit
    for bit (`tests/test_data.py` compares them), without importing scikit-learn, which is 1.5 s
    of the data stage's 2: centers uniform in a ±10 box, the rows of each in turn (the first
    n_samples % centers get one more), then the rows shuffled."""
    rng = np.random.RandomState(seed)
    middles = rng.uniform(-10.0, 10.0, size=(centers, n_features))
    sizes = [n_samples // centers + (i < n_samples % centers) for i in range(centers)]
    x = np.concatenate(
        [rng.normal(loc=middles[i], scale=cluster_std, size=(n, n_features)) for i, n in enumerate(sizes)]
    )
    y = np.repeat(np.arange(centers), sizes)
    order = np.arange(n_samples)
    rng.shuffle(order)
    return x[order], y[order]


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
