"""Adam's and SGD's plain updates without torch.optim's bookkeeping (pipeline.updates), stepped
side by side with torch's own `step`: the same parameters and state, bit for bit, every step."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pipeline.training import lean_step
from pipeline.updates import plain_update

PLAIN = {
    "sgd": (torch.optim.SGD, {"lr": 0.1, "foreach": True}),
    "adam": (torch.optim.Adam, {"lr": 3e-3, "foreach": True}),
    "adam-betas": (torch.optim.Adam, {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "foreach": True}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.05, "foreach": True}),
}


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # odd sizes: vectorised kernels' tails too
    return nn.Sequential(nn.Linear(3, 37), nn.Tanh(), nn.Linear(37, 5))


def gradients(model: nn.Module, steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=generator) for p in model.parameters()] for _ in range(steps)]


def state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    state = optimizer.state_dict()["state"]
    return [v for i in sorted(state) for _, v in sorted(state[i].items()) if isinstance(v, torch.Tensor)]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


class Counted:
    """Calls of torch's multi-tensor implementation (how often torch's own step did the work)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import importlib

        self.calls = 0
        for kind in ("adam", "sgd"):
            module, name = importlib.import_module(f"torch.optim.{kind}"), f"_multi_tensor_{kind}"
            original = getattr(module, name)

            def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.calls += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(module, name, counted)


def side_by_side(kind: str, steps: list[list[torch.Tensor]], drop: set[tuple[int, int]] = frozenset()):
    """torch's `step` and the lean step on two copies of a net, the same gradients each step
    (`drop`: (step, parameter) pairs given no gradient); yields after each step."""
    cls, options = PLAIN[kind]
    theirs, ours = net(), net()
    torch_opt, our_opt = cls(theirs.parameters(), **options), cls(ours.parameters(), **options)
    step = lean_step(our_opt)
    for i, grads in enumerate(steps):
        for model in (theirs, ours):
            for j, (p, g) in enumerate(zip(model.parameters(), grads, strict=True)):
                p.grad = None if (i, j) in drop else g.clone()
        torch_opt.step()
        with torch.no_grad():
            step()
        yield theirs, ours, torch_opt, our_opt


@pytest.mark.parametrize("kind", sorted(PLAIN))
def test_the_plain_update_is_torchs_step_bit_for_bit_and_is_the_one_taken(kind, monkeypatch):
    steps = gradients(net(), 25)
    runs = side_by_side(kind, steps)
    theirs, ours, torch_opt, our_opt = next(runs)  # Adam's first step creates the state: torch's
    counted = Counted(monkeypatch)
    for theirs, ours, torch_opt, our_opt in runs:
        assert same(list(ours.parameters()), list(theirs.parameters()))
        assert same(state_tensors(our_opt), state_tensors(torch_opt))
    assert counted.calls == len(steps) - 1  # torch's side only: ours never went through torch's step
    assert plain_update(our_opt) is not None


def test_a_parameter_without_a_gradient_is_left_to_torch_and_results_stay_the_same():
    steps = gradients(net(), 12)
    *_, (theirs, ours, torch_opt, our_opt) = side_by_side("adam", steps, drop={(4, 1)})
    assert same(list(ours.parameters()), list(theirs.parameters()))
    assert same(state_tensors(our_opt), state_tensors(torch_opt))
    first, second, *_ = ours.parameters()
    assert our_opt.state[first]["step"] != our_opt.state[second]["step"]  # counts parted


def test_a_state_loaded_from_a_checkpoint_is_the_one_updated(monkeypatch):
    """A resume loads new state tensors into the optimizer: the lean update follows them."""
    steps = gradients(net(), 10)
    cls, options = PLAIN["adam"]
    *_, (theirs, ours, torch_opt, our_opt) = side_by_side("adam", steps[:5])
    saved = our_opt.state_dict()
    resumed = cls(ours.parameters(), **options)
    resumed.load_state_dict(saved)
    step = lean_step(resumed)
    counted = Counted(monkeypatch)
    for grads in steps[5:]:
        for model in (theirs, ours):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
        with torch.no_grad():
            step()
        torch_opt.step()
    assert counted.calls == len(steps[5:])  # torch's side only
    assert same(list(ours.parameters()), list(theirs.parameters()))
    assert same(state_tensors(resumed), state_tensors(torch_opt))


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (torch.optim.Adam, {"amsgrad": True}),
        (torch.optim.Adam, {"maximize": True}),
        (torch.optim.Adam, {"weight_decay": 1e-3}),  # coupled decay: torch's own step
        (torch.optim.Adam, {"foreach": False}),
        (torch.optim.Adam, {"fused": True}),
        (torch.optim.SGD, {"momentum": 0.9}),
        (torch.optim.SGD, {"weight_decay": 1e-3}),
        (torch.optim.RMSprop, {}),
    ],
    ids=["amsgrad", "maximize", "adam-l2", "no-foreach", "fused", "momentum", "sgd-decay", "rmsprop"],
)
def test_other_settings_keep_torchs_step(cls, options):
    options = {"lr": 0.01, "foreach": True, **options}
    if options.get("fused"):
        options.pop("foreach")
    assert plain_update(cls(net().parameters(), **options)) is None


def test_two_parameter_groups_keep_torchs_step():
    model = net()
    first, _, second = model.children()
    groups = [{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.1}]
    assert plain_update(torch.optim.Adam(groups, lr=0.01, foreach=True)) is None
