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
        layers.append(nn.Linear(width, units))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(units))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        width = units
    layers.append(nn.Linear(width, n_outputs))
    model = nn.Sequential(*layers)
    initialize(model, cfg)
    return model


def initialize(model: nn.Module, cfg: ModelConfig) -> None:
    init = cfg.init
    nonlinearity = "leaky_relu" if cfg.activation == "leaky_relu" else "relu"
    for layer in model.modules():
        if not isinstance(layer, nn.Linear):
            continue
        weight = layer.weight
        if init.scheme == "xavier_uniform":
            nn.init.xavier_uniform_(weight)
        elif init.scheme == "xavier_normal":
            nn.init.xavier_normal_(weight)
        elif init.scheme == "kaiming_uniform":
            nn.init.kaiming_uniform_(weight, nonlinearity=nonlinearity)
        elif init.scheme == "kaiming_normal":
            nn.init.kaiming_normal_(weight, nonlinearity=nonlinearity)
        elif init.scheme == "lecun_normal":
            nn.init.normal_(weight, 0.0, 1.0 / math.sqrt(layer.in_features))
        elif init.scheme == "normal":
            nn.init.normal_(weight, 0.0, init.std)
        elif init.scheme == "uniform":
            nn.init.uniform_(weight, init.low, init.high)
        if init.bias is not None and layer.bias is not None:
            nn.init.constant_(layer.bias, init.bias)


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
