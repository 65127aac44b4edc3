"""Adam's and SGD's updates in their plain settings, without torch.optim's per-step bookkeeping.

Around the arithmetic, torch's foreach Adam groups the tensors by device and dtype, collects each
parameter's state in Python, wraps `1` in a new tensor to count the step, reads every
parameter's step back with `.item()` and computes one bias correction per parameter: about 150
of S1's 700 us per step. For one group of dense CPU tensors that all have gradients, the functions
here issue the same `torch._foreach_*` calls, with the same operands and scalars, as torch's
`_multi_tensor_adam` / `_multi_tensor_sgd`, so parameters and optimizer state come out the same
bits (tests/test_updates.py steps both side by side). Anything else, and the first Adam step
(which creates the state), is torch's own step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# answers True when it updated the parameters, False when torch's own step must do it
Update = Callable[[], bool]


def plain_update(optimizer: torch.optim.Optimizer) -> Update | None:
    """The lean update for `optimizer`, or None when its settings are not the plain ones."""
    if len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    params = group["params"]
    shared = (
        group.get("foreach") is True
        and not group.get("fused")
        and not group.get("differentiable")
        and not group.get("maximize")
        and isinstance(group.get("lr"), float)
        and all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64) for p in params)
    )
    if not shared:
        return None
    if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
        plain = (
            not group.get("amsgrad")
            and not group.get("capturable")
            and all(isinstance(b, float) for b in group["betas"])
            and (group["weight_decay"] == 0 or group.get("decoupled_weight_decay"))
        )
        return _adam(optimizer) if plain else None
    if type(optimizer) is torch.optim.SGD:
        return _sgd(optimizer) if group["momentum"] == 0 and group["weight_decay"] == 0 else None
    return None


def _dense_grads(params: list[torch.Tensor]) -> list[torch.Tensor] | None:
    grads = [p.grad for p in params]
    if any(g is None or g.is_sparse for g in grads):
        return None
    return grads  # type: ignore[return-value]


def _sgd(optimizer: torch.optim.Optimizer) -> Update:
    group = optimizer.param_groups[0]

    def update() -> bool:
        if optimizer.param_groups[0] is not group:  # replaced by load_state_dict
            return False
        grads = _dense_grads(group["params"])
        if grads is None:
            return False
        torch._foreach_add_(group["params"], grads, alpha=-group["lr"])
        return True

    return update


def _adam(optimizer: torch.optim.Optimizer) -> Update:
    group = optimizer.param_groups[0]
    params = group["params"]
    one = torch.tensor(1.0)  # what torch adds to CPU step counters, made once here
    cache: dict[str, Any] = {}

    def state_lists() -> tuple[list[torch.Tensor], ...] | None:
        """The steps and moments of every parameter, once torch's first step made them; None
        while missing, or when the steps differ (a parameter skipped a step: torch's way)."""
        states = [optimizer.state.get(p) for p in params]
        if not all(s and {"step", "exp_avg", "exp_avg_sq"} <= s.keys() for s in states):
            return None
        steps = [s["step"] for s in states]
        if not all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in steps):
            return None
        if len({float(t) for t in steps}) != 1:
            return None
        return steps, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]

    def update() -> bool:
        if optimizer.param_groups[0] is not group:  # replaced by load_state_dict
            return False
        grads = _dense_grads(params)
        if grads is None:
            cache.clear()  # torch steps only the parameters with gradients: counts may part
            return False
        if cache.get("state") is not optimizer.state:  # new, or loaded from a checkpoint
            lists = state_lists()
            if lists is None:
                return False
            cache.update(state=optimizer.state, lists=lists)
        steps, exp_avgs, exp_avg_sqs = cache["lists"]
        torch._foreach_add_(steps, one, alpha=1.0)
        if group["weight_decay"] != 0:  # decoupled (AdamW): plain_update refuses the other kind
            torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        step = steps[0].item()  # the same for all: torch computes one per parameter
        adam_passes(params, grads, (exp_avgs, exp_avg_sqs), group["lr"], group["betas"], group["eps"], step)
        return True

    return update


def adam_passes(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    moments: tuple[list[torch.Tensor], list[torch.Tensor]],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    step: float,
) -> None:
    """Adam's update of one group whose step counters reached `step`: the `torch._foreach_*` calls
    of torch's `_multi_tensor_adam`, with its operands and scalars (weight decay done before)."""
    (exp_avgs, exp_avg_sqs), (beta1, beta2) = moments, betas
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = [(lr / bias_correction1) * -1] * len(params)
    bias_correction2_sqrt = [bias_correction2**0.5] * len(params)
    exp_avg_sq_sqrt = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(exp_avg_sq_sqrt, bias_correction2_sqrt)
    torch._foreach_add_(exp_avg_sq_sqrt, eps)
    torch._foreach_addcdiv_(params, exp_avgs, exp_avg_sq_sqrt, step_size)
