"""The feed-forward network, built from the `model` section (pure: no I/O)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.config import ModelConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "identity": nn.Identity,
}


class Rescale(nn.Module):
    """Divide raw inputs by a constant (uint8 pixels by 255), so callers send data as stored."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def head_size(loss: str, n_classes: int) -> int:
    """Units of the output layer: one logit per class for cross-entropy, else one."""
    return n_classes if loss == "cross_entropy" else 1


def build_model(cfg: ModelConfig, n_inputs: int, n_outputs: int, scale: float = 1.0) -> nn.Sequential:
    """(batch, n_inputs) -> (batch, n_outputs); an empty `hidden` list gives a linear model."""
    layers: list[nn.Module] = [Rescale(scale)] if scale != 1.0 else []
    width = n_inputs
    for units in cfg.hidden:
        layers.append(linear(width, units, cfg))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(units))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        width = units
    layers.append(linear(width, n_outputs, cfg))
    return nn.Sequential(*layers)


def linear(n_in: int, n_out: int, cfg: ModelConfig) -> nn.Linear:
    """One layer, its weight then its bias drawn from the RNG, in that order.

    With the default scheme the layer is torch's own (as a hand-written net draws it); any other
    scheme builds the layer without drawing and then draws exactly what the scheme names, so
    `normal` with std 1 under seed s gives the same numbers as `torch.randn` under seed s.
    """
    init = cfg.init
    if init.scheme == "default" and init.bias_std is None:
        layer = nn.Linear(n_in, n_out)
    else:
        layer = nn.Linear(n_in, n_out, device="meta").to_empty(device="cpu")
        _draw_weight(layer.weight, init.scheme, cfg)
        bound = 1.0 / math.sqrt(n_in)
        with torch.no_grad():
            if init.bias_std is not None:
                nn.init.normal_(layer.bias, 0.0, init.bias_std)
            else:
                nn.init.uniform_(layer.bias, -bound, bound)  # torch's default for a Linear bias
    if init.bias is not None:
        nn.init.constant_(layer.bias, init.bias)
    return layer


def _draw_weight(weight: torch.Tensor, scheme: str, cfg: ModelConfig) -> None:
    init = cfg.init
    nonlinearity = "leaky_relu" if cfg.activation == "leaky_relu" else "relu"
    fan_in = weight.shape[1]
    if scheme == "default":
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # what nn.Linear does
    elif scheme == "xavier_uniform":
        nn.init.xavier_uniform_(weight)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(weight)
    elif scheme == "kaiming_uniform":
        nn.init.kaiming_uniform_(weight, nonlinearity=nonlinearity)
    elif scheme == "kaiming_normal":
        nn.init.kaiming_normal_(weight, nonlinearity=nonlinearity)
    elif scheme == "lecun_normal":
        nn.init.normal_(weight, 0.0, 1.0 / math.sqrt(fan_in))
    elif scheme == "normal":
        nn.init.normal_(weight, 0.0, init.std)
    elif scheme == "uniform":
        nn.init.uniform_(weight, init.low, init.high)


def make_loss(name: str, huber_delta: float = 1.0) -> nn.Module:
    """Loss on raw model outputs: logits for classification, values for regression."""
    return {
        "cross_entropy": lambda: nn.CrossEntropyLoss(),
        "bce": lambda: nn.BCEWithLogitsLoss(),
        "mse": lambda: nn.MSELoss(),
        "l1": lambda: nn.L1Loss(),
        "huber": lambda: nn.HuberLoss(delta=huber_delta),
    }[name]()


def predict_outputs(outputs: torch.Tensor, loss: str) -> torch.Tensor:
    """Raw outputs -> class probabilities (batch, classes) or predictions (batch,)."""
    if loss == "cross_entropy":
        return torch.softmax(outputs, dim=1)
    if loss == "bce":
        p = torch.sigmoid(outputs[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return outputs[:, 0]
