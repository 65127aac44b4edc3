"""The fit loop on small in-memory tensors, checked against hand-written loops and torch itself."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import run_script, tiny_params
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error
from torch import nn

from pipeline.config import Params, check_combinations, default_loss, params_from_dict
from pipeline.data import make_dataset
from pipeline.errors import ConfigError
from pipeline.model import build_model, head_size
from pipeline.split import split_dataset
from pipeline.training import TensorData, Trainer, make_optimizer, seed_everything, to_tensors

CPU = torch.device("cpu")


def config(**sections) -> Params:
    return params_from_dict(tiny_params(**sections))


def prepare(params: Params) -> tuple[nn.Module, str, TensorData, TensorData]:
    """Seeded model plus train/val tensors, as the train stage builds them."""
    parts = split_dataset(make_dataset(params.data), params.split)
    train, val = parts["train"], parts["val"]
    loss = default_loss(train.task) if params.train.loss == "auto" else params.train.loss
    seed_everything(params.train.seed, CPU)
    model = build_model(params.model, train.features.shape[1], head_size(loss, max(train.n_classes, 1)))
    return (
        model,
        loss,
        to_tensors(train.features, train.targets, loss, CPU),
        to_tensors(val.features, val.targets, loss, CPU),
    )


def fit(params: Params, callbacks=()) -> Trainer:
    model, loss, train, val = prepare(params)
    trainer = Trainer(model, params.train, loss, CPU)
    trainer.fit(train, val, callbacks)
    return trainer


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Snapshots:
    """A callback keeping a copy of the weights after every epoch."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.ended = 0

    def on_epoch_end(self, trainer, metrics) -> None:
        self.weights.append(copy.deepcopy(trainer.model.state_dict()))

    def on_train_end(self, trainer) -> None:
        self.ended += 1


# -- learning -------------------------------------------------------------------------------------
def test_multiclass_loss_falls():
    params = config(data={"cluster_std": 0.5}, train={"optimizer": "adam", "lr": 0.05, "epochs": 15})
    history = fit(params).state.history
    assert len(history) == 15
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < 0.5 * history[0]["val_loss"]
    assert history[-1]["val_accuracy"] > 0.95


def test_binary_bce_loss_falls():
    params = config(
        data={"source": "blobs", "centers": 2},
        train={"optimizer": "adam", "lr": 0.05, "epochs": 10, "loss": "bce"},
    )
    trainer = fit(params)
    assert trainer.loss_name == "bce"
    assert isinstance(trainer.loss_fn, nn.BCEWithLogitsLoss)
    history = trainer.state.history
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.9


def test_linear_regression_with_l1_and_sgd_recovers_weight_and_bias():
    params = config(
        data={"source": "linear", "weight": 0.7, "bias": 0.3},
        model={"hidden": []},
        train={"loss": "l1", "optimizer": "sgd", "lr": 0.01, "epochs": 200, "batch_size": 8},
    )
    trainer = fit(params)
    history = trainer.state.history
    assert history[-1]["train_loss"] < 0.1 * history[0]["train_loss"]
    (layer,) = [m for m in trainer.model.modules() if isinstance(m, nn.Linear)]
    assert layer.weight.item() == pytest.approx(0.7, abs=0.03)
    assert layer.bias.item() == pytest.approx(0.3, abs=0.03)


# -- equal to a hand-written loop -----------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["none", "step"])
def test_full_batch_sgd_equals_plain_loop(scheduler):
    params = config(
        train={
            "optimizer": "sgd",
            "lr": 0.3,
            "batch_size": "full",
            "epochs": 8,
            "scheduler": scheduler,
            "step_size": 3,
            "gamma": 0.5,
        }
    )
    model, loss, train, val = prepare(params)
    trainer = Trainer(model, params.train, loss, CPU)
    state = trainer.fit(train, val)

    seed_everything(params.train.seed, CPU)
    plain = build_model(params.model, train.x.shape[1], 3)
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.3)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, 3, 0.5) if scheduler == "step" else None
    loss_fn = nn.CrossEntropyLoss()
    losses, accuracies = [], []
    for _ in range(8):
        plain.train()
        outputs = plain(train.x)
        batch_loss = loss_fn(outputs, train.y)
        batch_loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if schedule:
            schedule.step()
        losses.append(batch_loss.item())
        accuracies.append((outputs.argmax(1) == train.y).double().mean().item())

    assert same_weights(trainer.model, plain)
    assert [row["train_loss"] for row in state.history] == losses
    assert [row["train_accuracy"] for row in state.history] == pytest.approx(accuracies, abs=1e-12)
    assert [row["step"] for row in state.history] == list(range(1, 9))


def test_ordered_mini_batches_equal_plain_loop():
    params = config(
        train={
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.5,
            "batch_size": 16,
            "shuffle": False,
            "epochs": 3,
        }
    )
    model, loss, train, val = prepare(params)
    trainer = Trainer(model, params.train, loss, CPU)
    state = trainer.fit(train, val)

    seed_everything(params.train.seed, CPU)
    plain = build_model(params.model, train.x.shape[1], 3)
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.5)
    loss_fn = nn.CrossEntropyLoss()
    n = len(train.y)
    epoch_losses = []
    for _ in range(3):
        total = 0.0
        for start in range(0, n, 16):
            xb, yb = train.x[start : start + 16], train.y[start : start + 16]
            batch_loss = loss_fn(plain(xb), yb)
            batch_loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += batch_loss.item() * len(yb)
        epoch_losses.append(total / n)

    assert n == 120
    assert same_weights(trainer.model, plain)
    assert [row["train_loss"] for row in state.history] == epoch_losses
    assert [row["step"] for row in state.history] == [8, 16, 24]  # ceil(120 / 16) per epoch


# -- reproducibility ------------------------------------------------------------------------------
def test_same_config_same_history_and_weights():
    params = config(
        model={"hidden": [16, 8], "dropout": 0.3},
        train={"optimizer": "adam", "lr": 0.01, "batch_size": 16, "shuffle": True, "epochs": 4},
    )
    first, second = fit(params), fit(params)
    assert first.state.history == second.state.history
    assert same_weights(first.model, second.model)

    other = fit(
        config(
            model={"hidden": [16, 8], "dropout": 0.3},
            train={
                "optimizer": "adam",
                "lr": 0.01,
                "batch_size": 16,
                "shuffle": True,
                "epochs": 4,
                "seed": 1,
            },
        )
    )
    assert other.state.history != first.state.history


def test_shuffle_changes_batches():
    base = {"optimizer": "sgd", "lr": 0.1, "batch_size": 16, "epochs": 2}
    ordered = fit(config(train={**base, "shuffle": False}))
    shuffled = fit(config(train={**base, "shuffle": True}))
    assert not same_weights(ordered.model, shuffled.model)


# -- stopping -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("max_steps", "epochs_run"), [(6, 2), (8, 2), (1, 1)])
def test_max_steps_counts_optimizer_steps(max_steps, epochs_run):
    params = config(train={"epochs": 10, "batch_size": 32, "max_steps": max_steps})
    model, loss, train, val = prepare(params)
    trainer = Trainer(model, params.train, loss, CPU)
    calls = []
    trainer.optimizer.register_step_post_hook(lambda *args: calls.append(1))
    state = trainer.fit(train, val)
    assert len(calls) == max_steps
    assert state.step == max_steps
    assert state.stop_reason == "max_steps"
    assert state.epoch == epochs_run  # 120 rows / 32 = 4 steps an epoch
    assert state.history[-1]["step"] == max_steps


def test_runs_all_epochs_without_limits():
    state = fit(config(train={"epochs": 4})).state
    assert state.stop_reason == "epochs"
    assert state.epoch == 4
    assert state.step == 16


def test_early_stopping_when_val_loss_cannot_improve():
    # lr so small that no weight changes: val_loss is exactly equal every epoch, never better
    params = config(
        train={
            "optimizer": "sgd",
            "lr": 1e-30,
            "batch_size": "full",
            "epochs": 20,
            "early_stopping_patience": 2,
        }
    )
    model, loss, train, val = prepare(params)
    start = copy.deepcopy(model)
    trainer = Trainer(model, params.train, loss, CPU)
    state = trainer.fit(train, val)
    assert same_weights(trainer.model, start)
    assert state.stop_reason == "early_stopping"
    assert state.epoch == 3  # epoch 1 sets the best, 2 and 3 are the two bad epochs
    assert state.best_epoch == 1
    assert len({row["val_loss"] for row in state.history}) == 1


def test_early_stopping_patience_on_noisy_training():
    base = {"optimizer": "sgd", "lr": 1.0, "batch_size": "full", "epochs": 12}
    full = fit(config(train=base)).state.history
    # where patience 2 must stop, found from the unstopped run
    best, bad, expected_stop = math.inf, 0, None
    for row in full:
        if row["val_loss"] < best:
            best, bad = row["val_loss"], 0
        else:
            bad += 1
            if bad == 2:
                expected_stop = row["epoch"]
                break
    assert expected_stop is not None and expected_stop < 12  # the data is noisy enough
    state = fit(config(train={**base, "early_stopping_patience": 2})).state
    assert state.stop_reason == "early_stopping"
    assert state.epoch == expected_stop
    assert state.history == full[:expected_stop]


def test_restore_best_puts_back_best_epoch_weights():
    params = config(
        train={"optimizer": "sgd", "lr": 1.0, "batch_size": "full", "epochs": 12, "restore_best": True}
    )
    snapshots = Snapshots()
    trainer = fit(params, [snapshots])
    state = trainer.state
    val_losses = [row["val_loss"] for row in state.history]
    best = int(np.argmin(val_losses)) + 1
    assert state.best_epoch == best
    assert best < 12  # otherwise restoring would be indistinguishable from not restoring
    assert state.best_value == min(val_losses)
    assert snapshots.ended == 1
    assert same_weights(trainer.model, _module_with(trainer.model, snapshots.weights[best - 1]))
    assert not same_weights(trainer.model, _module_with(trainer.model, snapshots.weights[-1]))


def test_without_restore_best_keeps_last_weights():
    params = config(train={"optimizer": "sgd", "lr": 1.0, "batch_size": "full", "epochs": 12})
    snapshots = Snapshots()
    trainer = fit(params, [snapshots])
    assert same_weights(trainer.model, _module_with(trainer.model, snapshots.weights[-1]))


def test_restore_best_monitoring_accuracy_picks_highest():
    params = config(
        train={
            "optimizer": "sgd",
            "lr": 1.0,
            "batch_size": "full",
            "epochs": 12,
            "restore_best": True,
            "monitor": "val_accuracy",
        }
    )
    snapshots = Snapshots()
    trainer = fit(params, [snapshots])
    accuracies = [row["val_accuracy"] for row in trainer.state.history]
    best = int(np.argmax(accuracies)) + 1  # first epoch reaching the maximum
    assert trainer.state.best_epoch == best
    assert same_weights(trainer.model, _module_with(trainer.model, snapshots.weights[best - 1]))


def _module_with(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    other = copy.deepcopy(model)
    other.load_state_dict(weights)
    return other


# -- history rows ---------------------------------------------------------------------------------
def test_history_rows_classification():
    trainer = fit(config(train={"epochs": 3}))
    history = trainer.state.history
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert [row["step"] for row in history] == [4, 8, 12]
    for row in history:
        assert set(row) == {"epoch", "step", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
        assert 0.0 <= row["train_accuracy"] <= 1.0
    # the last val metrics are those of the final model on the validation set
    _, _, _, val = prepare(config(train={"epochs": 3}))
    trainer.model.eval()
    with torch.no_grad():
        outputs = trainer.model(val.x)
    assert history[-1]["val_loss"] == pytest.approx(nn.CrossEntropyLoss()(outputs, val.y).item(), rel=1e-6)
    assert history[-1]["val_accuracy"] == pytest.approx(
        accuracy_score(val.y.numpy(), outputs.argmax(1).numpy())
    )


def test_history_rows_binary():
    trainer = fit(config(data={"source": "moons", "noise": 0.2}, train={"epochs": 2}))
    row = trainer.state.history[-1]
    assert set(row) == {"epoch", "step", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    _, _, _, val = prepare(config(data={"source": "moons", "noise": 0.2}))
    with torch.no_grad():
        outputs = trainer.model.eval()(val.x)
    predicted = (torch.sigmoid(outputs[:, 0]) > 0.5).long().numpy()
    assert row["val_accuracy"] == pytest.approx(accuracy_score(val.y.long().numpy(), predicted))
    expected = nn.BCEWithLogitsLoss()(outputs[:, 0], val.y).item()
    assert row["val_loss"] == pytest.approx(expected, rel=1e-6)


def test_history_rows_regression():
    params = config(data={"source": "linear"}, model={"hidden": [4]}, train={"epochs": 2, "loss": "mse"})
    trainer = fit(params)
    row = trainer.state.history[-1]
    assert set(row) == {
        "epoch",
        "step",
        "lr",
        "train_loss",
        "train_rmse",
        "train_mae",
        "val_loss",
        "val_rmse",
        "val_mae",
    }
    _, _, _, val = prepare(params)
    with torch.no_grad():
        predicted = trainer.model.eval()(val.x)[:, 0].numpy()
    truth = val.y.numpy()
    assert row["val_rmse"] == pytest.approx(math.sqrt(mean_squared_error(truth, predicted)), rel=1e-5)
    assert row["val_mae"] == pytest.approx(mean_absolute_error(truth, predicted), rel=1e-5)
    assert row["val_loss"] == pytest.approx(mean_squared_error(truth, predicted), rel=1e-5)


# -- schedulers -----------------------------------------------------------------------------------
def _torch_lrs(kind: str, lr: float, epochs: int) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    if kind == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_step_scheduler_lr_per_epoch():
    params = config(
        train={"optimizer": "sgd", "lr": 0.1, "epochs": 6, "scheduler": "step", "step_size": 2, "gamma": 0.5}
    )
    lrs = [row["lr"] for row in fit(params).state.history]
    assert lrs == _torch_lrs("step", 0.1, 6)
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_cosine_scheduler_lr_per_epoch():
    params = config(train={"optimizer": "adam", "lr": 0.1, "epochs": 6, "scheduler": "cosine"})
    lrs = [row["lr"] for row in fit(params).state.history]
    assert lrs == pytest.approx(_torch_lrs("cosine", 0.1, 6), rel=1e-12)
    assert lrs == pytest.approx([0.05 * (1 + math.cos(math.pi * e / 6)) for e in range(6)])


def test_no_scheduler_keeps_lr():
    lrs = [row["lr"] for row in fit(config(train={"lr": 0.02, "epochs": 3})).state.history]
    assert lrs == [0.02, 0.02, 0.02]


def test_auto_threads_use_one_for_a_tiny_net_and_restore_the_setting():
    from pipeline.training import SMALL_STEP_FLOPS, cpu_threads, step_flops

    tiny = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 4))
    wide = nn.Sequential(nn.Linear(2, 4096), nn.Sigmoid(), nn.Linear(4096, 4))
    assert step_flops(tiny, 800) == 800 * (2 * 10 + 10 * 4) < SMALL_STEP_FLOPS
    assert step_flops(wide, 800) > SMALL_STEP_FLOPS
    torch.set_num_threads(2)
    try:
        with cpu_threads("auto", tiny, 800, torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with cpu_threads("auto", wide, 800, torch.device("cpu")):
            assert torch.get_num_threads() == 2
        with cpu_threads(1, wide, 800, torch.device("cpu")):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(2)


@pytest.mark.parametrize("hidden", [[10], [512]])
def test_thread_count_never_changes_the_numbers(hidden):
    def run(threads: int) -> tuple[list, list]:
        params = params_from_dict(
            tiny_params(model={"hidden": hidden}, train={"threads": threads, "epochs": 3, "batch_size": 64})
        )
        ds = make_dataset(params.data)
        parts = split_dataset(ds, params.split)
        seed_everything(0, torch.device("cpu"))
        model = build_model(params.model, 2, 3)
        trainer = Trainer(model, params.train, "cross_entropy", torch.device("cpu"))
        train = to_tensors(
            parts["train"].features, parts["train"].targets, "cross_entropy", torch.device("cpu")
        )
        state = trainer.fit(train, None)
        return state.history, [p.detach().clone() for p in model.parameters()]

    one, two = run(1), run(2)
    assert one[0] == two[0]
    assert all(torch.equal(a, b) for a, b in zip(one[1], two[1], strict=True))


@pytest.mark.parametrize(
    "optimizer",
    [
        {"optimizer": "sgd", "lr": 0.1},
        {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
        {"optimizer": "adam", "lr": 1e-2, "weight_decay": 1e-3},
        {"optimizer": "adamw", "lr": 1e-2},
        {"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.9, "centered": True},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_cpu_optimizers_use_foreach_and_match_the_per_tensor_loop_bit_for_bit(optimizer):
    """`make_optimizer` asks for torch's multi-tensor path on the CPU (fewer calls per step);
    the weights after training equal those of torch's default per-tensor loop exactly."""
    params = config(train={"epochs": 4, **optimizer})
    ours = fit(params)
    assert ours.optimizer.defaults["foreach"] is True
    model, loss, train, val = prepare(params)
    plain = Trainer(model, params.train, loss, CPU)
    plain.optimizer = make_optimizer(plain.model.parameters(), params.train)  # torch's default
    assert not plain.optimizer.defaults["foreach"]
    plain.fit(train, val)
    assert same_weights(ours.model, plain.model)
    assert ours.state.history == plain.state.history


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_fused_on_the_cpu_is_asked_for_and_lands_within_float_tolerance(optimizer):
    """`train.fused: true` swaps in torch's fused kernel: the same update rule, other rounding."""
    lr = 0.1 if optimizer == "sgd" else 1e-2
    plain = fit(config(train={"epochs": 4, "optimizer": optimizer, "lr": lr}))
    fused = fit(config(train={"epochs": 4, "optimizer": optimizer, "lr": lr, "fused": True}))
    assert fused.optimizer.defaults["fused"] is True
    assert not plain.optimizer.defaults.get("fused")
    for a, b in zip(plain.model.parameters(), fused.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fused_rmsprop_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"train\.fused.*rmsprop"):
        check_combinations(config(train={"optimizer": "rmsprop", "fused": True}))


def test_compile_trains_the_same_model_within_float_tolerance():
    """`train.compile: true` runs the training forward pass through torch.compile (inductor builds
    C++ kernels here): the weights it updates are the model's, and they end where eager ends,
    up to rounding."""
    eager = fit(config(train={"epochs": 2}))
    compiled = fit(config(train={"epochs": 2, "compile": True}))
    assert compiled.forward is not compiled.model
    assert eager.forward is eager.model
    for a, b in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert compiled.state.history[-1]["train_loss"] == pytest.approx(
        eager.state.history[-1]["train_loss"], rel=1e-4
    )


@pytest.mark.parametrize(
    "sections",
    [
        {},  # the default: relu, Adam, mini-batches, validation
        {"model": {"hidden": [10], "activation": "sigmoid"}, "train": {"optimizer": "sgd", "lr": 1.0,
                                                                      "batch_size": "full"}},
        {"train": {"optimizer": "sgd", "lr": 0.1, "scheduler": "step", "step_size": 1, "gamma": 0.5}},
        {"model": {"activation": "tanh"}, "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9}},
        {"data": {"source": "moons", "noise": 0.2}, "train": {"optimizer": "rmsprop", "lr": 1e-3}},
        {"data": {"source": "linear"}, "model": {"hidden": []}, "train": {"loss": "l1", "optimizer": "sgd"}},
        {"data": {"source": "linear"}, "model": {"hidden": [4], "activation": "gelu"},
         "train": {"loss": "huber"}},
    ],
    ids=["default", "s0-full-batch-sgd", "sgd-scheduler", "tanh-momentum", "moons-bce", "linear-l1", "huber"],
)
def test_direct_backward_trains_exactly_as_autograd(sections):
    """`train.backward: auto` takes the direct pass for plain stacks; weights and every history
    row equal autograd's, bit for bit, for each loss and optimizer."""
    sections = {**sections, "train": {"epochs": 4, **sections.get("train", {})}}
    direct = fit(config(**sections))
    autograd = fit(config(**{**sections, "train": {**sections["train"], "backward": "autograd"}}))
    assert direct.direct is not None and autograd.direct is None
    assert same_weights(direct.model, autograd.model)
    assert direct.state.history == autograd.state.history


@pytest.mark.parametrize(
    "train",
    [
        {"optimizer": "sgd", "lr": 0.1},
        {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3},
        {"optimizer": "adam"},
        {"optimizer": "adamw", "fused": True},
        {"optimizer": "rmsprop", "centered": True},
    ],
    ids=["sgd", "sgd-momentum", "adam", "adamw-fused", "rmsprop"],
)
def test_the_lean_step_is_the_optimizers_own_update_bit_for_bit(train):
    """The fit loop calls the optimizer's update without `step`'s per-call wrappers: the same
    weights and optimizer state as calling `step` itself."""
    lean = fit(config(train={"epochs": 3, **train}))
    assert lean.step != lean.optimizer.step
    model, loss, data, val = prepare(config(train={"epochs": 3, **train}))
    whole = Trainer(model, lean.cfg, loss, CPU)
    whole.step = whole.optimizer.step
    whole.fit(data, val)
    assert same_weights(lean.model, whole.model)
    a, b = lean.optimizer.state_dict()["state"], whole.optimizer.state_dict()["state"]
    assert a.keys() == b.keys() and all(
        torch.equal(a[i][k], b[i][k]) for i in a for k in a[i] if isinstance(a[i][k], torch.Tensor)
    )


def test_a_scheduler_keeps_the_whole_step():
    trainer = fit(config(train={"epochs": 1, "optimizer": "sgd", "lr": 0.1, "scheduler": "step"}))
    assert trainer.step == trainer.optimizer.step


def test_training_leaves_torch_dynamo_unimported(tmp_path):
    """torch.optim would import torch._dynamo (1.5 s of every `pipeline train`) only to mark
    methods the compiler must skip; nothing here compiles them."""
    code = (
        "import sys; from conftest import tiny_params; from pipeline.config import params_from_dict;"
        "from pipeline.stages import Layout, data, split, train; from pathlib import Path;"
        "p = params_from_dict(tiny_params(train={'epochs': 2, 'checkpoint_every': 1}));"
        "layout = Layout(Path(sys.argv[1])); data(p, layout); split(p, layout); train(p, layout);"
        "print('torch._dynamo' in sys.modules)"
    )
    assert run_script(code, tmp_path) == "False"


def test_auto_backward_falls_back_to_autograd_where_the_direct_pass_cannot_go():
    assert fit(config(model={"dropout": 0.2}, train={"epochs": 1})).direct is None
    assert fit(config(model={"batch_norm": True}, train={"epochs": 1})).direct is None


@pytest.mark.parametrize(
    ("sections", "what"),
    [({"model": {"dropout": 0.2}}, "model.dropout"), ({"model": {"batch_norm": True}}, "model.batch_norm"),
     ({"train": {"compile": True}}, "train.compile")],
)
def test_direct_backward_is_refused_in_one_line_where_it_cannot_go(sections, what):
    sections = {**sections, "train": {**sections.get("train", {}), "backward": "direct"}}
    with pytest.raises(ConfigError, match=rf"train\.backward.*{what}") as refused:
        check_combinations(config(**sections))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("loss", ["cross_entropy", "bce"])
def test_metrics_count_right_answers_on_the_host_as_torch_does(loss):
    """On the CPU the per-batch count of right answers is taken in NumPy on the same memory; it
    equals torch's count (the device path), ties, NaN and infinities included."""
    from pipeline.training import Metrics

    generator = torch.Generator().manual_seed(0)
    host, device_path = Metrics(loss, CPU), Metrics(loss, CPU)
    device_path.on_host, device_path.sums = False, torch.zeros(3, dtype=torch.float64)
    for _ in range(5):
        columns = 4 if loss == "cross_entropy" else 1
        outputs = torch.randint(-2, 3, (33, columns), generator=generator).float()  # ties
        outputs[0, 0], outputs[1, -1], outputs[2, 0] = float("nan"), float("inf"), 0.0
        if loss == "cross_entropy":
            y = torch.randint(0, 4, (33,), generator=generator)
        else:
            y = torch.randint(0, 2, (33,), generator=generator).float()
        batch_loss = torch.rand((), generator=generator)
        host.add(outputs, y, batch_loss)
        device_path.add(outputs, y, batch_loss)
    assert host.read("train") == device_path.read("train")
