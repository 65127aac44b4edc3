"""The direct backward pass gives autograd's gradients bit for bit, and refuses what it cannot do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.backprop import DirectBackward, unsupported
from pipeline.config import ModelConfig
from pipeline.model import Rescale, build_model, make_loss
from pipeline.weight_grads import WeightGrad

ACTIVATIONS = ["relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu", "identity"]
# the devices this machine has: the same comparison runs on a GPU where one is present
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOSSES = ["cross_entropy", "bce", "mse", "l1", "huber"]


def batch(loss: str, rows: int, features: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=g) * 3
    if loss == "cross_entropy":
        return x, torch.randint(0, classes, (rows,), generator=g)
    if loss == "bce":
        return x, torch.randint(0, 2, (rows,), generator=g).float()
    return x, torch.randn(rows, generator=g) * 2


def autograd_step(model: nn.Module, loss: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    for p in model.parameters():
        p.grad = None
    out = model(x)
    value = make_loss(loss, 0.7)(out if loss == "cross_entropy" else out[:, 0], y)
    value.backward()
    return value.detach()


def twins(
    cfg: ModelConfig, features: int, units: int, scale: float = 1.0
) -> tuple[nn.Sequential, nn.Sequential]:
    torch.manual_seed(3)
    a = build_model(cfg, features, units, scale)
    torch.manual_seed(3)
    return a, build_model(cfg, features, units, scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_gradients_and_training_match_autograd_bit_for_bit(activation: str, loss: str, device: str) -> None:
    classes = 4
    units = classes if loss == "cross_entropy" else 1
    cfg = ModelConfig(hidden=[16, 8], activation=activation)
    reference, direct_model = (model.to(device) for model in twins(cfg, 5, units))
    direct = DirectBackward(direct_model, loss, 0.7)
    opt_a = torch.optim.Adam(reference.parameters(), lr=0.01, foreach=True)
    opt_b = torch.optim.Adam(direct_model.parameters(), lr=0.01, foreach=True)
    for step, rows in enumerate([33, 1, 64, 7, 33]):
        x, y = (t.to(device) for t in batch(loss, rows, 5, classes, seed=step))
        expected = autograd_step(reference, loss, x, y)
        outputs, value = direct(x, y)
        assert torch.equal(value, expected), (step, value, expected)
        assert torch.equal(outputs, reference(x).detach())
        for (name, p), q in zip(reference.named_parameters(), direct_model.parameters(), strict=True):
            assert q.grad is not None and torch.equal(p.grad, q.grad), (step, name)
        opt_a.step()
        opt_b.step()
    for p, q in zip(reference.parameters(), direct_model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("hidden", "features", "scale"),
    [([], 1, 1.0), ([], 3, 1.0), ([10], 2, 1.0), ([1], 1, 1.0), ([12, 12, 12], 9, 255.0), ([2048], 2, 1.0)],
)
@pytest.mark.parametrize("loss", ["cross_entropy", "l1"])
def test_shapes_at_the_edges_match_autograd(
    hidden: list[int], features: int, scale: float, loss: str
) -> None:
    """A linear model (no hidden layer), one input or one unit, the uint8 pixels' rescale layer, a
    wide layer over two inputs (whose weight gradient pipeline.weight_grads may take transposed)."""
    units = 3 if loss == "cross_entropy" else 1
    reference, direct_model = twins(ModelConfig(hidden=hidden, activation="sigmoid"), features, units, scale)
    direct = DirectBackward(direct_model, loss)
    sgd_a = torch.optim.SGD(reference.parameters(), lr=0.5, momentum=0.9, foreach=True)
    sgd_b = torch.optim.SGD(direct_model.parameters(), lr=0.5, momentum=0.9, foreach=True)
    for step in range(4):
        x, y = batch(loss, (50, 37)[step % 2], features, units, seed=step)  # a layout per batch size
        if scale != 1.0:
            x = (x.abs() * 40).clamp(max=255).to(torch.uint8).float()
        assert torch.equal(direct(x, y)[1], autograd_step(reference, loss, x, y))
        for p, q in zip(reference.parameters(), direct_model.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
        sgd_a.step()
        sgd_b.step()


def test_what_it_cannot_do_is_named() -> None:
    assert unsupported(build_model(ModelConfig(hidden=[4], dropout=0.5), 2, 3), "cross_entropy") == (
        "layer 2, Dropout"
    )
    assert unsupported(build_model(ModelConfig(hidden=[4], batch_norm=True), 2, 3), "bce") == (
        "layer 1, BatchNorm1d"
    )
    assert unsupported(nn.Sequential(nn.Linear(2, 2), Rescale(2.0)), "mse") == "layer 1, Rescale"
    assert unsupported(nn.Linear(2, 2), "mse") == "a Linear, not an nn.Sequential"
    assert unsupported(build_model(ModelConfig(hidden=[4]), 2, 3), "cross_entropy") == ""
    with pytest.raises(ValueError, match="Dropout"):
        DirectBackward(build_model(ModelConfig(hidden=[4], dropout=0.5), 2, 3), "cross_entropy")


def test_a_weight_gradient_layout_per_layer_and_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout pipeline.weight_grads probed for one batch size is not reused for another."""
    import pipeline.backprop

    asked: list[tuple[int, int]] = []
    real = pipeline.backprop.layout_for

    def recorded(grad: torch.Tensor, inp: torch.Tensor) -> WeightGrad:
        asked.append((len(grad), inp.shape[1]))
        return real(grad, inp)

    monkeypatch.setattr(pipeline.backprop, "layout_for", recorded)
    reference, direct_model = twins(ModelConfig(hidden=[64], activation="tanh"), 2, 3)
    direct = DirectBackward(direct_model, "cross_entropy")
    for step, rows in enumerate([50, 37, 50, 37]):
        x, y = batch("cross_entropy", rows, 2, 3, seed=step)
        assert torch.equal(direct(x, y)[1], autograd_step(reference, "cross_entropy", x, y))
    assert asked == [(50, 64), (50, 2), (37, 64), (37, 2)]  # from the last layer down
