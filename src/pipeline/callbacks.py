"""What the fit loop reports to, each epoch: progress bar, checkpoints, MLflow metrics."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


class ProgressBar:
    """A tqdm bar on a terminal; silent in CI logs and pipes unless asked for."""

    def __init__(self, total: int, mode: str, start: int) -> None:
        show = mode == "on" or (mode == "auto" and sys.stderr.isatty())
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="epoch", file=sys.stderr)

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                {k: f"{v:.4g}" for k, v in metrics.items() if k.endswith(("loss", "accuracy"))}, refresh=False
            )

    def on_train_end(self, trainer: Any) -> None:
        if self.bar is not None:
            self.bar.close()


class Checkpointer:
    """Every `checkpoint_every` epochs and at the end, into models/checkpoints/."""

    def __init__(
        self, folder: Path, every: int, description: dict[str, Any], tracker: Any, example: Any = None
    ) -> None:
        self.folder, self.every, self.description, self.tracker = folder, every, description, tracker
        self.example = example  # the run's input example, logged with each checkpoint model
        self.saved_epoch = -1

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if self.every and trainer.state.epoch % self.every == 0:
            self.save(trainer)

    def on_train_end(self, trainer: Any) -> None:
        if self.saved_epoch != trainer.state.epoch:
            self.save(trainer)

    def save(self, trainer: Any) -> None:
        from pipeline.checkpoints import save_checkpoint

        epoch = trainer.state.epoch
        path = save_checkpoint(self.folder, epoch, trainer.state_dict(), self.description)
        self.saved_epoch = epoch
        monitor = trainer.cfg.monitor
        score = trainer.state.history[-1].get(monitor) if trainer.state.history else None
        self.tracker.log_checkpoint(
            path, self.description, epoch, score, monitor.endswith("accuracy"), self.example
        )


class MetricLogger:
    """Per-epoch metrics with step = epoch, every `every` epochs and at checkpoints and the last;
    mid-training test scores with step = optimizer step. `lr` only when a scheduler moves it
    (otherwise it is the `train.lr` param)."""

    def __init__(
        self, tracker: Any, every: int = 1, checkpoint_every: int = 0, lr_moves: bool = True
    ) -> None:
        self.tracker, self.every, self.checkpoint_every = tracker, every, checkpoint_every
        self.skipped = ("epoch", "step") if lr_moves else ("epoch", "step", "lr")
        self.tests_logged = 0
        self.last_logged = 0

    def wanted(self, epoch: int) -> bool:
        return epoch % self.every == 0 or bool(self.checkpoint_every and epoch % self.checkpoint_every == 0)

    def catch_up(self, state: Any) -> None:
        """A resumed run: send what the killed process had not sent (its buffer died with it)."""
        sent_epoch = self.tracker.last_logged_step("train_loss")
        sent_test = self.tracker.last_logged_step("test_loss")
        self.tracker.relink_checkpoints()
        for metrics in state.history:
            last = metrics is state.history[-1]
            if metrics["epoch"] > sent_epoch and (self.wanted(metrics["epoch"]) or last):
                self._log(metrics)
        for point in state.test_history:
            if point["step"] > sent_test:
                self._log_test(point)
        self.tests_logged = len(state.test_history)
        self.last_logged = state.history[-1]["epoch"] if state.history else 0

    def _log(self, metrics: dict[str, float]) -> None:
        values = {k: v for k, v in metrics.items() if k not in self.skipped}
        self.tracker.log_metrics(values, step=int(metrics["epoch"]))
        self.last_logged = int(metrics["epoch"])

    def _log_test(self, point: dict[str, float]) -> None:
        self.tracker.log_metrics({k: v for k, v in point.items() if k != "step"}, step=int(point["step"]))

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if self.wanted(int(metrics["epoch"])):
            self._log(metrics)
        for point in trainer.state.test_history[self.tests_logged :]:  # test_* by optimizer step
            self._log_test(point)
        self.tests_logged = len(trainer.state.test_history)

    def on_train_end(self, trainer: Any) -> None:
        history = trainer.state.history
        if history and self.last_logged != history[-1]["epoch"]:
            self._log(history[-1])  # the last epoch always; sent with the models' links at the end
