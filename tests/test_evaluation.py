"""Test metrics against scikit-learn, and the evaluate stage's files."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from conftest import tiny_params
from sklearn import metrics as sk

from pipeline import stages
from pipeline.checkpoints import load_model
from pipeline.config import params_from_dict
from pipeline.data import load_dataset
from pipeline.evaluation import (
    classification_metrics,
    confusion_matrix,
    flat_metrics,
    predict,
    regression_metrics,
)
from pipeline.files import read_json


def random_probs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.dirichlet(np.ones(k), size=n)


def check_against_sklearn(y: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    k = len(names)
    labels = list(range(k))
    got = classification_metrics(y, probs, names)
    pred = probs.argmax(axis=1)
    assert got["n"] == len(y)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert got["macro_f1"] == pytest.approx(
        sk.f1_score(y, pred, average="macro", labels=labels, zero_division=0)
    )
    assert got["log_loss"] == pytest.approx(sk.log_loss(y, probs, labels=labels), rel=1e-9)
    precision = sk.precision_score(y, pred, average=None, labels=labels, zero_division=0)
    recall = sk.recall_score(y, pred, average=None, labels=labels, zero_division=0)
    f1 = sk.f1_score(y, pred, average=None, labels=labels, zero_division=0)
    assert list(got["per_class"]) == names
    for i, name in enumerate(names):
        scores = got["per_class"][name]
        assert scores["precision"] == pytest.approx(precision[i])
        assert scores["recall"] == pytest.approx(recall[i])
        assert scores["f1"] == pytest.approx(f1[i])
        assert scores["support"] == int((y == i).sum())
    return got


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_three_classes(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=200)
    probs = random_probs(rng, 200, 3)
    probs[y == 1] = 0.6 * probs[y == 1] + 0.4 * np.array([0.0, 1.0, 0.0])  # some skill
    check_against_sklearn(y, probs, ["cat", "dog", "bird"])


@pytest.mark.parametrize("seed", [0, 1])
def test_classification_metrics_two_classes(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=150)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, size=150), 0, 1)
    check_against_sklearn(y, np.stack([1 - p1, p1], axis=1), ["0", "1"])


def test_classification_metrics_class_never_predicted():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, size=120)
    probs = random_probs(rng, 120, 3)
    probs[:, 2] *= 0.01  # class 2 is never the argmax
    probs /= probs.sum(axis=1, keepdims=True)
    assert (probs.argmax(axis=1) != 2).all() and (y == 2).any()
    got = check_against_sklearn(y, probs, ["a", "b", "c"])
    assert got["per_class"]["c"]["precision"] == 0.0
    assert got["per_class"]["c"]["recall"] == 0.0
    assert got["per_class"]["c"]["f1"] == 0.0


def test_classification_metrics_class_absent_from_truth():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, size=80)  # class 2 never occurs, but is predicted sometimes
    probs = random_probs(rng, 80, 3)
    assert (probs.argmax(axis=1) == 2).any()
    got = check_against_sklearn(y, probs, ["a", "b", "c"])
    assert got["per_class"]["c"]["support"] == 0


def test_classification_metrics_perfect_and_certain():
    y = np.array([0, 1, 2, 1])
    probs = np.eye(3)[y]
    got = classification_metrics(y, probs, ["a", "b", "c"])
    assert got["accuracy"] == 1.0
    assert got["macro_f1"] == 1.0
    assert got["log_loss"] == pytest.approx(0.0, abs=1e-12)
    wrong = classification_metrics(y, np.eye(3)[(y + 1) % 3], ["a", "b", "c"])
    assert wrong["accuracy"] == 0.0
    assert math.isfinite(wrong["log_loss"]) and wrong["log_loss"] > 30  # clipped, not infinite


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_metrics_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(3.0, 2.0, size=100).astype(np.float32)
    pred = y + rng.normal(0.0, 0.5, size=100)
    got = regression_metrics(y, pred)
    assert got["n"] == 100
    assert got["mse"] == pytest.approx(sk.mean_squared_error(y, pred))
    assert got["rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(y, pred)))
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, pred))
    assert got["r2"] == pytest.approx(sk.r2_score(y, pred))


def test_regression_metrics_perfect_and_mean_predictions():
    y = np.array([1.0, 2.0, 4.0])
    assert regression_metrics(y, y.copy())["r2"] == 1.0
    assert regression_metrics(y, np.full(3, y.mean()))["r2"] == pytest.approx(0.0)
    assert regression_metrics(y, y + 1)["mae"] == pytest.approx(1.0)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_confusion_matrix_against_sklearn(k):
    rng = np.random.default_rng(k)
    y_true = rng.integers(0, k, size=300)
    y_pred = np.where(rng.uniform(size=300) < 0.6, y_true, rng.integers(0, k, size=300))
    got = confusion_matrix(y_true, y_pred, k)
    np.testing.assert_array_equal(got, sk.confusion_matrix(y_true, y_pred, labels=list(range(k))))
    assert got.sum() == 300


def test_confusion_matrix_rows_are_actual():
    got = confusion_matrix(np.array([0, 0, 1]), np.array([1, 1, 1]), 3)
    np.testing.assert_array_equal(got, [[0, 2, 0], [0, 1, 0], [0, 0, 0]])


def test_flat_metrics():
    nested = {
        "accuracy": 0.9,
        "macro_f1": 0.8,
        "n": 10,
        "per_class": {
            "cat": {"precision": 1.0, "recall": 0.5, "support": 4},
            "t-shirt/top": {"precision": 0.25, "recall": 1, "support": 6},
            "a:b?": {"recall": 0.0},
        },
    }
    assert flat_metrics(nested) == {
        "test_accuracy": 0.9,
        "test_macro_f1": 0.8,
        "test_precision_cat": 1.0,
        "test_recall_cat": 0.5,
        "test_support_cat": 4.0,
        "test_precision_t-shirt/top": 0.25,
        "test_recall_t-shirt/top": 1.0,
        "test_support_t-shirt/top": 6.0,
        "test_recall_a_b_": 0.0,
    }
    assert flat_metrics({"rmse": 2, "n": 3}, prefix="val_") == {"val_rmse": 2.0}
    assert all(isinstance(v, float) for v in flat_metrics(nested).values())


def test_flat_metrics_of_real_metrics_counts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=30)
    flat = flat_metrics(classification_metrics(y, random_probs(rng, 30, 3), ["0", "1", "2"]))
    assert len(flat) == 3 + 3 * 4  # accuracy, macro_f1, log_loss; 4 scores per class


def test_predict_shapes_and_batches():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 3)
    features = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    whole = predict(model, features, "cross_entropy")
    chunked = predict(model, features, "cross_entropy", batch_size=3)
    assert whole.shape == (10, 3) and whole.dtype == np.float64
    np.testing.assert_allclose(whole, chunked)
    np.testing.assert_allclose(whole.sum(axis=1), 1.0, rtol=1e-6)
    regression = predict(torch.nn.Linear(2, 1), features, "mse")
    assert regression.shape == (10,)


# -- the evaluate stage ---------------------------------------------------------------------------
def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_stages(layout, **sections) -> dict:
    params = params_from_dict(tiny_params(**sections))
    stages.data(params, layout)
    stages.split(params, layout)
    stages.train(params, layout)
    return stages.evaluate(params, layout)


def test_evaluate_stage_classification(layout):
    metrics = run_stages(layout, train={"epochs": 3}, evaluate={"plots": False})
    saved = read_json(layout.metrics)
    assert saved == metrics
    test = load_dataset(layout.split_dir / "test.npz")
    model, _ = load_model(layout.model)
    with torch.no_grad():
        predicted = model(torch.from_numpy(test.features)).argmax(1).numpy()
    assert saved["n"] == len(test.targets) == 40
    assert saved["accuracy"] == pytest.approx(sk.accuracy_score(test.targets, predicted))
    assert set(saved) == {"accuracy", "macro_f1", "log_loss", "n", "per_class"}

    history = read_json(layout.history)["history"]
    curve = read_csv(layout.plots / "learning_curve.csv")
    assert len(curve) == len(history) == 3
    assert [int(row["epoch"]) for row in curve] == [1, 2, 3]
    assert float(curve[-1]["val_loss"]) == pytest.approx(history[-1]["val_loss"])

    confusion = read_csv(layout.plots / "confusion.csv")
    assert len(confusion) == 40
    assert [row["actual"] for row in confusion] == [str(t) for t in test.targets]
    assert [row["predicted"] for row in confusion] == [str(p) for p in predicted]
    assert not (layout.plots / "predictions.csv").exists()
    assert not list(layout.plots.glob("*.png"))


def test_evaluate_stage_regression(layout):
    metrics = run_stages(
        layout,
        data={"source": "linear"},
        model={"hidden": []},
        train={"epochs": 3, "loss": "mse"},
        evaluate={"plots": False},
    )
    saved = read_json(layout.metrics)
    assert saved == metrics
    assert set(saved) == {"mse", "rmse", "mae", "r2", "n"}
    test = load_dataset(layout.split_dir / "test.npz")
    model, _ = load_model(layout.model)
    with torch.no_grad():
        predicted = model(torch.from_numpy(test.features))[:, 0].double().numpy()
    assert saved["mse"] == pytest.approx(sk.mean_squared_error(test.targets, predicted), rel=1e-6)
    assert saved["r2"] == pytest.approx(sk.r2_score(test.targets, predicted), rel=1e-6)

    rows = read_csv(layout.plots / "predictions.csv")
    assert len(rows) == len(test.targets) == 10
    np.testing.assert_allclose([float(r["actual"]) for r in rows], test.targets, rtol=1e-6)
    np.testing.assert_allclose([float(r["predicted"]) for r in rows], predicted, rtol=1e-6)
    curve = read_csv(layout.plots / "learning_curve.csv")
    assert {"train_rmse", "val_mae"} <= set(curve[0])
    assert not (layout.plots / "confusion.csv").exists()


@pytest.mark.parametrize(
    ("sections", "pngs"),
    [
        ({}, {"learning_curves.png", "confusion_matrix.png", "decision_regions.png"}),
        (
            {"data": {"source": "linear"}, "model": {"hidden": []}, "train": {"epochs": 2, "loss": "mse"}},
            {"learning_curves.png", "predictions.png", "regression_fit.png"},
        ),
        (  # no picture of the data beyond two dimensions
            {"data": {"n_features": 3}},
            {"learning_curves.png", "confusion_matrix.png"},
        ),
    ],
)
def test_evaluate_stage_writes_pngs(layout, sections, pngs):
    run_stages(layout, evaluate={"plots": True}, **sections)
    found = {p.name for p in layout.plots.glob("*.png")}
    assert found == pngs
    for name in pngs:
        assert (layout.plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
