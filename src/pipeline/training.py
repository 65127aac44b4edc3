"""The fit loop: pure of MLflow and files, it reports each epoch through callbacks.

Data lives on the device as whole tensors and is batched by index; per-epoch metrics are summed
on the device and read back once per epoch (one host sync per epoch, not per step).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pipeline import epoch_graph, history
from pipeline.backprop import DirectBackward, unsupported
from pipeline.config import TrainConfig
from pipeline.errors import ConfigError
from pipeline.model import make_loss
from pipeline.updates import plain_update


@dataclass
class TensorData:
    """Features (n, d) and targets (n,) already on the training device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TrainState:
    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    test_history: list[dict[str, float]] = field(default_factory=list)  # every test_every_steps
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stop_reason: str = ""


class Callback(Protocol):
    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, device: torch.device) -> None:
    """Same seed, same params, same data on the CPU -> the same metrics, bit for bit."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # the C switch behind torch.use_deterministic_algorithms, without its 2 s import of inductor
    set_deterministic = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_deterministic is None:
        torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    else:
        set_deterministic(True, warn_only=device.type != "cpu")


def to_tensors(features: np.ndarray, targets: np.ndarray, loss: str, device: torch.device) -> TensorData:
    """Targets become what the loss wants: class indices, or floats for BCE and regression."""
    y = torch.from_numpy(targets)
    y = y.long() if loss == "cross_entropy" else y.float()
    return TensorData(torch.from_numpy(features).to(device), y.to(device))


def optimizer_options(cfg: TrainConfig, kind: str | None, capturable: bool = False) -> dict[str, Any]:
    """The kernel choice for torch's optimizer on a device of `kind`. On the CPU `foreach` (one
    call per step for all tensors, torch's default on CUDA only): the same arithmetic per element
    as the per-tensor loop, so the same bits. `train.fused` picks torch's fused kernels (one pass
    over the weights) instead: on CUDA by default, on the CPU when asked (faster; rounding differs
    in the last bits). `capturable` (for CUDA graphs) keeps Adam's and RMSprop's step counts on
    the device; SGD has none to keep."""
    fused = cfg.optimizer != "rmsprop" and (cfg.fused is True or (cfg.fused == "auto" and kind == "cuda"))
    foreach = True if kind == "cpu" and not fused else None
    extra: dict[str, Any] = {"fused": True} if fused else {"foreach": foreach}
    if capturable and cfg.optimizer != "sgd":
        extra["capturable"] = True
    return extra


def make_optimizer(
    params: Any, cfg: TrainConfig, device: torch.device | None = None, capturable: bool = False
) -> torch.optim.Optimizer:
    """torch's optimizers with `optimizer_options`."""
    extra = optimizer_options(cfg, device.type if device is not None else None, capturable)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
            **extra,
        )
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=cfg.alpha,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            centered=cfg.centered,
            **extra,
        )
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, **extra
    )


def lean_step(optimizer: torch.optim.Optimizer, scheduler: Any = None) -> Callable[[], Any]:
    """`optimizer.step` without the wrappers torch runs around it on every call (grad mode, a
    compiler graph break that imports torch._dynamo, 1.5 s, on the first call, a profiler scope,
    hook checks: about 100 us, a quarter of a small full-batch epoch): the optimizer's own update
    code on the same tensors, so the same bits; for Adam and SGD in their plain settings, their
    update alone (`updates.plain_update`). The whole `step` where a wrapper matters: hooks, a
    scheduler (it checks that `step` itself was called), `differentiable`."""
    body = inspect.unwrap(type(optimizer).step)
    registry = importlib.import_module("torch.optim.optimizer")  # global hooks live there
    hooks = (
        getattr(optimizer, "_optimizer_step_pre_hooks", None),
        getattr(optimizer, "_optimizer_step_post_hooks", None),
        getattr(registry, "_global_optimizer_pre_hooks", None),
        getattr(registry, "_global_optimizer_post_hooks", None),
    )
    if (
        scheduler is not None
        or None in hooks
        or optimizer.defaults.get("differentiable")
        or body is type(optimizer).step
    ):
        return optimizer.step

    update = plain_update(optimizer)  # Adam's and SGD's plain settings: their update alone

    def own_step() -> Any:
        return None if update is not None and update() else body(optimizer)

    def step() -> Any:
        if any(hooks):  # registered since: they run inside `step`
            return optimizer.step()
        if torch.is_grad_enabled():  # step's own wrapper turns it off, as the fit loop does
            with torch.no_grad():
                return own_step()
        return own_step()

    return step


def leave_dynamo_unimported() -> None:
    """torch.optim marks `add_param_group`, `state_dict`, `load_state_dict` and `zero_grad` as not
    to be compiled through torch._disable_dynamo, which imports torch._dynamo (1.5 s of every
    `pipeline train`) on the first call to register the mark. The mark only matters while
    torch.compile traces code that calls them, which nothing here does (`train.compile` compiles
    the model's forward pass alone): the first call is given the plain method, as it would be
    once registered."""
    if "torch._dynamo" in sys.modules:  # paid already: nothing to save
        return
    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        plain = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if plain is not None and not hasattr(plain, "__dynamo_disable"):
            setattr(plain, "__dynamo_disable", plain)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return None


class Metrics:
    """Sums of loss and errors over an epoch.

    On a GPU they stay on the device until `read` (no host sync per step). On the CPU there is
    no sync to save, and reading each step's few numbers into Python floats costs far fewer
    torch calls than adding tensors; both sum the same float64 values in the same order.
    """

    def __init__(self, loss: str, device: torch.device, on_host: bool | None = None) -> None:
        self.loss_name = loss
        self.on_host = device.type == "cpu" if on_host is None else on_host  # False: sums as tensors
        self.sums: Any = (
            [0.0, 0.0, 0.0] if self.on_host else torch.zeros(3, dtype=torch.float64, device=device)
        )
        self.count = 0

    def add(self, outputs: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """One batch: its mean loss, outputs and targets (no grad needed)."""
        n = len(y)
        self.count += n
        second: Any
        if self.on_host and self.loss_name in ("cross_entropy", "bce"):
            # the count of right answers, an integer, in NumPy on views of the same memory: a
            # few microseconds where torch's five small ops take twenty (a tenth of a small step)
            out, target = outputs.detach().numpy(), y.numpy()
            hits = out.argmax(axis=1) if self.loss_name == "cross_entropy" else out[:, 0] > 0
            second, third = int((hits == target).sum()), None
        elif self.loss_name == "cross_entropy":
            second, third = (outputs.argmax(dim=1) == y).sum(), None
        elif self.loss_name == "bce":
            second, third = ((outputs[:, 0] > 0).float() == y).sum(), None
        else:
            err = (outputs.detach()[:, 0] - y).double()
            second, third = (err * err).sum(), err.abs().sum()
        if self.on_host:
            sums = self.sums
            sums[0] += loss.item() * n  # float32 -> float64, exact, then times n: as loss.double() * n
            sums[1] += second if isinstance(second, int) else second.item()
            if third is not None:
                sums[2] += third.item()
            return
        weighted = loss.detach().double() * n
        self.sums += torch.stack(
            [weighted, second.double(), torch.zeros_like(weighted) if third is None else third]
        )

    def read(self, prefix: str) -> dict[str, float]:
        count = max(self.count, 1)
        sums = self.sums if self.on_host else self.sums.tolist()
        loss, second, third = (value / count for value in sums)
        if self.loss_name in ("cross_entropy", "bce"):
            return {f"{prefix}_loss": loss, f"{prefix}_accuracy": second}
        return {f"{prefix}_loss": loss, f"{prefix}_rmse": second**0.5, f"{prefix}_mae": third}


def batches(n: int, batch_size: int, order: torch.Tensor | None) -> Sequence[Any]:
    """Index slices (or None for the whole set) covering n rows in `order`."""
    if batch_size >= n:
        return [None]
    if order is None:
        return [slice(i, i + batch_size) for i in range(0, n, batch_size)]
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


SMALL_STEP_FLOPS = 1_000_000  # below this, threads cost more in synchronisation than they save


def step_flops(model: nn.Module, batch_rows: int) -> int:
    """Multiply-adds of one forward pass over a batch: what sharing work between threads splits."""
    return batch_rows * sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear)
    )


@contextmanager
def cpu_threads(
    setting: int | str, model: nn.Module, batch_rows: int, device: torch.device
) -> Iterator[None]:
    """torch's intra-op threads for the duration of a fit; `auto` uses one for tiny CPU nets,
    where thread hand-offs dominate (they never change the numbers, only the time)."""
    before = torch.get_num_threads()
    wanted = before
    if device.type == "cpu":
        wanted = (
            (1 if step_flops(model, batch_rows) < SMALL_STEP_FLOPS else before)
            if setting == "auto"
            else int(setting)
        )
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Trainer:
    """Owns model, optimizer, scheduler and RNG; `state_dict` is everything a resume needs."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, loss: str, device: torch.device) -> None:
        self.model, self.cfg, self.loss_name, self.device = model.to(device), cfg, loss, device
        self.loss_fn = make_loss(loss, cfg.huber_delta)
        leave_dynamo_unimported()
        capturable = epoch_graph.planned(cfg, device, self.model)
        self.optimizer = make_optimizer(self.model.parameters(), cfg, device, capturable)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.step = lean_step(self.optimizer, self.scheduler)
        # the training forward pass; compiled, it shares the model's weights (state_dict unchanged)
        self.forward: Any = torch.compile(self.model) if cfg.compile else self.model
        self.direct = (
            DirectBackward(self.model, loss, cfg.huber_delta)  # type: ignore[arg-type]
            if cfg.backward == "direct"
            or (cfg.backward == "auto" and not cfg.compile and not unsupported(self.model, loss))
            else None
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.state = TrainState()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.eval_batch_size = 8192
        self.graph: epoch_graph.EpochGraph | None = None  # the last fit's, when it replayed epochs

    # -- the loop -----------------------------------------------------------------------------
    def fit(
        self,
        train: TensorData,
        val: TensorData | None,
        callbacks: Sequence[Callback] = (),
        test: TensorData | None = None,
    ) -> TrainState:
        """Train until `epochs`, `max_steps` or early stopping; `test`, when given, is scored
        every `test_every_steps` optimizer steps (the tutorials' habit), into `test_history`."""
        rows = len(train) if self.cfg.batch_size == "full" else min(self.cfg.batch_size, len(train))
        with cpu_threads(self.cfg.threads, self.model, rows, self.device):
            return self._fit(train, val, callbacks, test)

    def _fit(
        self,
        train: TensorData,
        val: TensorData | None,
        callbacks: Sequence[Callback],
        test: TensorData | None,
    ) -> TrainState:
        cfg, state = self.cfg, self.state
        n = len(train)
        batch_size = n if cfg.batch_size == "full" else cfg.batch_size
        if cfg.max_steps and state.step >= cfg.max_steps:
            state.stop_reason = "max_steps"
        graph = self.graph = self.epoch_graph(train, val, len(batches(n, batch_size, None)))
        self.model.train()
        while state.epoch < cfg.epochs and not state.stop_reason:
            if not self.model.training:  # `evaluate` switched it (not per epoch: it walks every module)
                self.model.train()
            val_totals = None
            if graph is not None:  # the whole epoch, validation included, in one replay
                totals, val_totals = graph.epoch()
                self._stepped(test)
            else:
                totals = self._train_epoch(train, n, batch_size, test)
            state.epoch += 1
            lr = self.optimizer.param_groups[0]["lr"]
            if self.scheduler is not None:
                self.scheduler.step()
            metrics = {"epoch": state.epoch, "step": state.step, **totals.read("train"), "lr": lr}
            if val is not None and len(val):
                metrics.update((self.evaluate(val) if val_totals is None else val_totals).read("val"))
            state.history.append(metrics)
            self._track_best(metrics)
            for callback in callbacks:
                callback.on_epoch_end(self, metrics)
        if not state.stop_reason:
            state.stop_reason = "epochs"
        for callback in callbacks:  # the final checkpoint holds the last epoch, resumable
            callback.on_train_end(self)
        if cfg.restore_best and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        return state

    def _train_epoch(self, train: TensorData, n: int, batch_size: int, test: TensorData | None) -> Metrics:
        cfg = self.cfg
        totals = Metrics(self.loss_name, self.device)
        order = None
        if cfg.shuffle and batch_size < n:
            order = torch.randperm(n, generator=self.generator).to(self.device)
        with torch.set_grad_enabled(self.direct is None):  # the direct pass records nothing
            for index in batches(n, batch_size, order):
                xb = train.x if index is None else train.x[index]
                yb = train.y if index is None else train.y[index]
                self._train_step(xb, yb, totals)
                if self._stepped(test):
                    break
        return totals

    def _stepped(self, test: TensorData | None) -> bool:
        """Counts one optimizer step, scores `test` when it is due; True once max_steps is reached."""
        cfg, state = self.cfg, self.state
        state.step += 1
        if test is not None and cfg.test_every_steps and state.step % cfg.test_every_steps == 0:
            state.test_history.append({"step": state.step, **self.evaluate(test).read("test")})
            self.model.train()
        if cfg.max_steps and state.step >= cfg.max_steps:
            state.stop_reason = "max_steps"
            return True
        return False

    def _train_step(self, xb: torch.Tensor, yb: torch.Tensor, totals: Metrics) -> None:
        """One optimizer step on a batch, its loss and hits added to `totals`."""
        if self.direct is not None:  # sets each .grad, as the three lines below do
            outputs, loss = self.direct(xb.float(), yb)
        else:
            outputs = self.forward(xb.float())
            loss = self.loss_fn(self._squeeze(outputs), yb)
            for param in self.params:  # zero_grad(set_to_none=True), without its profiler scope
                param.grad = None
            loss.backward()
        self.step()
        totals.add(outputs, yb, loss)

    # -- CUDA graphs --------------------------------------------------------------------------
    def epoch_graph(
        self, train: TensorData, val: TensorData | None, steps_per_epoch: int
    ) -> epoch_graph.EpochGraph | None:
        """The replayed full-batch epoch where `train.cuda_graphs` and the loop allow it, else
        None (eager epochs); `true` where it cannot be is refused in one line."""
        if self.cfg.cuda_graphs is False:
            return None
        reason = self.graph_unsupported(steps_per_epoch)
        if reason:
            if self.cfg.cuda_graphs is True:
                raise ConfigError("train.cuda_graphs", True, f"auto or false here: {reason}")
            return None
        return epoch_graph.EpochGraph(self.graph_body(train, val), required=self.cfg.cuda_graphs is True)

    def graph_unsupported(self, steps_per_epoch: int) -> str:
        """Why this trainer's epochs cannot be replayed as a CUDA graph ('' when they can)."""
        scheduled, compiled = self.scheduler is not None, self.cfg.compile
        return epoch_graph.unsupported(
            self.device, steps_per_epoch, scheduled, self.model, compiled, self.optimizer
        )

    def graph_body(
        self, train: TensorData, val: TensorData | None
    ) -> Callable[[], tuple[Metrics, Metrics | None]]:
        """One full-batch epoch with its sums kept as tensors (no host sync): the train step,
        then the validation pass, as the eager loop runs them."""

        def body() -> tuple[Metrics, Metrics | None]:
            self.model.train()
            totals = Metrics(self.loss_name, self.device, on_host=False)
            with torch.set_grad_enabled(self.direct is None):
                self._train_step(train.x, train.y, totals)
            checked = self.evaluate(val, on_host=False) if val is not None and len(val) else None
            return totals, checked

        return body

    def _squeeze(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs if self.loss_name == "cross_entropy" else outputs[:, 0]

    @torch.no_grad()
    def evaluate(self, data: TensorData, on_host: bool | None = None) -> Metrics:
        self.model.eval()
        totals = Metrics(self.loss_name, self.device, on_host)
        for index in batches(len(data), self.eval_batch_size, None):
            xb = data.x if index is None else data.x[index]
            yb = data.y if index is None else data.y[index]
            outputs = self.model(xb.float())
            totals.add(outputs, yb, self.loss_fn(self._squeeze(outputs), yb))
        return totals

    def _track_best(self, metrics: dict[str, float]) -> None:
        cfg, state = self.cfg, self.state
        value = metrics.get(cfg.monitor)
        if value is None:
            return
        larger_is_better = cfg.monitor.endswith("accuracy")
        improved = state.best_value is None or (
            value > state.best_value if larger_is_better else value < state.best_value
        )
        if improved:
            state.best_value, state.best_epoch, state.bad_epochs = value, state.epoch, 0
            if cfg.restore_best:
                self.best_weights = copy.deepcopy(self.model.state_dict())
        else:
            state.bad_epochs += 1
            if cfg.early_stopping_patience and state.bad_epochs >= cfg.early_stopping_patience:
                state.stop_reason = "early_stopping"

    # -- resume -------------------------------------------------------------------------------
    KERNEL_OPTIONS = ("foreach", "fused", "capturable")

    def _on_this_device(self, saved: dict[str, Any]) -> dict[str, Any]:
        """The saved optimizer with this run's kernel choices (`optimizer_options`): a GPU run's
        checkpoint says fused and capturable, which a CPU run must not inherit, and the other way
        round; torch then places the step counters as these choices want them."""
        mine = self.optimizer.param_groups
        if len(saved.get("param_groups", ())) != len(mine):
            return saved  # torch's own load says what is wrong
        groups = [
            {**group, **{k: own[k] for k in self.KERNEL_OPTIONS if k in own}}
            for group, own in zip(saved["param_groups"], mine, strict=True)
        ]
        return {**saved, "param_groups": groups}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "best_weights": self.best_weights,
            "state": {  # the histories as one tensor per metric (see pipeline.history)
                **self.state.__dict__,
                "history": history.packed(self.state.history),
                "test_history": history.packed(self.state.test_history),
            },
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(self._on_this_device(saved["optimizer"]))
        if self.scheduler is not None and saved["scheduler"] is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        self.best_weights = saved.get("best_weights")
        state = saved["state"]
        self.state = TrainState(
            **{
                **state,
                "history": history.unpacked(state["history"]),
                "test_history": history.unpacked(state["test_history"]),
            }
        )
        if self.state.stop_reason in ("epochs", "max_steps"):  # the limits may have been raised since
            self.state.stop_reason = ""
