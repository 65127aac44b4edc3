"""`pipeline`: one command per stage. Each parses, loads params, calls one function in `stages`.

Imports of torch and MLflow happen inside the commands, so `pipeline --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from pipeline.errors import PipelineError

PARAMS_OPTION = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    metavar="PATH",
    help="The params file.",
)
SET_OPTION = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one param for this run (YAML value), e.g. --set train.lr=0.05. Repeatable.",
)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes become one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PipelineError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _load(params_path: str, overrides: tuple[str, ...]) -> Any:
    from pipeline.config import check_device, load_params
    from pipeline.errors import ConfigError

    params = load_params(params_path, list(overrides))
    try:
        check_device(params.train.device)
    except ConfigError as exc:
        exc.location = params_path
        raise
    return params


def _report(stage: str, summary: Any) -> None:
    click.echo(f"{stage}: {json.dumps(summary, default=str)}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ffn-pipeline", prog_name="pipeline")
def main() -> None:
    """Train feed-forward networks reproducibly: DVC stages, tracked in MLflow."""


def stage_command(name: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
    def decorate(function: Callable[..., Any]) -> Any:
        @main.command(name=name, help=help_text)
        @PARAMS_OPTION
        @SET_OPTION
        @reports_errors
        def command(params_path: str, overrides: tuple[str, ...]) -> None:
            params = _load(params_path, overrides)
            _report(name, function(params))

        return command

    return decorate


@stage_command("data", "Make or read the dataset into data/raw/.")
def data(params: Any) -> Any:
    from pipeline import stages

    return stages.data(params)


@stage_command("split", "Split data/raw/ into train / val / test in data/split/.")
def split(params: Any) -> Any:
    from pipeline import stages

    return stages.split(params)


@stage_command("train", "Train the network; write models/ and open the MLflow run.")
def train(params: Any) -> Any:
    from pipeline import stages

    return stages.train(params)


@stage_command("evaluate", "Test metrics to metrics/, plots to plots/, both into the run.")
def evaluate(params: Any) -> Any:
    from pipeline import stages

    summary = stages.evaluate(params)
    return {k: v for k, v in summary.items() if k != "per_class"}


@stage_command("run", "All four stages in one process and one MLflow run (MLproject's main).")
def run_all(params: Any) -> Any:
    from pipeline import stages

    for step in (stages.data, stages.split, stages.train):
        _report(step.__name__, step(params))
    summary = stages.evaluate(params)
    return {k: v for k, v in summary.items() if k != "per_class"}


@main.command()
@PARAMS_OPTION
@SET_OPTION
@reports_errors
def check(params_path: str, overrides: tuple[str, ...]) -> None:
    """Validate the params file (and overrides) without running anything."""
    params = _load(params_path, overrides)
    click.echo(
        f"{params_path}: ok ({params.data.source}, hidden {params.model.hidden}, "
        f"{params.train.optimizer} lr {params.train.lr})"
    )
