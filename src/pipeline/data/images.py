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
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Dataset(
        features=bunch.data.astype(np.uint8),  # (1797, 64)
        targets=bunch.target.astype(np.int64),
        task="multiclass",
        feature_names=[f"pixel_{i}" for i in range(64)],
        class_names=[str(c) for c in bunch.target_names],
        source="digits",
        scale=16.0,
        image_shape=[8, 8],
    )


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
