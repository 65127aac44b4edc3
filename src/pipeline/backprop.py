"""A direct backward pass for plain feed-forward stacks (Linear, activation, ..., Linear).

Autograd records a graph every step and walks it in its engine; for the small nets of the
tutorials that bookkeeping costs more than the arithmetic (a 2->10->4 net: 60 % of a step). This
module runs the same forward kernels without recording and then calls, layer by layer, the very
backward kernels autograd would call, with the same operands in the same layouts, so the
gradients are the same bits (tests/test_backprop.py checks every activation and loss against
autograd). Anything it does not know (batch norm, dropout, a compiled forward) uses autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.model import Rescale
from pipeline.weight_grads import WeightGrad, layout_for

aten = torch.ops.aten

# activation module -> its backward from (incoming grad, input, output), as autograd derives it
ACTIVATION_BACKWARD: dict[type[nn.Module], Callable[[nn.Module, Any, Any, Any], Any]] = {
    nn.ReLU: lambda m, g, x, y: aten.threshold_backward(g, y, 0),
    nn.Sigmoid: lambda m, g, x, y: aten.sigmoid_backward(g, y),
    nn.Tanh: lambda m, g, x, y: aten.tanh_backward(g, y),
    nn.LeakyReLU: lambda m, g, x, y: aten.leaky_relu_backward(g, x, m.negative_slope, False),
    nn.GELU: lambda m, g, x, y: aten.gelu_backward(g, x, approximate=m.approximate),
    nn.ELU: lambda m, g, x, y: aten.elu_backward(g, m.alpha, 1, 1, False, x),
    nn.Identity: lambda m, g, x, y: g,
}


def _cross_entropy(z: torch.Tensor, y: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    log_p = torch.log_softmax(z, 1)
    loss, total_weight = aten.nll_loss_forward(log_p, y, None, 1, -100)
    seed = torch.ones_like(loss)
    grad = aten.nll_loss_backward(seed, log_p, y, None, 1, -100, total_weight)
    return loss, aten._log_softmax_backward_data(grad, log_p, 1, z.dtype)


def _bce(z: torch.Tensor, y: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    loss = F.binary_cross_entropy_with_logits(z, y)
    return loss, z.sigmoid().sub_(y).mul_(torch.ones_like(loss)).div_(z.numel())


def _mse(z: torch.Tensor, y: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    loss = F.mse_loss(z, y)
    return loss, aten.mse_loss_backward(torch.ones_like(loss), z, y, 1)


def _l1(z: torch.Tensor, y: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    diff = z - y  # what F.l1_loss computes: mean(|z - y|)
    loss = diff.abs().mean()
    return loss, (torch.ones_like(loss).expand(z.shape) / z.numel()) * diff.sgn()


def _huber(z: torch.Tensor, y: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    loss = F.huber_loss(z, y, delta=delta)
    return loss, aten.huber_loss_backward(torch.ones_like(loss), z, y, 1, delta)


# loss name -> (outputs, targets, huber delta) -> (mean loss, its gradient w.r.t. the outputs)
LOSS_AND_GRAD = {"cross_entropy": _cross_entropy, "bce": _bce, "mse": _mse, "l1": _l1, "huber": _huber}


def unsupported(model: nn.Module, loss: str) -> str:
    """Why `model` with `loss` cannot take the direct pass ('' when it can)."""
    if loss not in LOSS_AND_GRAD:
        return f"loss {loss!r}"
    if not isinstance(model, nn.Sequential):
        return f"a {type(model).__name__}, not an nn.Sequential"
    for i, layer in enumerate(model):
        if isinstance(layer, Rescale) and i == 0:
            continue
        if isinstance(layer, nn.Linear) or type(layer) in ACTIVATION_BACKWARD:
            continue
        return f"layer {i}, {type(layer).__name__}"
    return ""


class DirectBackward:
    """One training step's forward and backward for a plain stack; leaves gradients in `.grad`,
    as `loss.backward()` after zeroing them would."""

    def __init__(self, model: nn.Sequential, loss: str, huber_delta: float = 1.0) -> None:
        reason = unsupported(model, loss)
        if reason:
            raise ValueError(f"no direct backward pass for {reason}")
        layers = list(model)
        self.forwards = [layer.forward for layer in layers]  # skips Module.__call__'s hook checks
        self.first = next(i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear))
        # from the last layer down to the first Linear (whose input needs no gradient)
        self.backwards = [
            (i, layer, *((layer.weight, layer.bias) if isinstance(layer, nn.Linear) else (None, None)))
            for i, layer in reversed(list(enumerate(layers)))
            if i >= self.first
        ]
        self.loss_and_grad = LOSS_AND_GRAD[loss]
        self.squeeze = loss != "cross_entropy"  # one output unit, read as (batch,)
        self.delta = huber_delta
        self.layouts: dict[tuple[int, int], WeightGrad] = {}  # (layer, batch) -> its weight gradient's

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, features), targets -> (outputs (batch, units), mean loss); sets every `.grad`."""
        if torch.is_grad_enabled():  # the fit loop turns grad mode off once, around all steps
            with torch.no_grad():
                return self._step(x, y)
        return self._step(x, y)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []  # each layer's input and output
        h = x
        for forward in self.forwards:
            out = forward(h)
            saved.append((h, out))
            h = out
        outputs = h
        loss, grad = self.loss_and_grad(outputs[:, 0] if self.squeeze else outputs, y, self.delta)
        if self.squeeze:
            grad = grad.unsqueeze(1)  # (batch,) -> (batch, 1), what selecting column 0 undoes
        for i, layer, weight, bias in self.backwards:
            inp, out = saved[i]
            if weight is not None:
                # autograd's addmm backward for weight.t() laid out column-major: (grad^T inp),
                # or the same bits in the layout MKL computes faster (pipeline.weight_grads)
                layout = self.layouts.get((i, len(grad)))
                if layout is None:
                    layout = self.layouts[i, len(grad)] = layout_for(grad, inp)
                weight.grad = layout(grad, inp)
                if bias is not None:
                    bias.grad = grad.sum(0)
                if i > self.first:
                    grad = grad.mm(weight)
            else:
                grad = ACTIVATION_BACKWARD[type(layer)](layer, grad, inp, out)
        return outputs, loss
