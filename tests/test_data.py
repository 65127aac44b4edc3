"""Every data source through `make_dataset`, the dataset file, its fingerprint, and the `data` stage."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from idx import IDX_NAMES, write_idx_dataset
from sklearn.datasets import load_digits, make_blobs, make_circles, make_moons

from pipeline import stages
from pipeline.config import DataConfig
from pipeline.data import Dataset, fingerprint, load_dataset, make_dataset, save_dataset
from pipeline.data.images import IDX_FILES
from pipeline.errors import ConfigError, PipelineError


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text, text
    return text


# -- scikit-learn generators and the linear set ---------------------------------------------------
@pytest.mark.parametrize(("centers", "task"), [(4, "multiclass"), (2, "binary"), (3, "multiclass")])
def test_blobs(centers, task):
    ds = make_dataset(
        DataConfig(source="blobs", n_samples=120, n_features=3, centers=centers, random_state=5)
    )
    x, y = make_blobs(n_samples=120, n_features=3, centers=centers, cluster_std=1.0, random_state=5)
    assert ds.features.shape == (120, 3) and ds.targets.shape == (120,)
    assert ds.features.dtype == np.float32 and ds.targets.dtype == np.int64
    np.testing.assert_allclose(ds.features, x.astype(np.float32))
    np.testing.assert_array_equal(ds.targets, y)
    assert ds.task == task
    assert ds.class_names == [str(c) for c in range(centers)]
    assert ds.n_classes == centers
    assert ds.feature_names == ["x0", "x1", "x2"]
    assert ds.source == "blobs" and ds.scale == 1.0 and ds.is_test is None


def test_our_make_blobs_draws_what_scikit_learns_draws():
    """Bit for bit, for counts that split evenly among the centers and counts that do not (fewer
    rows than centers too), several widths, spreads and seeds."""
    from pipeline.data.synthetic import make_blobs as ours

    for seed in (0, 1, 42, 2**32 - 1):
        for n_samples, centers, n_features, std in [
            (1000, 4, 2, 1.0),
            (5000, 2, 64, 10.0),
            (7, 3, 5, 0.3),
            (2, 5, 1, 2.5),
        ]:
            x, y = ours(n_samples, centers, n_features, std, seed)
            expected_x, expected_y = make_blobs(
                n_samples=n_samples,
                centers=centers,
                n_features=n_features,
                cluster_std=std,
                random_state=seed,
            )
            assert x.dtype == expected_x.dtype and y.dtype == expected_y.dtype
            np.testing.assert_array_equal(x, expected_x)
            np.testing.assert_array_equal(y, expected_y)


@pytest.mark.parametrize("source", ["moons", "circles"])
def test_our_moons_and_circles_are_scikit_learns(source):
    """Bit for bit, even and odd counts, with and without noise, several seeds."""
    from pipeline.data import synthetic

    for seed in (0, 3, 2**32 - 1):
        for n_samples in (1, 2, 7, 100, 1001):
            for noise in (0.0, 0.1, 0.35):
                if source == "moons":
                    x, y = synthetic.make_moons(n_samples, noise, seed)
                    expected = make_moons(n_samples=n_samples, noise=noise or None, random_state=seed)
                else:
                    x, y = synthetic.make_circles(n_samples, noise, 0.5, seed)
                    expected = make_circles(
                        n_samples=n_samples, noise=noise or None, factor=0.5, random_state=seed
                    )
                assert x.dtype == expected[0].dtype and y.dtype == expected[1].dtype
                np.testing.assert_array_equal(x, expected[0])
                np.testing.assert_array_equal(y, expected[1])


def test_blobs_are_seeded():
    a = make_dataset(DataConfig(source="blobs", n_samples=50, random_state=1))
    b = make_dataset(DataConfig(source="blobs", n_samples=50, random_state=1))
    c = make_dataset(DataConfig(source="blobs", n_samples=50, random_state=2))
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.features, c.features)


@pytest.mark.parametrize(("source", "generator"), [("moons", make_moons), ("circles", make_circles)])
def test_moons_and_circles_are_binary(source, generator):
    ds = make_dataset(DataConfig(source=source, n_samples=100, noise=0.1, random_state=3))
    extra = {"factor": 0.5} if source == "circles" else {}
    x, y = generator(n_samples=100, noise=0.1, random_state=3, **extra)
    assert ds.features.shape == (100, 2) and ds.features.dtype == np.float32
    assert ds.targets.dtype == np.int64
    np.testing.assert_allclose(ds.features, x.astype(np.float32))
    np.testing.assert_array_equal(ds.targets, y)
    assert ds.task == "binary" and ds.class_names == ["0", "1"]
    assert set(np.unique(ds.targets)) == {0, 1}


def test_moons_without_noise_lie_on_the_two_half_circles():
    ds = make_dataset(DataConfig(source="moons", n_samples=100, noise=0.0))
    upper = ds.features[ds.targets == 0]
    lower = ds.features[ds.targets == 1]
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0, atol=1e-5)


def test_linear():
    ds = make_dataset(DataConfig(source="linear"))
    x = np.arange(0.0, 1.0, 0.02)
    assert ds.features.shape == (50, 1) and ds.targets.shape == (50,)
    assert ds.features.dtype == np.float32 and ds.targets.dtype == np.float32
    assert ds.task == "regression" and ds.class_names == [] and ds.feature_names == ["x"]
    np.testing.assert_allclose(ds.features[:, 0], x, atol=1e-6)
    np.testing.assert_allclose(ds.targets, 0.7 * x + 0.3, atol=1e-6)


def test_linear_weight_bias_and_range():
    ds = make_dataset(DataConfig(source="linear", weight=-2.0, bias=1.0, start=1.0, end=2.0, step=0.25))
    x = np.array([1.0, 1.25, 1.5, 1.75])
    np.testing.assert_allclose(ds.features[:, 0], x)
    np.testing.assert_allclose(ds.targets, -2.0 * x + 1.0)


def test_linear_noise_is_reproducible():
    clean = make_dataset(DataConfig(source="linear"))
    a = make_dataset(DataConfig(source="linear", noise=0.1, random_state=7))
    b = make_dataset(DataConfig(source="linear", noise=0.1, random_state=7))
    c = make_dataset(DataConfig(source="linear", noise=0.1, random_state=8))
    np.testing.assert_array_equal(a.targets, b.targets)
    assert not np.allclose(a.targets, clean.targets)
    assert not np.array_equal(a.targets, c.targets)
    np.testing.assert_array_equal(a.features, clean.features)  # noise is on y only
    residual = a.targets - clean.targets
    assert 0.03 < residual.std() < 0.3  # about the asked-for 0.1
    assert a.targets.dtype == np.float32


def test_digits():
    ds = make_dataset(DataConfig(source="digits"))
    bunch = load_digits()
    assert ds.features.shape == (1797, 64) and ds.features.dtype == np.uint8
    assert ds.targets.shape == (1797,) and ds.targets.dtype == np.int64
    np.testing.assert_array_equal(ds.features, bunch.data)
    np.testing.assert_array_equal(ds.targets, bunch.target)
    assert ds.scale == 16.0 and ds.features.max() == 16
    assert ds.task == "multiclass" and ds.class_names == [str(i) for i in range(10)]
    assert ds.image_shape == [8, 8]


def test_digits_without_the_bundled_file_come_from_load_digits(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    ds = make_dataset(DataConfig(source="digits"))
    np.testing.assert_array_equal(ds.features, load_digits().data)
    np.testing.assert_array_equal(ds.targets, load_digits().target)


# -- torchvision MNIST and FashionMNIST from IDX files written here -------------------------------
def test_idx_names_match_what_the_pipeline_expects():
    assert tuple(IDX_NAMES) == tuple(IDX_FILES)


@pytest.mark.parametrize(("source", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_from_idx_files(tmp_path, source, folder):
    written = write_idx_dataset(tmp_path, folder, n_train=30, n_test=10, seed=1)
    ds = make_dataset(DataConfig(source=source, root=str(tmp_path), download=False))
    assert ds.features.shape == (40, 784) and ds.features.dtype == np.uint8
    assert ds.targets.shape == (40,) and ds.targets.dtype == np.int64
    pixels = np.concatenate([written["train_images"], written["test_images"]]).reshape(40, 784)
    np.testing.assert_array_equal(ds.features, pixels)
    np.testing.assert_array_equal(
        ds.targets, np.concatenate([written["train_labels"], written["test_labels"]])
    )
    assert ds.is_test is not None and ds.is_test.dtype == bool
    np.testing.assert_array_equal(ds.is_test, np.arange(40) >= 30)
    assert len(ds.class_names) == 10 and len(set(ds.class_names)) == 10
    assert ds.scale == 255.0 and ds.image_shape == [28, 28]
    assert ds.task == "multiclass"


def test_torchvision_missing_files_name_the_folder_and_the_files(tmp_path):
    with pytest.raises(PipelineError) as info:
        make_dataset(DataConfig(source="mnist", root=str(tmp_path), download=False))
    text = _one_line(info.value)
    assert str(tmp_path / "MNIST" / "raw") in text
    for name in IDX_NAMES:
        assert name in text


def test_fashion_mnist_missing_files_name_its_own_folder(tmp_path):
    write_idx_dataset(tmp_path, "MNIST")  # the other dataset's files do not count
    with pytest.raises(PipelineError) as info:
        make_dataset(DataConfig(source="fashion_mnist", root=str(tmp_path), download=False))
    assert str(tmp_path / "FashionMNIST" / "raw") in _one_line(info.value)


# -- CSV ------------------------------------------------------------------------------------------
def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _from_csv(path: str, target: str = "label", task: str = "auto") -> Dataset:
    return make_dataset(DataConfig(source="csv", path=path, target=target, task=task))


def test_csv_string_classes(tmp_path):
    path = _csv(
        tmp_path,
        "a,b,label\n1,2.5,dog\n3,4.5,cat\n5,6.5,emu\n7,8.5,cat\n9,1.5,dog\n0,0.5,emu\n",
    )
    ds = _from_csv(path)
    assert ds.task == "multiclass"
    assert ds.class_names == ["cat", "dog", "emu"]
    assert ds.feature_names == ["a", "b"]
    assert ds.features.dtype == np.float32 and ds.features.shape == (6, 2)
    np.testing.assert_allclose(ds.features[:, 1], [2.5, 4.5, 6.5, 8.5, 1.5, 0.5])
    np.testing.assert_array_equal(ds.targets, [1, 0, 2, 0, 1, 2])
    assert ds.targets.dtype == np.int64
    assert ds.source == "csv"


def test_csv_target_column_anywhere(tmp_path):
    path = _csv(tmp_path, "label,a,b\nx,1,2\ny,3,4\nx,5,6\ny,7,8\n")
    ds = _from_csv(path)
    assert ds.feature_names == ["a", "b"]
    np.testing.assert_array_equal(ds.features, [[1, 2], [3, 4], [5, 6], [7, 8]])


def test_csv_float_target_is_regression(tmp_path):
    path = _csv(tmp_path, "x,y\n0,0.5\n1,1.25\n2,2.0\n3,2.75\n4,3.5\n")
    ds = _from_csv(path, target="y")
    assert ds.task == "regression"
    assert ds.class_names == []
    assert ds.targets.dtype == np.float32
    np.testing.assert_allclose(ds.targets, [0.5, 1.25, 2.0, 2.75, 3.5])


def test_csv_two_labels_are_binary(tmp_path):
    path = _csv(tmp_path, "f1,f2,label\n1,1,yes\n2,2,no\n3,3,yes\n4,4,no\n5,5,no\n")
    ds = _from_csv(path)
    assert ds.task == "binary"
    assert ds.class_names == ["no", "yes"]
    np.testing.assert_array_equal(ds.targets, [1, 0, 1, 0, 0])


def test_csv_integer_labels_are_classes(tmp_path):
    path = _csv(tmp_path, "f,label\n1,2\n2,0\n3,1\n4,2\n5,0\n")
    ds = _from_csv(path)
    assert ds.task == "multiclass"
    assert ds.class_names == ["0", "1", "2"]
    np.testing.assert_array_equal(ds.targets, [2, 0, 1, 2, 0])


def test_csv_task_binary_with_three_classes(tmp_path):
    path = _csv(tmp_path, "f,label\n1,a\n2,b\n3,c\n4,a\n")
    with pytest.raises(ConfigError) as info:
        _from_csv(path, task="binary")
    assert info.value.key == "data.task"
    _one_line(info.value)


def test_csv_missing_file(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(ConfigError) as info:
        _from_csv(missing)
    assert info.value.key == "data.path"
    assert "nope.csv" in _one_line(info.value)


def test_csv_missing_target_lists_the_columns(tmp_path):
    path = _csv(tmp_path, "alpha,beta,gamma\n1,2,3\n4,5,6\n7,8,9\n1,1,1\n")
    with pytest.raises(ConfigError) as info:
        _from_csv(path, target="label")
    text = _one_line(info.value)
    assert info.value.key == "data.target"
    assert "'label'" in text
    assert "alpha, beta, gamma" in text


def test_csv_non_numeric_feature(tmp_path):
    path = _csv(tmp_path, "a,colour,label\n1,red,x\n2,blue,y\n3,red,x\n4,blue,y\n")
    with pytest.raises(PipelineError) as info:
        _from_csv(path)
    assert "'colour'" in _one_line(info.value)


def test_csv_nan_feature_names_the_row(tmp_path):
    # line 1 is the header, so the third data row is line 4 of the file
    path = _csv(tmp_path, "a,b,label\n1,2,x\n3,4,y\n5,,x\n7,8,y\n9,10,x\n")
    with pytest.raises(PipelineError) as info:
        _from_csv(path)
    text = _one_line(info.value)
    assert "row 4" in text
    assert "data.csv" in text


def test_csv_missing_target_value(tmp_path):
    path = _csv(tmp_path, "a,label\n1,x\n2,\n3,y\n4,x\n")
    with pytest.raises(PipelineError) as info:
        _from_csv(path)
    assert "'label'" in _one_line(info.value)


@pytest.mark.parametrize(
    "text",
    ["a,label\n", "a,label\n1,x\n2,y\n3,x\n"],
    ids=["header_only", "three_rows"],
)
def test_csv_too_few_rows(tmp_path, text):
    path = _csv(tmp_path, text)
    with pytest.raises(PipelineError) as info:
        _from_csv(path)
    assert "at least 4" in _one_line(info.value)


def test_csv_empty_file(tmp_path):
    path = _csv(tmp_path, "")
    with pytest.raises(PipelineError) as info:
        _from_csv(path)
    assert "data.csv" in _one_line(info.value)


def test_csv_only_the_target_column(tmp_path):
    path = _csv(tmp_path, "label\nx\ny\nx\ny\n")
    with pytest.raises(PipelineError) as info:
        _from_csv(path)
    assert "no feature columns" in _one_line(info.value)


# -- the dataset file -----------------------------------------------------------------------------
def _assert_same(a: Dataset, b: Dataset) -> None:
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.targets, b.targets)
    assert a.features.dtype == b.features.dtype and a.targets.dtype == b.targets.dtype
    assert a.meta() == b.meta()
    if a.is_test is None:
        assert b.is_test is None
    else:
        np.testing.assert_array_equal(a.is_test, b.is_test)


@pytest.mark.parametrize(
    "config",
    [
        DataConfig(source="blobs", n_samples=40, centers=3),
        DataConfig(source="linear"),
        DataConfig(source="digits"),
    ],
    ids=["blobs", "linear", "digits"],
)
def test_save_load_round_trip(tmp_path, config):
    ds = make_dataset(config)
    path = tmp_path / "sub" / "dataset.npz"
    save_dataset(path, ds)
    loaded = load_dataset(path)
    _assert_same(ds, loaded)
    assert fingerprint(loaded) == fingerprint(ds)
    assert [p.name for p in path.parent.iterdir()] == ["dataset.npz"]  # no temporary left


def test_a_dataset_file_is_np_savez_s_members_in_headers_no_python_changes(tmp_path):
    """The members are those `np.savez` writes, byte for byte; the headers carry no zip64 field
    (whose bytes Python 3.11.4 changed) and a fixed date: equal data, equal file, on any Python."""
    write_idx_dataset(tmp_path, "MNIST", n_train=6, n_test=4)
    ds = make_dataset(DataConfig(source="mnist", root=str(tmp_path), download=False))
    save_dataset(tmp_path / "ours.npz", ds)
    arrays = {"features": ds.features, "targets": ds.targets, "meta": np.array(json.dumps(ds.meta()))}
    np.savez(tmp_path / "numpy.npz", **arrays, is_test=ds.is_test)
    with zipfile.ZipFile(tmp_path / "ours.npz") as ours, zipfile.ZipFile(tmp_path / "numpy.npz") as theirs:
        assert ours.namelist() == theirs.namelist() == [f"{k}.npy" for k in (*arrays, "is_test")]
        for member in ours.infolist():
            assert ours.read(member) == theirs.read(member.filename), member.filename
            assert member.extra == b"" and member.extract_version == 20, member.filename
            assert member.date_time == (1980, 1, 1, 0, 0, 0) and member.compress_type == zipfile.ZIP_STORED
    save_dataset(tmp_path / "again.npz", ds)
    assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "ours.npz").read_bytes()


def test_save_load_round_trip_with_is_test(tmp_path):
    write_idx_dataset(tmp_path, "MNIST", n_train=6, n_test=4)
    ds = make_dataset(DataConfig(source="mnist", root=str(tmp_path), download=False))
    save_dataset(tmp_path / "d.npz", ds)
    loaded = load_dataset(tmp_path / "d.npz")
    _assert_same(ds, loaded)
    assert loaded.is_test is not None and int(loaded.is_test.sum()) == 4


def test_load_missing_file(tmp_path):
    with pytest.raises(PipelineError) as info:
        load_dataset(tmp_path / "dataset.npz")
    assert "dataset.npz" in _one_line(info.value)


def _truncated_npz(tmp_path: Path) -> bytes:
    save_dataset(tmp_path / "whole.npz", make_dataset(DataConfig(n_samples=20)))
    data = (tmp_path / "whole.npz").read_bytes()
    return data[: len(data) // 2]


def _npz_without_meta(tmp_path: Path) -> bytes:
    np.savez(tmp_path / "other.npz", features=np.zeros((4, 2)), targets=np.zeros(4))
    return (tmp_path / "other.npz").read_bytes()


def _npy(tmp_path: Path) -> bytes:
    np.save(tmp_path / "array.npy", np.arange(10))
    return (tmp_path / "array.npy").read_bytes()


GARBAGE = {
    "text": lambda tmp_path: b"this is not a dataset\n" * 20,
    "random_bytes": lambda tmp_path: np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes(),
    "npz_without_meta": _npz_without_meta,
    "truncated_npz": _truncated_npz,  # a torn write or an interrupted copy
    "empty": lambda tmp_path: b"",
    "npy_array": _npy,  # a single array, not an archive
}


@pytest.mark.parametrize("content", GARBAGE.values(), ids=GARBAGE.keys())
def test_load_garbage_file(tmp_path, content):
    path = tmp_path / "dataset.npz"
    path.write_bytes(content(tmp_path))
    with pytest.raises(PipelineError) as info:
        load_dataset(path)
    assert str(path) in _one_line(info.value)


def test_fingerprint():
    a = make_dataset(DataConfig(n_samples=30, random_state=0))
    b = make_dataset(DataConfig(n_samples=30, random_state=0))
    assert fingerprint(a) == fingerprint(b)
    assert len(fingerprint(a)) == 64 and int(fingerprint(a), 16) >= 0
    changed = make_dataset(DataConfig(n_samples=30, random_state=0))
    changed.features[7, 1] += 1e-3
    assert fingerprint(changed) != fingerprint(a)
    relabelled = make_dataset(DataConfig(n_samples=30, random_state=0))
    relabelled.targets[0] = (relabelled.targets[0] + 1) % 4
    assert fingerprint(relabelled) != fingerprint(a)
    renamed = make_dataset(DataConfig(n_samples=30, random_state=0))
    renamed.class_names = ["a", "b", "c", "d"]
    assert fingerprint(renamed) != fingerprint(a)
    # order of the parts matters, and several parts differ from one
    assert fingerprint(a, b) != fingerprint(a)
    assert fingerprint(a, changed) != fingerprint(changed, a)


def test_dataset_shape_checks():
    with pytest.raises(PipelineError):
        Dataset(np.zeros((4, 2)), np.zeros(3), "binary", ["a", "b"])
    with pytest.raises(PipelineError):
        Dataset(np.zeros(4), np.zeros(4), "binary", ["a"])


# -- the data stage -------------------------------------------------------------------------------
def test_data_stage_writes_the_dataset(make_params, layout):
    params = make_params()
    summary = stages.data(params, layout)
    assert layout.dataset == layout.root / "data" / "raw" / "dataset.npz"
    assert layout.dataset.is_file()
    loaded = load_dataset(layout.dataset)
    _assert_same(make_dataset(params.data), loaded)
    assert summary == {"rows": 200, "features": 2, "task": "multiclass"}
    assert not [p for p in layout.root.rglob("*") if p.name.endswith(".tmp")]


def test_data_stage_overwrites(make_params, layout):
    stages.data(make_params(), layout)
    first = fingerprint(load_dataset(layout.dataset))
    stages.data(make_params(data={"n_samples": 50}), layout)
    loaded = load_dataset(layout.dataset)
    assert len(loaded.targets) == 50 and fingerprint(loaded) != first
    assert sorted(p.name for p in layout.dataset.parent.iterdir()) == ["dataset.npz"]


def test_data_stage_failure_writes_nothing(make_params, layout, tmp_path):
    params = make_params(data={"source": "csv", "path": str(tmp_path / "missing.csv"), "target": "y"})
    with pytest.raises(ConfigError):
        stages.data(params, layout)
    assert not layout.dataset.exists()


def test_every_source_in_the_schema_has_its_function_in_the_registry():
    import importlib
    import typing

    from pipeline.config import Source
    from pipeline.data import SOURCES

    assert set(typing.get_args(Source)) == set(SOURCES)
    for name, module in SOURCES.items():
        assert callable(getattr(importlib.import_module(f"pipeline.data.{module}"), name)), name
