"""Write small MNIST-style IDX files, so torchvision's MNIST and FashionMNIST load offline."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def write_images(path: Path, images: np.ndarray) -> None:
    """(n, rows, cols) uint8 -> an idx3-ubyte file: magic, three big-endian dims, then the pixels."""
    images = np.asarray(images, dtype=np.uint8)
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", IMAGE_MAGIC, n, rows, cols) + images.tobytes(order="C"))


def write_labels(path: Path, labels: np.ndarray) -> None:
    """(n,) values 0..255 -> an idx1-ubyte file: magic, one big-endian dim, then the labels."""
    labels = np.asarray(labels, dtype=np.uint8)
    path.write_bytes(struct.pack(">II", LABEL_MAGIC, len(labels)) + labels.tobytes())


def write_idx_dataset(
    root: Path, name: str = "MNIST", n_train: int = 30, n_test: int = 10, seed: int = 0, size: int = 28
) -> dict[str, np.ndarray]:
    """Random images and labels in <root>/<name>/raw, as torchvision expects them with download=False.

    Returns what was written: train_images (n_train, size, size), train_labels, test_images, test_labels.
    """
    rng = np.random.default_rng(seed)
    written = {
        "train_images": rng.integers(0, 256, size=(n_train, size, size), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, size, size), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_images(raw / IDX_NAMES[0], written["train_images"])
    write_labels(raw / IDX_NAMES[1], written["train_labels"])
    write_images(raw / IDX_NAMES[2], written["test_images"])
    write_labels(raw / IDX_NAMES[3], written["test_labels"])
    return written
