"""Train / val / test split: seeded and stratified, in order, or the dataset's own test set."""

from __future__ import annotations

import numpy as np

from pipeline.config import SplitConfig
from pipeline.data.dataset import Dataset
from pipeline.errors import PipelineError

PARTS = ("train", "val", "test")


def split_indices(ds: Dataset, cfg: SplitConfig) -> dict[str, np.ndarray]:
    n = len(ds.targets)
    if cfg.method == "ordered":
        n_train = round(cfg.train * n)
        n_val = round(cfg.val * n)
        order = np.arange(n)
        parts = {
            "train": order[:n_train],
            "val": order[n_train : n_train + n_val],
            "test": order[n_train + n_val :],
        }
    elif cfg.method == "predefined":
        if ds.is_test is None:
            raise PipelineError(
                f"data source {ds.source} has no test set of its own; use split.method random"
            )
        test = np.flatnonzero(ds.is_test)
        train, val = _random(ds, np.flatnonzero(~ds.is_test), cfg.val / (cfg.train + cfg.val), cfg)
        parts = {"train": train, "val": val, "test": test}
    else:
        rest, test = _random(ds, np.arange(n), cfg.test, cfg)
        train, val = _random(ds, rest, cfg.val / (cfg.train + cfg.val), cfg)
        parts = {"train": train, "val": val, "test": test}
    for name in ("train", "test"):
        if len(parts[name]) == 0:
            raise PipelineError(f"split.{name} = {getattr(cfg, name)} leaves no {name} rows of {n}")
    if cfg.val > 0 and len(parts["val"]) == 0:
        raise PipelineError(f"split.val = {cfg.val} leaves no validation rows of {n}")
    return parts


def _random(
    ds: Dataset, index: np.ndarray, fraction: float, cfg: SplitConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Split `index` into (keep, taken), `fraction` of it taken; same call as the tutorials'."""
    fraction = round(fraction, 12)  # 0.1 / (0.7 + 0.1) is 0.12500000000000003: sklearn would round up
    if fraction == 0:
        return index, index[:0]
    from sklearn.model_selection import train_test_split

    stratify = ds.targets[index] if cfg.stratify and ds.task != "regression" else None
    try:
        keep, taken = train_test_split(index, test_size=fraction, random_state=cfg.seed, stratify=stratify)
    except ValueError as exc:
        raise PipelineError(f"cannot split {len(index)} rows with split.stratify on: {exc}") from None
    return keep, taken


def split_dataset(ds: Dataset, cfg: SplitConfig) -> dict[str, Dataset]:
    return {name: ds.subset(index) for name, index in split_indices(ds, cfg).items()}
