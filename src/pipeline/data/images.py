"""Image datasets flattened to rows of uint8 pixels: scikit-learn's digits, torchvision's MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import DataConfig
from pipeline.data.dataset import Dataset
from pipeline.errors import PipelineError

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, pixels 0..16): works offline."""
    features, targets = _bundled_digits()
    return Dataset(
        features=features.astype(np.uint8),  # (1797, 64)
        targets=targets.astype(np.int64),
        task="multiclass",
        feature_names=[f"pixel_{i}" for i in range(64)],
        class_names=[str(c) for c in range(10)],
        source="digits",
        scale=16.0,
        image_shape=[8, 8],
    )


def _bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64), labels (1797,)) read from the CSV scikit-learn ships, as its
    `load_digits` reads it, without importing scikit-learn (1.5 s: it imports scipy and pandas);
    `load_digits` itself where the file is not where scikit-learn keeps it."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as rows:
                table = np.loadtxt(rows, delimiter=",")  # 64 pixels, then the label
            return table[:, :-1], table[:, -1].astype(int)
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


def _torchvision(cfg: DataConfig, name: str, source: str) -> Dataset:
    import torchvision

    cls = getattr(torchvision.datasets, name)
    root = Path(cfg.root)
    parts = []
    for train in (True, False):
        try:
            parts.append(cls(root=str(root), train=train, download=cfg.download))
        except (RuntimeError, OSError) as exc:
            raw = root / name / "raw"
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PipelineError(
                f"{name} is not under {raw} and could not be downloaded ({reason}); "
                f"put {', '.join(IDX_FILES)} (or their .gz) in {raw}, or set data.root"
            ) from None
    train, test = parts
    images = np.concatenate([train.data.numpy(), test.data.numpy()])  # (n, h, w) uint8
    targets = np.concatenate([train.targets.numpy(), test.targets.numpy()]).astype(np.int64)
    h, w = images.shape[1:]
    return Dataset(
        features=images.reshape(len(images), h * w),  # (n, h*w)
        targets=targets,
        task="multiclass",
        feature_names=[f"pixel_{i}" for i in range(h * w)],
        class_names=list(train.classes),
        source=source,
        scale=255.0,
        image_shape=[h, w],
        is_test=np.concatenate([np.zeros(len(train), bool), np.ones(len(test), bool)]),
    )


def mnist(cfg: DataConfig) -> Dataset:
    return _torchvision(cfg, "MNIST", "mnist")


def fashion_mnist(cfg: DataConfig) -> Dataset:
    return _torchvision(cfg, "FashionMNIST", "fashion_mnist")
