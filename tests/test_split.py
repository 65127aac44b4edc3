"""`split_indices` / `split_dataset`: random (seeded, stratified), ordered, predefined; the split stage."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import REPO, run_script
from idx import write_idx_dataset
from sklearn.model_selection import train_test_split

from pipeline import split as split_module
from pipeline import stages
from pipeline.config import DataConfig, SplitConfig, load_params
from pipeline.data import Dataset, fingerprint, load_dataset, make_dataset
from pipeline.errors import PipelineError
from pipeline.files import read_json
from pipeline.split import PARTS, split_dataset, split_indices


def _classes(n: int = 400, proportions=(0.5, 0.25, 0.15, 0.1), seed: int = 0) -> Dataset:
    """An imbalanced 4-class dataset; feature 0 is the row number, to check order and membership."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(proportions), size=n, p=list(proportions)).astype(np.int64)
    x = np.stack([np.arange(n), rng.normal(size=n)], axis=1).astype(np.float32)
    names = [str(c) for c in range(len(proportions))]
    return Dataset(x, y, "multiclass", ["row", "noise"], names, source="test")


def _regression(n: int = 100) -> Dataset:
    x = np.arange(n, dtype=np.float32)[:, None]
    return Dataset(x, (0.5 * x[:, 0] + 1).astype(np.float32), "regression", ["x"], source="test")


def _cfg(**values) -> SplitConfig:
    return SplitConfig(**{"train": 0.7, "val": 0.1, "test": 0.2, **values})


def _assert_partition(parts: dict[str, np.ndarray], n: int) -> None:
    assert set(parts) == set(PARTS)
    joined = np.concatenate([parts[name] for name in PARTS])
    assert len(joined) == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))  # disjoint and covering


# -- random ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("train", "val", "test"), [(0.7, 0.1, 0.2), (0.6, 0.2, 0.2), (0.8, 0.0, 0.2), (0.5, 0.25, 0.25)]
)
@pytest.mark.parametrize("stratify", [True, False])
def test_random_sizes_and_partition(train, val, test, stratify):
    ds = _classes(n=400)
    parts = split_indices(ds, _cfg(train=train, val=val, test=test, stratify=stratify))
    _assert_partition(parts, 400)
    # every fraction of 400 here is a whole number of rows: the sizes are exact
    sizes = {name: len(parts[name]) for name in PARTS}
    assert sizes == {"train": round(train * 400), "val": round(val * 400), "test": round(test * 400)}


def test_random_is_seeded():
    ds = _classes()
    a = split_indices(ds, _cfg(seed=3))
    b = split_indices(ds, _cfg(seed=3))
    c = split_indices(ds, _cfg(seed=4))
    for name in PARTS:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(np.sort(a["test"]), np.sort(c["test"]))
    assert not np.array_equal(np.sort(a["val"]), np.sort(c["val"]))


def test_random_is_shuffled():
    parts = split_indices(_classes(), _cfg())
    assert not np.array_equal(parts["train"], np.sort(parts["train"]))
    assert not np.array_equal(np.sort(parts["train"]), np.arange(len(parts["train"])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_is_stratified(seed):
    ds = _classes(n=403, seed=seed)
    whole = np.bincount(ds.targets, minlength=4) / len(ds.targets)
    parts = split_indices(ds, _cfg(seed=seed))
    for name in PARTS:
        counts = np.bincount(ds.targets[parts[name]], minlength=4)
        expected = whole * len(parts[name])
        assert np.all(np.abs(counts - expected) <= 1), (name, counts, expected)


def test_unstratified_split_is_a_different_split():
    ds = _classes()
    stratified = split_indices(ds, _cfg(stratify=True))
    plain = split_indices(ds, _cfg(stratify=False))
    assert not np.array_equal(stratified["test"], plain["test"])


@pytest.mark.parametrize("seed", [0, 42])
@pytest.mark.parametrize("test_size", [0.2, 0.25])
def test_random_without_val_is_the_tutorials_split(seed, test_size):
    ds = _classes(n=300, seed=seed)
    n = len(ds.targets)
    cfg = _cfg(train=1 - test_size, val=0.0, test=test_size, seed=seed)
    parts = split_indices(ds, cfg)
    train, test = train_test_split(np.arange(n), test_size=test_size, random_state=seed, stratify=ds.targets)
    np.testing.assert_array_equal(parts["test"], test)
    np.testing.assert_array_equal(parts["train"], train)
    assert len(parts["val"]) == 0


def test_random_without_val_unstratified_is_the_tutorials_split():
    ds = _classes(n=250)
    parts = split_indices(ds, _cfg(train=0.8, val=0.0, test=0.2, stratify=False, seed=7))
    _, test = train_test_split(np.arange(250), test_size=0.2, random_state=7)
    np.testing.assert_array_equal(parts["test"], test)


def test_split_dataset_rows_follow_the_indices():
    ds = _classes()
    cfg = _cfg()
    index = split_indices(ds, cfg)
    parts = split_dataset(ds, cfg)
    for name in PARTS:
        np.testing.assert_array_equal(parts[name].features[:, 0], index[name])  # feature 0 is the row
        np.testing.assert_array_equal(parts[name].targets, ds.targets[index[name]])
        assert parts[name].meta() == ds.meta()


def test_repository_params_split_sizes():
    # params.yaml: 1000 blobs rows at 0.7 / 0.1 / 0.2, so 700 / 100 / 200 rows, as `ordered` gives
    params = load_params(REPO / "params.yaml")
    ds = make_dataset(params.data)
    n = len(ds.targets)
    expected = {name: round(getattr(params.split, name) * n) for name in PARTS}
    assert sum(expected.values()) == n
    ordered = split_indices(ds, params.split.model_copy(update={"method": "ordered"}))
    assert {name: len(ordered[name]) for name in PARTS} == expected
    parts = split_indices(ds, params.split)
    assert {name: len(parts[name]) for name in PARTS} == expected


# -- ordered --------------------------------------------------------------------------------------
def test_ordered_train_then_test():
    ds = make_dataset(DataConfig(source="blobs", n_samples=5000, centers=3))
    parts = split_indices(ds, _cfg(train=0.8, val=0.0, test=0.2, method="ordered"))
    np.testing.assert_array_equal(parts["train"], np.arange(4000))
    np.testing.assert_array_equal(parts["test"], np.arange(4000, 5000))
    assert len(parts["val"]) == 0


def test_ordered_train_val_test():
    ds = _classes(n=200)
    parts = split_indices(ds, _cfg(train=0.6, val=0.15, test=0.25, method="ordered"))
    np.testing.assert_array_equal(parts["train"], np.arange(120))
    np.testing.assert_array_equal(parts["val"], np.arange(120, 150))
    np.testing.assert_array_equal(parts["test"], np.arange(150, 200))
    sliced = split_dataset(ds, _cfg(train=0.6, val=0.15, test=0.25, method="ordered"))
    np.testing.assert_array_equal(sliced["val"].features, ds.features[120:150])


def test_ordered_linear_keeps_x_increasing():
    ds = make_dataset(DataConfig(source="linear"))
    parts = split_dataset(ds, _cfg(train=0.8, val=0.0, test=0.2, method="ordered"))
    assert len(parts["train"].targets) == 40 and len(parts["test"].targets) == 10
    assert parts["train"].features.max() < parts["test"].features.min()


# -- predefined -----------------------------------------------------------------------------------
def _with_test_rows(n: int = 100, n_test: int = 30) -> Dataset:
    ds = _classes(n=n)
    ds.is_test = np.zeros(n, bool)
    ds.is_test[np.random.default_rng(1).choice(n, n_test, replace=False)] = True
    return ds


def test_predefined_uses_the_datasets_test_rows():
    ds = _with_test_rows()
    cfg = _cfg(train=0.6, val=0.2, test=0.2, method="predefined")
    parts = split_indices(ds, cfg)
    _assert_partition(parts, 100)
    np.testing.assert_array_equal(parts["test"], np.flatnonzero(ds.is_test))
    rest = np.flatnonzero(~ds.is_test)
    assert not ds.is_test[parts["val"]].any() and not ds.is_test[parts["train"]].any()
    # val is split.val / (split.train + split.val) of the 70 non-test rows: a quarter
    assert abs(len(parts["val"]) - 0.25 * len(rest)) <= 1
    _, val = train_test_split(rest, test_size=0.25, random_state=cfg.seed, stratify=ds.targets[rest])
    np.testing.assert_array_equal(parts["val"], val)


def test_predefined_without_val():
    ds = _with_test_rows()
    parts = split_indices(ds, _cfg(train=0.8, val=0.0, test=0.2, method="predefined"))
    np.testing.assert_array_equal(parts["test"], np.flatnonzero(ds.is_test))
    np.testing.assert_array_equal(np.sort(parts["train"]), np.flatnonzero(~ds.is_test))
    assert len(parts["val"]) == 0


def test_predefined_on_mnist_files(tmp_path):
    write_idx_dataset(tmp_path, "MNIST", n_train=40, n_test=12, seed=3)
    ds = make_dataset(DataConfig(source="mnist", root=str(tmp_path), download=False))
    cfg = _cfg(train=0.7, val=0.1, test=0.2, method="predefined", stratify=False)
    parts = split_dataset(ds, cfg)
    assert len(parts["test"].targets) == 12
    np.testing.assert_array_equal(parts["test"].features, ds.features[40:])
    assert len(parts["val"].targets) + len(parts["train"].targets) == 40
    assert len(parts["val"].targets) == 5  # 0.1 / (0.7 + 0.1) of the 40 training images


def test_predefined_without_test_rows():
    with pytest.raises(PipelineError) as info:
        split_indices(_classes(), _cfg(method="predefined"))
    text = str(info.value)
    assert "\n" not in text and "random" in text


# -- regression and impossible splits --------------------------------------------------------------
def test_regression_ignores_stratify():
    ds = _regression()
    stratified = split_indices(ds, _cfg(stratify=True))  # every target value is its own "class"
    plain = split_indices(ds, _cfg(stratify=False))
    for name in PARTS:
        np.testing.assert_array_equal(stratified[name], plain[name])
    _assert_partition(stratified, 100)


def test_class_with_one_member_cannot_be_stratified():
    ds = _classes(n=50)
    ds.targets[7] = 4  # a fifth class with a single row
    ds.class_names = [*ds.class_names, "4"]
    with pytest.raises(PipelineError) as info:
        split_indices(ds, _cfg())
    text = str(info.value)
    assert text and "\n" not in text
    assert "stratify" in text
    # and without stratification the same rows split fine
    _assert_partition(split_indices(ds, _cfg(stratify=False)), 50)


def test_too_few_rows_for_a_part():
    ds = _classes(n=4)  # ordered 0.5 / 0.1 / 0.4 of 4 rows: 2, round(0.4) = 0, 2
    with pytest.raises(PipelineError) as info:
        split_indices(ds, _cfg(train=0.5, val=0.1, test=0.4, method="ordered"))
    assert "split.val" in str(info.value) and "\n" not in str(info.value)


# -- the split stage ------------------------------------------------------------------------------
def test_split_stage_writes_parts_and_meta(make_params, layout):
    params = make_params()
    stages.data(params, layout)
    rows = stages.split(params, layout)
    assert rows == {"train": 120, "val": 40, "test": 40}  # 200 rows at 0.6 / 0.2 / 0.2
    written = {p.name for p in layout.split_dir.iterdir()}
    assert written == {"train.npz", "val.npz", "test.npz", "meta.json"}
    meta = read_json(layout.split_dir / "meta.json")
    assert meta["rows"] == rows
    assert re.fullmatch(r"[0-9a-f]{64}", meta["fingerprint"])
    assert meta["task"] == "multiclass" and meta["class_names"] == ["0", "1", "2"]
    parts = {name: load_dataset(layout.split_dir / f"{name}.npz") for name in PARTS}
    assert {name: len(part.targets) for name, part in parts.items()} == rows
    assert meta["fingerprint"] == fingerprint(*(parts[name] for name in PARTS))
    # the parts are the rows of the raw dataset, split as split_indices says
    whole = load_dataset(layout.dataset)
    index = split_indices(whole, params.split)
    for name in PARTS:
        np.testing.assert_array_equal(parts[name].features, whole.features[index[name]])
        np.testing.assert_array_equal(parts[name].targets, whole.targets[index[name]])


def test_split_stage_is_reproducible(make_params, layout):
    params = make_params()
    stages.data(params, layout)
    stages.split(params, layout)
    first = read_json(layout.split_dir / "meta.json")["fingerprint"]
    first_bytes = (layout.split_dir / "test.npz").read_bytes()
    stages.split(params, layout)
    assert read_json(layout.split_dir / "meta.json")["fingerprint"] == first
    assert (layout.split_dir / "test.npz").read_bytes() == first_bytes
    stages.split(make_params(split={"seed": 1}), layout)
    assert read_json(layout.split_dir / "meta.json")["fingerprint"] != first
    assert not [p for p in layout.root.rglob("*") if p.name.endswith(".tmp")]


def test_split_stage_without_data(make_params, layout):
    with pytest.raises(PipelineError) as info:
        stages.split(make_params(), layout)
    assert "dataset.npz" in str(info.value)
    assert not layout.split_dir.exists()


# -- the tutorials' draws without scikit-learn's import ------------------------------------------
def _sklearn_split(index, fraction, seed, stratify):
    return train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)


@pytest.mark.parametrize("stratified", [True, False])
def test_our_train_test_split_draws_what_scikit_learns_draws(stratified):
    """Positions for sizes, fractions, class counts and imbalances, ties in the rounding and
    errors included: the same as scikit-learn's `train_test_split` for every seed tried."""
    compared = failed = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        for n in (3, 7, 10, 25, 64, 101, 400):
            for n_classes in (2, 3, 5):
                weights = rng.dirichlet(np.ones(n_classes))
                labels = rng.choice(n_classes, size=n, p=weights).astype(np.int64)
                index = rng.permutation(n) + 1000  # positions must index the caller's rows
                for fraction in (0.1, 0.125, 0.2, 0.25, 1 / 3, 0.5, 0.9):
                    stratify = labels if stratified else None
                    try:
                        expected = _sklearn_split(index, fraction, seed, stratify)
                    except ValueError:
                        with pytest.raises(PipelineError, match=r"^cannot split"):
                            split_module.train_test_split(index, fraction, seed, stratify)
                        failed += 1
                        continue
                    kept, taken = split_module.train_test_split(index, fraction, seed, stratify)
                    np.testing.assert_array_equal(index[kept], expected[0])
                    np.testing.assert_array_equal(index[taken], expected[1])
                    compared += 1
    assert compared > 1000 and (failed > 20 or not stratified)


@pytest.mark.parametrize("source", ["blobs", "moons", "circles", "digits"])
def test_data_and_split_stages_do_not_import_scikit_learn(tmp_path, source):
    """The generated sets, scikit-learn's bundled digits and a stratified random split (the
    default pipeline's with blobs) without scikit-learn's import."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipeline import stages\n"
        "from pipeline.config import params_from_dict\n"
        f"params = params_from_dict({{'data': {{'source': {source!r}}}}})\n"
        "layout = stages.Layout(Path(sys.argv[1]))\n"
        "stages.data(params, layout); stages.split(params, layout)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))\n"
    )
    assert run_script(code, tmp_path) == "[]"
    assert (tmp_path / "data" / "split" / "train.npz").is_file()
