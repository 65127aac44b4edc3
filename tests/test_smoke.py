"""The four stages in process on the tiny config: each writes what the next one reads."""

from pipeline import stages
from pipeline.files import read_json


def test_stages_chain_on_tiny_config(make_params, layout):
    params = make_params()
    stages.data(params, layout)
    stages.split(params, layout)
    summary = stages.train(params, layout)
    metrics = stages.evaluate(params, layout)
    assert summary["epochs"] == 3
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert read_json(layout.metrics)["n"] == 40
    assert read_json(layout.run)["run_id"] is None  # tracking disabled: no MLflow run
