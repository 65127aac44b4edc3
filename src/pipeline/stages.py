"""The four stages: read inputs, call the pure modules, write outputs atomically, track.

Each function is what one `pipeline <stage>` command (and one DVC stage) does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Params, check_task, default_loss
from pipeline.errors import PipelineError
from pipeline.files import read_json, remove_stale_temporaries, write_json, write_text


@dataclass(frozen=True)
class Layout:
    """Where each stage reads and writes, relative to the repository root."""

    root: Path = Path(".")

    @property
    def dataset(self) -> Path:
        return self.root / "data" / "raw" / "dataset.npz"

    @property
    def split_dir(self) -> Path:
        return self.root / "data" / "split"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def checkpoints(self) -> Path:
        return self.models / "checkpoints"

    @property
    def model(self) -> Path:
        return self.models / "model.pt"

    @property
    def history(self) -> Path:
        return self.models / "history.json"

    @property
    def run(self) -> Path:
        return self.models / "run.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics" / "eval.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


# -- data and split -------------------------------------------------------------------------------
def data(params: Params, layout: Layout = Layout()) -> dict[str, Any]:
    from pipeline.data import make_dataset, save_dataset

    dataset = make_dataset(params.data)
    save_dataset(layout.dataset, dataset)
    return {"rows": len(dataset.targets), "features": dataset.features.shape[1], "task": dataset.task}


def split(params: Params, layout: Layout = Layout()) -> dict[str, Any]:
    from pipeline.data import fingerprint, load_dataset, save_dataset
    from pipeline.split import PARTS, split_dataset

    parts = split_dataset(load_dataset(layout.dataset), params.split)
    for name in PARTS:
        save_dataset(layout.split_dir / f"{name}.npz", parts[name])
    meta = {
        **parts["train"].meta(),
        "rows": {n: len(parts[n].targets) for n in PARTS},
        "fingerprint": fingerprint(*(parts[n] for n in PARTS)),
    }
    write_json(layout.split_dir / "meta.json", meta)
    return meta["rows"]


# -- train ----------------------------------------------------------------------------------------
def _load_split(layout: Layout, names: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    from pipeline.data import load_dataset

    meta_path = layout.split_dir / "meta.json"
    if not meta_path.is_file():
        raise PipelineError(f"{meta_path} is missing: run `pipeline split` first")
    meta = read_json(meta_path)
    return meta, {name: load_dataset(layout.split_dir / f"{name}.npz") for name in names}


def train(params: Params, layout: Layout = Layout()) -> dict[str, Any]:
    from pipeline.tracking_process import TrackingProcess

    with TrackingProcess.beside(params.tracking, models=True) as background:  # before torch's import
        return _train(params, layout, background)


def _train(params: Params, layout: Layout, background: Any) -> dict[str, Any]:
    from pipeline import __version__, allocator, checkpoints, gc_control
    from pipeline.callbacks import Checkpointer, MetricLogger, ProgressBar
    from pipeline.history import json_text as history_text
    from pipeline.model import build_model, head_size
    from pipeline.tracking import ask_git
    from pipeline.tracking_process import start_tracker
    from pipeline.training import Trainer, resolve_device, seed_everything, to_tensors

    cfg = params.train
    git_tags = ask_git(layout.root) if params.tracking.enabled else dict  # a run's tags, read below
    meta, parts = _load_split(layout, ("train", "val", "test") if cfg.test_every_steps else ("train", "val"))
    check_task(params, meta["task"], len(meta["class_names"]) or None)
    loss = default_loss(meta["task"]) if cfg.loss == "auto" else cfg.loss
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, device)
    train_part = parts["train"]
    n_inputs = train_part.features.shape[1]
    n_outputs = head_size(loss, max(len(meta["class_names"]), 1))
    model = build_model(params.model, n_inputs, n_outputs, meta["scale"])
    description = {
        "config": params.to_dict(),
        "data_fingerprint": meta["fingerprint"],
        "loss": loss,
        "task": meta["task"],
        "n_inputs": n_inputs,
        "n_outputs": n_outputs,
        "scale": meta["scale"],
        "feature_names": meta["feature_names"],
        "class_names": meta["class_names"],
    }
    trainer = Trainer(model, cfg, loss, device)
    resumed_from = None
    for folder in (layout.models, layout.checkpoints):
        if folder.is_dir():
            remove_stale_temporaries(folder)  # what a killed writer left behind
    if cfg.resume and (saved := checkpoints.newest_compatible(layout.checkpoints, description)):
        trainer.load_state_dict(saved["trainer"])
        resumed_from = saved["epoch"]
    else:
        checkpoints.clear_checkpoints(layout.checkpoints)
    previous_run = _previous_run_id(layout) if resumed_from else None

    tags = {
        "data_fingerprint": meta["fingerprint"],
        "device": str(device),
        "package_version": __version__,
        **git_tags(),
    }
    if exp := os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = exp
    example = train_part.features[:3]  # every logged model's input example, shown and served
    tracker = start_tracker(background, params.tracking, params.to_dict(), tags, previous_run)
    write_json(layout.checkpoints / "run.json", {"run_id": tracker.run_id})
    allocator.keep_freed_pages()  # a wide full-batch step reuses its activations' pages
    with gc_control.resumed():  # imports done: collections walk only what training allocates
        try:
            metric_logger = MetricLogger(
                tracker,
                params.tracking.metric_epochs_every(cfg.epochs),
                cfg.checkpoint_every,
                lr_moves=cfg.scheduler != "none",
            )
            if resumed_from:
                metric_logger.catch_up(trainer.state)
            callbacks = [
                metric_logger,
                Checkpointer(layout.checkpoints, cfg.checkpoint_every, description, tracker, example),
                ProgressBar(cfg.epochs, cfg.progress, trainer.state.epoch),
            ]
            tensors = {
                name: to_tensors(part.features, part.targets, loss, device) if len(part.targets) else None
                for name, part in parts.items()
            }
            state = trainer.fit(tensors["train"], tensors["val"], callbacks, test=tensors.get("test"))
            epoch = state.best_epoch if cfg.restore_best and state.best_epoch else state.epoch
            record = checkpoints.model_record(
                trainer.model, description=description, epoch=epoch, step=state.step
            )
            checkpoints.save_model(layout.model, record)
            write_text(
                layout.history,
                history_text(
                    {
                        "stop_reason": state.stop_reason,
                        "epochs": state.epoch,
                        "steps": state.step,
                        "best_epoch": state.best_epoch,
                        "resumed_from": resumed_from,
                        "history": state.history,
                        "test_history": state.test_history,
                    }
                ),
            )
            tracker.set_tags({"stop_reason": state.stop_reason})
            model_uri = version = None
            if params.tracking.log_model:
                info = tracker.log_model(layout.model, description, example, step=state.epoch)
                model_uri = info.model_uri if info else None
                version = tracker.register(
                    model_uri,
                    {k: v for k, v in tags.items() if k in REGISTRY_TAGS} | {"run_id": tracker.run_id or ""},
                )
            write_json(
                layout.run,
                {
                    **tracker.info(),
                    "model_uri": model_uri,
                    "registered_model": params.tracking.registered_name if version else None,
                    "model_version": version,
                },
            )
        except BaseException as exc:
            tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        tracker.finish()
    return {"epochs": state.epoch, "stop_reason": state.stop_reason, **state.history[-1]}


REGISTRY_TAGS = ("data_fingerprint", "git_commit", "git_dirty")


def _previous_run_id(layout: Layout) -> str | None:
    """The run a killed training was logging into (from its checkpoints' run.json, if any)."""
    try:
        return read_json(layout.checkpoints / "run.json").get("run_id")
    except (OSError, ValueError):
        return None


# -- evaluate -------------------------------------------------------------------------------------
def _data_plots(model: Any, record: dict[str, Any], layout: Layout, test: Any, batch_size: int) -> list[Path]:
    """The tutorials' pictures of low-dimensional data: decision regions in 2-D, the fit in 1-D."""
    from pipeline import evaluation, plots
    from pipeline.data import load_dataset

    n_inputs, regression = record["n_inputs"], record["task"] == "regression"
    if record.get("scale", 1.0) != 1.0 or n_inputs != (1 if regression else 2):
        return []
    train = load_dataset(layout.split_dir / "train.npz")
    parts = {"train": (train.features, train.targets), "test": (test.features, test.targets)}

    def outputs(x: Any) -> Any:
        return evaluation.predict(model, x, record["loss"], batch_size)

    if regression:
        path = layout.plots / "regression_fit.png"
        plots.regression_fit_png(path, outputs, parts)
    else:
        path = layout.plots / "decision_regions.png"
        plots.decision_regions_png(path, lambda x: outputs(x).argmax(axis=1), parts, record["class_names"])
    return [path]


def evaluate(params: Params, layout: Layout = Layout()) -> dict[str, Any]:
    from pipeline.tracking_process import TrackingProcess

    with TrackingProcess.beside(params.tracking) as background:  # MLflow gets ready while torch scores
        return _evaluate(params, layout, background)


def _evaluate(params: Params, layout: Layout, background: Any) -> dict[str, Any]:
    from pipeline import evaluation, plots
    from pipeline.checkpoints import load_model
    from pipeline.data import load_dataset
    from pipeline.tracking_process import join_tracker

    model, record = load_model(layout.model)
    test = load_dataset(layout.split_dir / "test.npz")
    if test.features.shape[1] != record["n_inputs"]:
        raise PipelineError(
            f"{layout.split_dir / 'test.npz'} has {test.features.shape[1]} features, the model "
            f"{record['n_inputs']}: re-run `pipeline train`"
        )
    outputs = evaluation.predict(model, test.features, record["loss"], params.evaluate.batch_size)
    trained = read_json(layout.history) if layout.history.is_file() else {}
    history = trained.get("history", [])
    pngs: list[Path] = []
    out = layout.plots
    for stale in (*out.glob("*.csv"), *out.glob("*.png")) if out.is_dir() else ():
        stale.unlink()  # a previous evaluation's pictures (DVC removes them itself; `pipeline run` not)
    plots.write_csv(out / "learning_curve.csv", history)
    plots.write_csv(out / "test_curve.csv", trained.get("test_history", []))
    if record["task"] == "regression":
        metrics = evaluation.regression_metrics(test.targets, outputs)
        plots.write_csv(out / "predictions.csv", evaluation.prediction_rows(test.targets, outputs))
    else:
        metrics = evaluation.classification_metrics(test.targets, outputs, record["class_names"])
        predicted = outputs.argmax(axis=1)
        plots.write_csv(
            out / "confusion.csv", evaluation.confusion_rows(test.targets, predicted, record["class_names"])
        )
    write_json(layout.metrics, metrics)
    if params.evaluate.plots:
        pngs.append(out / "learning_curves.png")
        plots.learning_curves_png(pngs[-1], history)
        if record["task"] == "regression":
            pngs.append(out / "predictions.png")
            plots.predictions_png(pngs[-1], test.targets, outputs)
        else:
            counts = evaluation.confusion_matrix(test.targets, predicted, len(record["class_names"]))
            pngs.append(out / "confusion_matrix.png")
            plots.confusion_png(pngs[-1], counts, record["class_names"])
        pngs += _data_plots(model, record, layout, test, params.evaluate.batch_size)
    run = read_json(layout.run) if layout.run.is_file() else {}
    tracker = join_tracker(background, params.tracking, run.get("run_id"))
    try:
        tracker.log_params({"evaluate": params.evaluate.model_dump(mode="json")})
        # at the last optimizer step, so test_* continues any test_every_steps curve
        tracker.log_metrics(evaluation.flat_metrics(metrics), step=int(record.get("step") or 0))
        tracker.log_artifacts(pngs, "plots")
        tracker.log_artifacts([layout.metrics], "metrics")
        metric, larger_is_better = params.evaluate.champion(record["task"])
        decision = tracker.decide_champion(
            run.get("model_version"), metric, larger_is_better, metrics[metric]
        )
        if decision:
            metrics = {**metrics, "champion": decision}
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return metrics
