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
    return _shuffled(x, np.repeat(np.arange(centers), sizes), rng)


def moons(cfg: DataConfig) -> Dataset:
    x, y = make_moons(cfg.n_samples, cfg.noise, cfg.random_state)
    return _classification(x, y, 2, "moons")


def circles(cfg: DataConfig) -> Dataset:
    x, y = make_circles(cfg.n_samples, cfg.noise, 0.5, cfg.random_state)
    return _classification(x, y, 2, "circles")


def make_moons(n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's `make_moons(n_samples, noise=noise or None, random_state=seed)`, bit for bit,
    without its import (see `make_blobs`): two half circles, the lower one shifted right."""
    outer, inner = np.linspace(0, np.pi, n_samples // 2), np.linspace(0, np.pi, n_samples - n_samples // 2)
    return _two_curves(np.cos(outer), np.sin(outer), 1 - np.cos(inner), 1 - np.sin(inner) - 0.5, noise, seed)


def make_circles(n_samples: int, noise: float, factor: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's `make_circles(n_samples, noise=noise or None, factor=factor,
    random_state=seed)`, bit for bit, without its import: a circle around a smaller one."""
    outer = np.linspace(0, 2 * np.pi, n_samples // 2, endpoint=False)
    inner = np.linspace(0, 2 * np.pi, n_samples - n_samples // 2, endpoint=False)
    return _two_curves(
        np.cos(outer), np.sin(outer), np.cos(inner) * factor, np.sin(inner) * factor, noise, seed
    )


def _two_curves(
    outer_x: np.ndarray,
    outer_y: np.ndarray,
    inner_x: np.ndarray,
    inner_y: np.ndarray,
    noise: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 on the outer curve, 1 on the inner, shuffled, then Gaussian noise (none for 0)."""
    rng = np.random.RandomState(seed)
    x = np.vstack([np.append(outer_x, inner_x), np.append(outer_y, inner_y)]).T
    y = np.hstack([np.zeros(len(outer_x), dtype=np.intp), np.ones(len(inner_x), dtype=np.intp)])
    x, y = _shuffled(x, y, rng)
    if noise:
        x += rng.normal(scale=noise, size=x.shape)
    return x, y


def _shuffled(x: np.ndarray, y: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """The rows of `x` and `y` in one order drawn from `rng`, as scikit-learn's generators shuffle."""
    order = np.arange(len(y))
    rng.shuffle(order)
    return x[order], y[order]


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
