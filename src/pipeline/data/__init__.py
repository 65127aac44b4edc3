"""Dataset registry: `data.source` names one function from config to `Dataset`."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config import DataConfig
from pipeline.data import images, synthetic, tabular
from pipeline.data.dataset import Dataset, fingerprint, load_dataset, save_dataset

SOURCES: dict[str, Callable[[DataConfig], Dataset]] = {
    "blobs": synthetic.blobs,
    "moons": synthetic.moons,
    "circles": synthetic.circles,
    "linear": synthetic.linear,
    "digits": images.digits,
    "mnist": images.mnist,
    "fashion_mnist": images.fashion_mnist,
    "csv": tabular.csv,
}


def make_dataset(cfg: DataConfig) -> Dataset:
    return SOURCES[cfg.source](cfg)


__all__ = ["SOURCES", "Dataset", "fingerprint", "load_dataset", "make_dataset", "save_dataset"]
