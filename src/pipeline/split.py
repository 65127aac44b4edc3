"""Train / val / test split: seeded and stratified, in order, or the dataset's own test set."""

from __future__ import annotations

import math

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
    fraction = round(fraction, 12)  # 0.1 / (0.7 + 0.1) is 0.12500000000000003: ceil would round up
    if fraction == 0:
        return index, index[:0]
    stratify = ds.targets[index] if cfg.stratify and ds.task != "regression" else None
    keep, taken = train_test_split(index, fraction, cfg.seed, stratify)
    return index[keep], index[taken]


def train_test_split(
    index: np.ndarray, fraction: float, seed: int, stratify: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `index` kept and taken, as scikit-learn's `train_test_split(index,
    test_size=fraction, random_state=seed, stratify=stratify)` draws them: the same draws from the
    same seeded generator, so the tutorials' splits (`tests/test_split.py` compares them), without
    importing scikit-learn, which is 1.5 s of the split stage's 2. ceil(fraction * n) rows are
    taken; stratified, each class gives its share of both parts, ties in the rounding drawn."""
    n = len(index)
    n_taken = math.ceil(fraction * n)
    n_kept = n - n_taken
    if n_kept == 0:
        raise PipelineError(f"cannot split {n} rows: taking {fraction:g} of them leaves none")
    rng = np.random.RandomState(seed)
    if stratify is None:
        order = rng.permutation(n)
        return order[n_taken:], order[:n_taken]
    classes, of_class, counts = np.unique(stratify, return_inverse=True, return_counts=True)
    smaller = min(n_kept, n_taken)
    if counts.min() < 2:
        reason = f"class {classes[counts < 2][0]} has a single row"
    elif smaller < len(classes):
        reason = f"{smaller} rows cannot hold all {len(classes)} classes"
    else:
        reason = ""
    if reason:
        raise PipelineError(f"cannot split {n} rows with split.stratify on: {reason}")
    members = np.split(np.argsort(of_class, kind="stable"), np.cumsum(counts)[:-1])
    kept_counts = _shares(counts, n_kept, rng)
    taken_counts = _shares(counts - kept_counts, n_taken, rng)
    kept, taken = [], []
    for rows, n_k, n_t in zip(members, kept_counts, taken_counts, strict=True):
        shuffled = rows[rng.permutation(len(rows))]
        kept.append(shuffled[:n_k])
        taken.append(shuffled[n_k : n_k + n_t])
    return rng.permutation(np.concatenate(kept)), rng.permutation(np.concatenate(taken))


def _shares(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """`draws` rows shared among classes of `counts` rows in proportion, each share rounded down,
    then one more for the largest remainders, ties among them drawn from `rng`."""
    exact = counts / counts.sum() * draws
    shares = np.floor(exact)
    missing = int(draws - shares.sum())
    remainder = exact - shares
    for value in np.sort(np.unique(remainder))[::-1] if missing > 0 else []:
        (tied,) = np.where(remainder == value)
        now = min(len(tied), missing)
        shares[rng.choice(tied, size=now, replace=False)] += 1
        missing -= now
        if missing == 0:
            break
    return shares.astype(int)


def split_dataset(ds: Dataset, cfg: SplitConfig) -> dict[str, Dataset]:
    return {name: ds.subset(index) for name, index in split_indices(ds, cfg).items()}
