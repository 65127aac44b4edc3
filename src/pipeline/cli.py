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
_SET = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one param for this run (YAML value), e.g. --set train.lr=0.05. Repeatable.",
)
_SET_NONEMPTY = click.option(
    "--set-nonempty",
    "optional_overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Like --set, but an empty VALUE leaves the param as it is (MLproject passes every "
    "parameter, given or not).",
)


def set_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--set and --set-nonempty, merged into the one `overrides` tuple the command takes."""

    @functools.wraps(command)
    def merged(
        *args: Any, overrides: tuple[str, ...], optional_overrides: tuple[str, ...], **kwargs: Any
    ) -> Any:
        given = tuple(o for o in optional_overrides if o.partition("=")[2].strip())
        return command(*args, overrides=overrides + given, **kwargs)

    return _SET(_SET_NONEMPTY(merged))


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


EXPERIMENT_OPTION = click.option(
    "--experiment",
    "-e",
    metavar="NAME",
    default=None,
    help="Use the named experiment (conf/experiment/NAME.yaml over conf/config.yaml) instead of "
    "--params; see `pipeline experiments`.",
)


def _load(params_path: str, overrides: tuple[str, ...], experiment: str | None = None) -> Any:
    from pipeline.config import apply_overrides, check_device, load_params, params_from_dict
    from pipeline.errors import ConfigError

    if experiment:
        from pathlib import Path

        from pipeline.experiments import compose

        try:
            params = params_from_dict(apply_overrides(compose(Path.cwd(), experiment), list(overrides)))
        except ConfigError as exc:
            exc.location = exc.location or f"experiment {experiment}"
            raise
    else:
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
@click.pass_context
def main(ctx: click.Context) -> None:
    """Train feed-forward networks reproducibly: DVC stages, tracked in MLflow."""
    from pipeline import gc_control

    ctx.with_resource(gc_control.paused())  # while torch, MLflow, scikit-learn import: see gc_control
    gc_control.no_collection_at_exit()


def stage_command(name: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
    def decorate(function: Callable[..., Any]) -> Any:
        @main.command(name=name, help=help_text)
        @PARAMS_OPTION
        @set_options
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


@main.command(name="run")
@PARAMS_OPTION
@set_options
@EXPERIMENT_OPTION
@reports_errors
def run_all(params_path: str, overrides: tuple[str, ...], experiment: str | None) -> None:
    """All four stages in one process and one MLflow run (MLproject's main)."""
    from pipeline import stages

    params = _load(params_path, overrides, experiment)
    for step in (stages.data, stages.split, stages.train):
        _report(step.__name__, step(params))
    summary = stages.evaluate(params)
    _report("evaluate", {k: v for k, v in summary.items() if k != "per_class"})


@main.command()
@reports_errors
def experiments() -> None:
    """List the named experiments, one line each."""
    from pathlib import Path

    from pipeline.experiments import describe

    described = describe(Path.cwd())
    if not described:
        raise PipelineError("no named experiments: conf/experiment/ has no .yaml file here")
    width = max(len(name) for name, _ in described)
    for name, description in described:
        click.echo(f"{name:<{width}}  {description}")


@main.command()
@click.argument("name", required=False)
@set_options
@click.option("--output", default="params.yaml", show_default=True, metavar="PATH")
@reports_errors
def compose(name: str | None, overrides: tuple[str, ...], output: str) -> None:
    """Write params.yaml from conf/ and the named experiment NAME (as `dvc exp run` does)."""
    from pathlib import Path

    from pipeline.config import apply_overrides, params_from_dict
    from pipeline.errors import ConfigError
    from pipeline.experiments import compose as compose_params
    from pipeline.experiments import dump

    try:
        raw = apply_overrides(compose_params(Path.cwd(), name), list(overrides))
        params_from_dict(raw)  # validate before writing anything
    except ConfigError as exc:
        exc.location = exc.location or (f"experiment {name}" if name else "conf/config.yaml")
        raise
    dump(Path(output), raw)
    click.echo(f"{output}: composed from conf/config.yaml" + (f" + experiment {name}" if name else ""))


@main.command()
@click.option(
    "--model",
    "model_uri",
    required=True,
    metavar="URI",
    help="models:/NAME@champion, models:/NAME/VERSION, runs:/ID/model, models:/m-ID, "
    "or a file: models/model.pt, models/checkpoints/epoch_N.pt",
)
@click.option(
    "--input",
    "input_path",
    required=True,
    metavar="CSV",
    help="Features: a header naming them, or unnamed columns in the model's order.",
)
@click.option("--output", "output_path", required=True, metavar="CSV")
@reports_errors
def predict(model_uri: str, input_path: str, output_path: str) -> None:
    """Score a CSV file: labels and class probabilities, or regression values."""
    from pathlib import Path

    from pipeline.scoring import predict_file

    rows = predict_file(model_uri, Path(input_path), Path(output_path))
    click.echo(f"{output_path}: {rows} predictions from {model_uri}")


def _model_name(params_path: str, model_name: str | None) -> str:
    return model_name or _load(params_path, ()).tracking.registered_name


MODEL_NAME_OPTION = click.option(
    "--model-name",
    default=None,
    metavar="NAME",
    help="Registered model [default: tracking.model_name, or tracking.experiment, of the params].",
)


@main.command()
@click.argument("version")
@MODEL_NAME_OPTION
@PARAMS_OPTION
@reports_errors
def promote(version: str, model_name: str | None, params_path: str) -> None:
    """Give registered model VERSION the `champion` alias."""
    from pipeline.tracking import promote as promote_version

    click.echo(promote_version(_model_name(params_path, model_name), version))


@main.command()
@MODEL_NAME_OPTION
@PARAMS_OPTION
@reports_errors
def rollback(model_name: str | None, params_path: str) -> None:
    """Give `champion` back to the version that held it before."""
    from pipeline.tracking import rollback as rollback_champion

    click.echo(rollback_champion(_model_name(params_path, model_name)))


@main.command()
@click.argument("experiment")
@click.option("--metric", default="train_loss", show_default=True, help="The metric to draw.")
@click.option("--output", default=None, metavar="PATH", help="[default: reports/EXPERIMENT-METRIC.png]")
@reports_errors
def compare(experiment: str, metric: str, output: str | None) -> None:
    """Draw METRIC of every finished run of the MLflow EXPERIMENT in one plot."""
    from pathlib import Path

    from pipeline.plots import compare_png
    from pipeline.tracking import metric_curves

    curves = metric_curves(experiment, metric)
    path = Path(output or f"reports/{experiment}-{metric}.png")
    compare_png(path, curves, metric, f"{metric}: {experiment}")
    click.echo(f"{path}: {metric} of {len(curves)} runs ({', '.join(sorted(curves))})")


@main.command()
@PARAMS_OPTION
@set_options
@reports_errors
def check(params_path: str, overrides: tuple[str, ...]) -> None:
    """Validate the params file (and overrides) without running anything."""
    params = _load(params_path, overrides)
    click.echo(
        f"{params_path}: ok ({params.data.source}, hidden {params.model.hidden}, "
        f"{params.train.optimizer} lr {params.train.lr})"
    )
