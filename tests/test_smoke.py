"""The four stages in process on the tiny config: each writes what the next one reads."""

import os

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


def test_git_is_asked_for_a_runs_tags_only_when_there_is_a_run(make_params, layout, tmp_path, monkeypatch):
    """`git rev-parse` and `git status` give a run its git_commit and git_dirty tags: two commands
    (in a large repository `status` takes a while) that an untracked training does not run."""
    calls = tmp_path / "git-calls"
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "git").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    (shims / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    params = make_params()
    stages.data(params, layout)
    stages.split(params, layout)
    stages.train(params, layout)
    assert not calls.exists()
    tracked = {"enabled": True, "process": False, "log_model": False, "log_checkpoints": False}
    stages.train(make_params(tracking=tracked), layout)
    assert calls.read_text().startswith("rev-parse HEAD")
