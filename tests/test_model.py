"""build_model, its initialisation schemes, the losses and predict_outputs (pure, no I/O)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.model import ACTIVATIONS, Rescale, build_model, head_size, make_loss, predict_outputs


def model_cfg(**values) -> ModelConfig:
    return ModelConfig.model_validate(values)


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


# -- structure ------------------------------------------------------------------------------------
def test_no_hidden_layers_is_a_single_linear():
    model = build_model(model_cfg(hidden=[]), 5, 3)
    assert len(model) == 1
    assert type(model[0]) is nn.Linear
    assert (model[0].in_features, model[0].out_features) == (5, 3)


def test_one_hidden_layer():
    model = build_model(model_cfg(hidden=[10], activation="relu"), 4, 2)
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (model[0].in_features, model[0].out_features) == (4, 10)
    assert (model[2].in_features, model[2].out_features) == (10, 2)


def test_two_hidden_layers_widths_chain():
    model = build_model(model_cfg(hidden=[256, 1024], activation="tanh"), 784, 10)
    assert [type(m) for m in model] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    shapes = [(m.in_features, m.out_features) for m in linears(model)]
    assert shapes == [(784, 256), (256, 1024), (1024, 10)]
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 784 * 256 + 256 + 256 * 1024 + 1024 + 1024 * 10 + 10


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("relu", nn.ReLU),
        ("tanh", nn.Tanh),
        ("sigmoid", nn.Sigmoid),
        ("gelu", nn.GELU),
        ("leaky_relu", nn.LeakyReLU),
        ("elu", nn.ELU),
        ("identity", nn.Identity),
    ],
)
def test_activation_names_map_to_modules(name, cls):
    model = build_model(model_cfg(hidden=[6, 7], activation=name), 3, 2)
    acts = [m for m in model if not isinstance(m, nn.Linear)]
    assert [type(m) for m in acts] == [cls, cls]
    # and it really computes that function
    x = torch.linspace(-3, 3, 13)
    expected = {
        "relu": torch.relu(x),
        "tanh": torch.tanh(x),
        "sigmoid": torch.sigmoid(x),
        "gelu": torch.nn.functional.gelu(x),
        "leaky_relu": torch.where(x > 0, x, 0.01 * x),
        "elu": torch.where(x > 0, x, torch.exp(x) - 1),
        "identity": x,
    }[name]
    torch.testing.assert_close(acts[0](x), expected)


def test_every_activation_in_the_schema_is_mapped():
    from typing import get_args

    from pipeline.config import Activation

    assert set(get_args(Activation)) == set(ACTIVATIONS)


def test_dropout_and_batch_norm_layers():
    model = build_model(model_cfg(hidden=[8, 4], dropout=0.25, batch_norm=True), 3, 2)
    assert [type(m) for m in model] == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
    ]
    assert [m.num_features for m in model if isinstance(m, nn.BatchNorm1d)] == [8, 4]
    assert all(m.p == 0.25 for m in model if isinstance(m, nn.Dropout))


def test_no_dropout_or_batch_norm_unless_asked():
    model = build_model(model_cfg(hidden=[8, 4]), 3, 2)
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm1d)) for m in model.modules())


# -- heads and shapes -----------------------------------------------------------------------------
def test_head_size():
    assert head_size("cross_entropy", 4) == 4
    assert head_size("cross_entropy", 2) == 2
    assert head_size("bce", 2) == 1
    assert head_size("mse", 1) == 1
    assert head_size("l1", 1) == 1
    assert head_size("huber", 1) == 1


@pytest.mark.parametrize(("loss", "n_classes"), [("cross_entropy", 4), ("bce", 2), ("mse", 1)])
@pytest.mark.parametrize("hidden", [[], [5], [5, 3]])
def test_output_shape_per_head(loss, n_classes, hidden):
    n_out = head_size(loss, n_classes)
    model = build_model(model_cfg(hidden=hidden, batch_norm=True, dropout=0.1), 6, n_out)
    model.eval()
    out = model(torch.randn(7, 6))
    assert out.shape == (7, {"cross_entropy": 4, "bce": 1, "mse": 1}[loss])


def test_rescale_module_divides():
    x = torch.tensor([[0.0, 51.0, 255.0]])
    torch.testing.assert_close(Rescale(255.0)(x), torch.tensor([[0.0, 0.2, 1.0]]))


def test_rescale_first_layer_divides_raw_pixels():
    torch.manual_seed(3)
    scaled = build_model(model_cfg(hidden=[4]), 3, 2, scale=255.0)
    torch.manual_seed(3)
    plain = build_model(model_cfg(hidden=[4]), 3, 2)
    assert isinstance(scaled[0], Rescale)
    assert scaled[0].scale == 255.0
    assert not any(isinstance(m, Rescale) for m in plain)
    pixels = torch.randint(0, 256, (5, 3)).float()  # uint8 values, as stored
    torch.testing.assert_close(scaled(pixels), plain(pixels / 255.0))
    # without the division the outputs would be much larger
    assert not torch.allclose(scaled(pixels), plain(pixels))


# -- initialisation -------------------------------------------------------------------------------
BIG = (512, 512)  # fan_in 512 -> hidden 512 -> out 512: lots of samples for the statistics


def big_model(**init) -> nn.Sequential:
    torch.manual_seed(0)
    return build_model(model_cfg(hidden=[BIG[1]], init=init), BIG[0], 512)


def test_uniform_init_within_bounds():
    model = big_model(scheme="uniform", low=-0.3, high=0.1)
    for layer in linears(model):
        w = layer.weight
        assert w.min() >= -0.3
        assert w.max() <= 0.1
        assert w.min() < -0.29 and w.max() > 0.09  # it fills the interval
        assert w.mean().item() == pytest.approx(-0.1, abs=0.005)


def test_normal_init_std():
    model = big_model(scheme="normal", std=0.2)
    for layer in linears(model):
        assert layer.weight.std().item() == pytest.approx(0.2, rel=0.02)
        assert layer.weight.mean().item() == pytest.approx(0.0, abs=0.005)


def test_lecun_normal_std():
    torch.manual_seed(0)
    model = build_model(model_cfg(hidden=[256], init={"scheme": "lecun_normal"}), 1024, 400)
    first, second = linears(model)
    assert first.weight.std().item() == pytest.approx(1 / math.sqrt(1024), rel=0.02)
    assert second.weight.std().item() == pytest.approx(1 / math.sqrt(256), rel=0.02)


def test_xavier_uniform_bound():
    torch.manual_seed(0)
    model = build_model(model_cfg(hidden=[300], init={"scheme": "xavier_uniform"}), 700, 100)
    for layer in linears(model):
        bound = math.sqrt(6 / (layer.in_features + layer.out_features))
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.abs().max().item() > 0.98 * bound
        assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)


def test_xavier_normal_std():
    torch.manual_seed(0)
    model = build_model(model_cfg(hidden=[300], init={"scheme": "xavier_normal"}), 700, 100)
    for layer in linears(model):
        expected = math.sqrt(2 / (layer.in_features + layer.out_features))
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.03)


def test_kaiming_uniform_bound():
    torch.manual_seed(0)
    model = build_model(model_cfg(hidden=[300], init={"scheme": "kaiming_uniform"}), 700, 100)
    for layer in linears(model):
        bound = math.sqrt(6 / layer.in_features)  # gain sqrt(2) for relu, times sqrt(3 / fan_in)
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.abs().max().item() > 0.98 * bound


def test_kaiming_normal_std():
    torch.manual_seed(0)
    model = build_model(model_cfg(hidden=[300], init={"scheme": "kaiming_normal"}), 700, 100)
    for layer in linears(model):
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / layer.in_features), rel=0.03)


def test_default_init_is_torch_default():
    torch.manual_seed(0)
    model = build_model(model_cfg(hidden=[300]), 700, 100)
    for layer in linears(model):
        bound = 1 / math.sqrt(layer.in_features)  # nn.Linear's own kaiming_uniform(a=sqrt(5))
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.abs().max().item() > 0.98 * bound


@pytest.mark.parametrize("scheme", ["default", "xavier_uniform", "kaiming_normal", "normal", "uniform"])
def test_init_bias_constant(scheme):
    model = build_model(model_cfg(hidden=[7, 5], init={"scheme": scheme, "bias": 0.125}), 3, 2)
    biases = [layer.bias for layer in linears(model)]
    assert len(biases) == 3
    for bias in biases:
        assert torch.equal(bias, torch.full_like(bias, 0.125))


def test_bias_left_alone_without_init_bias():
    torch.manual_seed(0)
    model = build_model(model_cfg(hidden=[50], init={"scheme": "normal"}), 40, 30)
    for layer in linears(model):
        assert layer.bias.std() > 0  # torch's default uniform bias, not a constant


@pytest.mark.parametrize("scheme", ["default", "xavier_normal", "lecun_normal", "uniform"])
def test_same_seed_same_weights(scheme):
    cfg = model_cfg(hidden=[16, 8], init={"scheme": scheme})
    torch.manual_seed(42)
    a = build_model(cfg, 5, 3)
    torch.manual_seed(42)
    b = build_model(cfg, 5, 3)
    torch.manual_seed(43)
    c = build_model(cfg, 5, 3)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# -- losses and predictions -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("cross_entropy", nn.CrossEntropyLoss),
        ("bce", nn.BCEWithLogitsLoss),
        ("mse", nn.MSELoss),
        ("l1", nn.L1Loss),
        ("huber", nn.HuberLoss),
    ],
)
def test_make_loss_names(name, cls):
    assert type(make_loss(name)) is cls


def test_huber_delta_is_passed():
    assert make_loss("huber", 2.5).delta == 2.5
    pred, target = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 4.0])
    # delta 2.5: 0.5 * 1^2 for the small error, 2.5 * (4 - 1.25) for the large one
    expected = (0.5 + 2.5 * (4 - 0.5 * 2.5)) / 2
    assert make_loss("huber", 2.5)(pred, target).item() == pytest.approx(expected)


def test_unknown_loss_name_fails():
    with pytest.raises(KeyError):
        make_loss("hinge")


def test_predict_outputs_cross_entropy_probabilities():
    torch.manual_seed(0)
    logits = torch.randn(6, 4) * 3
    probs = predict_outputs(logits, "cross_entropy")
    assert probs.shape == (6, 4)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(6))
    assert torch.equal(probs.argmax(dim=1), logits.argmax(dim=1))
    expected = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)
    torch.testing.assert_close(probs, expected)


def test_predict_outputs_bce_two_columns():
    logits = torch.tensor([[-2.0], [0.0], [3.0]])
    probs = predict_outputs(logits, "bce")
    assert probs.shape == (3, 2)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))
    p1 = 1 / (1 + torch.exp(-logits[:, 0]))
    torch.testing.assert_close(probs[:, 1], p1)
    torch.testing.assert_close(probs[:, 0], 1 - p1)
    assert probs[1, 1].item() == pytest.approx(0.5)


@pytest.mark.parametrize("loss", ["mse", "l1", "huber"])
def test_predict_outputs_regression_values(loss):
    outputs = torch.tensor([[1.5], [-2.0], [0.25]])
    values = predict_outputs(outputs, loss)
    assert values.shape == (3,)
    assert torch.equal(values, torch.tensor([1.5, -2.0, 0.25]))


def test_normal_scheme_draws_what_torch_randn_draws():
    """A tutorial's `nn.Parameter(torch.randn(1))` weight and bias, under the same seed."""
    torch.manual_seed(42)
    model = build_model(model_cfg(hidden=[], init={"scheme": "normal", "std": 1.0, "bias_std": 1.0}), 1, 1)
    torch.manual_seed(42)
    weight, bias = torch.randn(1), torch.randn(1)
    assert torch.equal(model[0].weight.detach().flatten(), weight)
    assert torch.equal(model[0].bias.detach(), bias)


def test_default_scheme_is_torch_own_linear():
    torch.manual_seed(3)
    model = build_model(model_cfg(hidden=[5], activation="tanh"), 4, 2)
    torch.manual_seed(3)
    plain = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    for ours, theirs in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(ours, theirs)
