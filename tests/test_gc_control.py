"""The garbage collector: paused while a command imports, back on (imports set aside) for long work."""

from __future__ import annotations

import gc

import pytest
from click.testing import CliRunner
from conftest import tiny_params, write_params

from pipeline import gc_control, stages
from pipeline.cli import main


@pytest.mark.parametrize("before", [True, False])
def test_paused_turns_the_collector_off_and_back_to_what_it_was(before):
    (gc.enable if before else gc.disable)()
    try:
        with gc_control.paused():
            assert not gc.isenabled()
        assert gc.isenabled() is before
    finally:
        gc.enable()


@pytest.mark.parametrize("before", [True, False])
def test_resumed_sets_what_is_alive_aside_and_turns_the_collector_on(before):
    (gc.enable if before else gc.disable)()
    try:
        with gc_control.resumed():
            assert gc.isenabled()
            assert gc.get_freeze_count() > 1000  # the test session's modules, at least
        assert gc.isenabled() is before
        assert gc.get_freeze_count() == 0  # handed back: nothing kept from collection for good
    finally:
        gc.enable()


def test_a_command_runs_with_the_collector_paused_and_leaves_it_on(workdir, monkeypatch):
    seen = []
    monkeypatch.setattr(stages, "data", lambda params: seen.append(gc.isenabled()) or {})
    write_params(workdir / "params.yaml", tiny_params())
    result = CliRunner().invoke(main, ["data"])
    assert result.exit_code == 0, result.output
    assert seen == [False]
    assert gc.isenabled()


def test_training_runs_with_the_collector_on(workdir, make_params, monkeypatch):
    from pipeline.training import Trainer

    seen = []
    fit = Trainer.fit

    def recording(self, *args, **kwargs):
        seen.append((gc.isenabled(), gc.get_freeze_count() > 0))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recording)
    params = make_params()
    stages.data(params)
    stages.split(params)
    with gc_control.paused():  # as under a `pipeline` command
        stages.train(params)
    assert seen == [(True, True)]


def test_a_command_sets_what_is_alive_aside_before_the_final_collection():
    """Python's shutdown runs a full collection over everything alive (0.8 s after torch and
    MLflow); a `pipeline` command freezes it first. Seen from an exit handler registered before
    the command's, which therefore runs after it."""
    import subprocess
    import sys

    from conftest import REPO

    code = (
        "import atexit, gc, sys;"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0));"
        "from pipeline.cli import main; sys.argv = ['pipeline', 'experiments']; main()"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "frozen at exit: True"
