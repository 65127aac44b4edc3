"""Full-batch epochs replayed as a CUDA graph (pipeline.epoch_graph), tested on the CPU.

No GPU here: the graph is graph_replay's stand-in, which records one run's aten operations on
their tensors and replays them without the Python that issued them, as CUDA does, and fails
where a capture would (a host read). The fit loop with replayed epochs must give the eager
loop's weights and history bit for bit; which loops qualify, and the refusals, are checked too.
"""

from __future__ import annotations

import pytest
import torch
from graph_replay import HostSync, capture
from test_training import CPU, Snapshots, config, prepare, same_weights

from pipeline.epoch_graph import WARMUP_EPOCHS, EpochGraph, planned, unsupported
from pipeline.errors import ConfigError, PipelineError
from pipeline.training import Metrics, Trainer, optimizer_options

CUDA = torch.device("cuda")
S0 = {"model": {"hidden": [10], "activation": "sigmoid"},
      "train": {"optimizer": "sgd", "lr": 1.0, "batch_size": "full", "epochs": 9}}


def replayed(trainer: Trainer, capture=capture, required=False) -> list[EpochGraph]:
    """Makes `trainer` replay its epochs through the stand-in; the graphs it built, for checks."""
    built: list[EpochGraph] = []

    def stand_in(train, val, steps_per_epoch):
        assert steps_per_epoch == 1
        built.append(EpochGraph(trainer.graph_body(train, val), capture, required=required))
        return built[-1]

    trainer.epoch_graph = stand_in  # type: ignore[method-assign]
    return built


def fit_both(params, test=False):
    """(eager trainer, replayed trainer, its graph, eager snapshots, replayed snapshots)."""
    runs = []
    for graphs in (False, True):
        model, loss, train, val = prepare(params)
        trainer = Trainer(model, params.train, loss, CPU)
        built = replayed(trainer) if graphs else []
        snapshots = Snapshots()
        trainer.fit(train, val, [snapshots], test=val if test else None)
        runs.append((trainer, built, snapshots))
    (eager, _, eager_snaps), (graphed, built, graphed_snaps) = runs
    return eager, graphed, built, eager_snaps, graphed_snaps


@pytest.mark.parametrize(
    "sections",
    [
        S0,
        {**S0, "train": {**S0["train"], "backward": "autograd"}},
        {"model": {"hidden": [16, 8], "activation": "relu"},
         "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "batch_size": "full",
                   "weight_decay": 1e-3, "epochs": 7}},
        {"data": {"source": "moons", "noise": 0.2}, "model": {"hidden": [8], "activation": "tanh"},
         "train": {"optimizer": "sgd", "lr": 0.5, "batch_size": "full", "epochs": 6}},
        {"data": {"source": "linear"}, "model": {"hidden": []},
         "train": {"loss": "l1", "optimizer": "sgd", "lr": 0.05, "batch_size": "full", "epochs": 6}},
        {"model": {"hidden": [8], "batch_norm": True},
         "train": {"optimizer": "sgd", "lr": 0.2, "batch_size": "full", "epochs": 6}},
    ],
    ids=["s0-direct", "s0-autograd", "relu-nesterov-decay", "moons-bce", "linear-l1", "batch-norm"],
)
def test_replayed_epochs_train_exactly_as_eager_ones(sections):
    """Warm-up epochs, the capture and every replay: each epoch's weights and history row equal
    the eager loop's, bit for bit (a replay that skipped or repeated a step, read a stale tensor
    or lost the validation pass would not)."""
    eager, graphed, (graph,), eager_snaps, graphed_snaps = fit_both(config(**sections))
    epochs = len(eager.state.history)
    assert graph.eager_epochs == WARMUP_EPOCHS and graph.replay is not None
    assert epochs > WARMUP_EPOCHS + 2  # replays after the captured epoch
    assert graphed.state.history == eager.state.history
    assert all("val_loss" in row for row in graphed.state.history)
    assert len(graphed_snaps.weights) == epochs
    for a, b in zip(eager_snaps.weights, graphed_snaps.weights, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert same_weights(eager.model, graphed.model)
    assert graphed.state.step == eager.state.step == epochs


def test_replays_keep_test_scoring_and_max_steps():
    params = config(**{**S0, "train": {**S0["train"], "epochs": 20, "max_steps": 8, "test_every_steps": 3}})
    eager, graphed, _, _, _ = fit_both(params, test=True)
    assert graphed.state.stop_reason == eager.state.stop_reason == "max_steps"
    assert [row["step"] for row in graphed.state.test_history] == [3, 6]
    assert graphed.state.test_history == eager.state.test_history
    assert graphed.state.history == eager.state.history
    assert same_weights(eager.model, graphed.model)


def test_a_resumed_replayed_fit_continues_exactly():
    """A trainer loaded from another's state after 4 epochs, then replaying, ends where 9
    uninterrupted eager epochs end (the graph is built per fit, on the loaded tensors)."""
    params = config(**S0)
    straight, _, _, _, _ = fit_both(params)
    first = config(**{**S0, "train": {**S0["train"], "epochs": 4}})
    model, loss, train, val = prepare(first)
    before = Trainer(model, first.train, loss, CPU)
    replayed(before)
    before.fit(train, val)
    model, loss, train, val = prepare(params)
    after = Trainer(model, params.train, loss, CPU)
    after.load_state_dict(before.state_dict())
    built = replayed(after)
    after.fit(train, val)
    (graph,) = built
    assert graph.replay is not None  # 5 epochs left: 3 warm-ups, a capture, a replay
    assert after.state.history == straight.state.history
    assert same_weights(straight.model, after.model)


# -- the stand-in behaves as a capture does ------------------------------------------------------
def test_the_stand_in_captures_without_applying_and_replays_on_the_same_tensors():
    weights, step = torch.ones(3), torch.full((3,), 0.5)
    seen = []

    def body():
        seen.append(1)  # Python: runs at the capture only
        new = weights * 2
        weights.sub_(step)
        return new

    out, replay = capture(body)
    assert torch.equal(weights, torch.ones(3))  # the capture wrote nothing
    replay()
    assert torch.equal(weights, torch.full((3,), 0.5)) and torch.equal(out, torch.full((3,), 2.0))
    replay()
    assert torch.equal(weights, torch.zeros(3)) and torch.equal(out, torch.ones(3))
    assert seen == [1]


@pytest.mark.parametrize(
    "read", [lambda t: t.sum().item(), lambda t: t.tolist(), lambda t: t.numpy(), lambda t: bool(t.sum() > 0)]
)
def test_the_stand_in_refuses_host_reads_as_a_capture_does(read):
    with pytest.raises(HostSync):
        capture(lambda: read(torch.ones(2)))


def test_host_side_metric_sums_cannot_be_captured_and_device_ones_can():
    """Why the graph's body keeps its sums as tensors: the CPU's float sums read each loss."""
    outputs, y, loss = torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]), torch.tensor(0.25)

    def body(on_host):
        totals = Metrics("cross_entropy", CPU, on_host=on_host)
        totals.add(outputs, y, loss)
        return totals

    with pytest.raises(HostSync):
        capture(lambda: body(True))
    totals, replay = capture(lambda: body(False))
    replay()
    assert totals.read("train") == body(True).read("train") == {"train_loss": 0.25, "train_accuracy": 0.5}


# -- which loops qualify ---------------------------------------------------------------------------
def _model(dropout: float = 0.0) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Dropout(dropout), torch.nn.Linear(4, 2))


def test_only_full_batch_cuda_loops_without_a_scheduler_dropout_or_compile_qualify():
    model = _model()
    assert unsupported(CUDA, 1, False, model, False) == ""
    assert "not CUDA" in unsupported(CPU, 1, False, model, False)
    assert "mini-batches" in unsupported(CUDA, 4, False, model, False)
    assert "scheduler" in unsupported(CUDA, 1, True, model, False)
    assert "dropout" in unsupported(CUDA, 1, False, _model(0.5), False)
    assert "compiled" in unsupported(CUDA, 1, False, model, True)
    adam = torch.optim.Adam(model.parameters())
    assert "capturable" in unsupported(CUDA, 1, False, model, False, adam)
    assert unsupported(CUDA, 1, False, model, False, torch.optim.SGD(model.parameters(), lr=0.1)) == ""


def test_planned_fits_get_capturable_optimizers():
    s0 = config(**S0).train
    adam = config(train={"optimizer": "adam", "batch_size": "full"}).train
    assert planned(s0, CUDA, _model()) and planned(adam, CUDA, _model())
    assert not planned(s0, CPU, _model())
    assert not planned(config(train={"batch_size": 32}).train, CUDA, _model())
    assert not planned(config(train={**S0["train"], "cuda_graphs": False}).train, CUDA, _model())
    assert optimizer_options(adam, "cuda", capturable=True) == {"fused": True, "capturable": True}
    assert optimizer_options(s0, "cuda", capturable=True) == {"fused": True}  # SGD has no counters
    assert optimizer_options(adam, "cpu") == {"foreach": True}


@pytest.mark.parametrize(
    "train, model, what",
    [
        ({"batch_size": 32}, {}, "train.batch_size full"),
        ({"scheduler": "step"}, {}, "train.scheduler none"),
        ({}, {"dropout": 0.2}, "model.dropout 0"),
        ({"compile": True}, {}, "train.compile false"),
        ({"device": "cpu"}, {}, "a CUDA train.device"),
    ],
)
def test_cuda_graphs_true_is_refused_in_one_line_where_it_cannot_go(train, model, what):
    with pytest.raises(ConfigError) as error:
        config(model=model, train={"batch_size": "full", "device": "cuda", **train, "cuda_graphs": True})
    assert str(error.value) == f"train.cuda_graphs = True: expected auto or false, or true with {what}"


def test_cuda_graphs_true_on_a_machine_without_cuda_is_refused_at_the_fit():
    """`device: auto` on this CPU machine: the fit refuses `true` in one line, before any epoch."""
    params = config(train={**S0["train"], "device": "auto", "cuda_graphs": True})
    model, loss, train, val = prepare(params)
    trainer = Trainer(model, params.train, loss, CPU)
    refused = r"train\.cuda_graphs = True: expected auto or false here: training on cpu"
    with pytest.raises(ConfigError, match=refused):
        trainer.fit(train, val)
    assert trainer.state.history == []


# -- a capture that fails ----------------------------------------------------------------------------
def failing_capture(body):
    raise RuntimeError("operation not permitted when stream is capturing\nmore detail")


@pytest.mark.parametrize("required", [False, True])
def test_a_failed_capture_goes_on_eagerly_or_ends_in_one_line_when_required(required, capsys):
    """auto: one line on stderr, then every epoch (the failed one too) eagerly, so the fit ends
    where the eager fit ends; true: the fit stops with one line after the warm-up epochs."""
    params = config(**S0)
    eager, _, _, _, _ = fit_both(params)
    model, loss, train, val = prepare(params)
    trainer = Trainer(model, params.train, loss, CPU)
    graphs = replayed(trainer, failing_capture, required)
    if required:
        with pytest.raises(PipelineError, match=r"^train\.cuda_graphs: true, but capturing the epoch "
                                                r"failed: operation not permitted when stream is capturing$"):
            trainer.fit(train, val)
        assert len(trainer.state.history) == WARMUP_EPOCHS
        return
    trainer.fit(train, val)
    (note,) = capsys.readouterr().err.strip().splitlines()
    assert note.startswith("note: capturing the epoch as a CUDA graph failed (operation not permitted")
    assert graphs[0].replay is None and graphs[0].eager_epochs == len(eager.state.history)
    assert trainer.state.history == eager.state.history
    assert same_weights(eager.model, trainer.model)


def test_a_gpu_checkpoint_resumes_on_the_cpu_with_the_cpus_kernels():
    """A CUDA run's optimizer state says fused and capturable (Adam with graphs); resumed on the
    CPU it steps with the CPU's own choices, so it ends where an uninterrupted CPU run ends."""
    full = {"optimizer": "adam", "lr": 0.01, "batch_size": "full", "epochs": 6}
    params = config(train=full)
    model, loss, train, val = prepare(params)
    straight = Trainer(model, params.train, loss, CPU)
    straight.fit(train, val)
    first = config(train={**full, "epochs": 3})
    model, loss, train, val = prepare(first)
    before = Trainer(model, first.train, loss, CPU)
    before.fit(train, val)
    saved = before.state_dict()
    for group in saved["optimizer"]["param_groups"]:
        group.update(fused=True, capturable=True, foreach=None)  # as a CUDA run with graphs saves it
    model, loss, train, val = prepare(params)
    after = Trainer(model, params.train, loss, CPU)
    after.load_state_dict(saved)
    assert after.optimizer.param_groups[0]["capturable"] is False
    assert after.optimizer.param_groups[0]["foreach"] is True and not after.optimizer.param_groups[0]["fused"]
    after.fit(train, val)
    assert after.state.history == straight.state.history
    assert same_weights(straight.model, after.model)
