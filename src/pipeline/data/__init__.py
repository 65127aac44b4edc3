"""Dataset registry: `data.source` names a function from config to `Dataset`.

Each source's module is imported when it is asked for, so the stages that only read dataset
files (split, train, evaluate) import `dataset.py` alone and depend on it alone in dvc.yaml.
"""

from __future__ import annotations

from importlib import import_module

from pipeline.config import DataConfig
from pipeline.data.dataset import Dataset, fingerprint, load_dataset, save_dataset

# data.source -> the module of pipeline.data whose function of that name makes it
SOURCES: dict[str, str] = {
    "blobs": "synthetic",
    "moons": "synthetic",
    "circles": "synthetic",
    "linear": "synthetic",
    "digits": "images",
    "mnist": "images",
    "fashion_mnist": "images",
    "csv": "tabular",
}


def make_dataset(cfg: DataConfig) -> Dataset:
    module = import_module(f"pipeline.data.{SOURCES[cfg.source]}")
    return getattr(module, cfg.source)(cfg)


__all__ = ["SOURCES", "Dataset", "fingerprint", "load_dataset", "make_dataset", "save_dataset"]
