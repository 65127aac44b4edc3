"""The four stages in process on the tiny config: each writes what the next one reads."""

import os
import subprocess

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
    asked = set(calls.read_text().splitlines())  # MLflow's context tags ask git too (GitPython)
    assert {"rev-parse HEAD", "status --porcelain --untracked-files=no"} <= asked, asked


def test_a_runs_git_tags_name_the_commit_and_whether_tracked_files_changed(tmp_path):
    """Asked first, read later (the two commands run meanwhile), from a real git repository."""
    from pipeline.tracking import ask_git

    assert ask_git(tmp_path)() == {}  # not a repository
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert ask_git(tmp_path)() == {}  # no commit yet
    (tmp_path / "tracked.txt").write_text("one\n")
    subprocess.run(["git", "add", "tracked.txt"], cwd=tmp_path, check=True)
    subprocess.run(["git", "commit", "-qm", "one"], cwd=tmp_path, check=True, env=env)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / "untracked.txt").write_text("not in git\n")
    answer = ask_git(tmp_path)
    assert answer() == {"git_commit": head, "git_dirty": "false"}  # untracked files do not count
    (tmp_path / "tracked.txt").write_text("two\n")
    assert ask_git(tmp_path)() == {"git_commit": head, "git_dirty": "true"}
