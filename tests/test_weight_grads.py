"""A weight gradient is autograd's bits whichever layout the probe keeps, and the probe keeps no
layout that differs from autograd's or is slower."""

from __future__ import annotations

import time

import pytest
import torch

from pipeline import weight_grads
from pipeline.weight_grads import autograd_layout, keeps_transposed, transposed_layout, weight_grad


def pair(batch: int, fan_in: int, fan_out: int, seed: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(batch, fan_out, generator=g, dtype=dtype) * 0.01
    inp = torch.rand(batch, fan_in, generator=g, dtype=dtype) * 4 - 2
    return grad, inp


@pytest.mark.parametrize("fan_in", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize(("batch", "fan_out"), [(800, 4096), (800, 10), (100, 1024), (16, 256), (33, 64)])
def test_weight_gradient_is_autograds_bit_for_bit(batch: int, fan_in: int, fan_out: int) -> None:
    for seed in range(3):  # data other than the probe's
        grad, inp = pair(batch, fan_in, fan_out, seed + 10)
        got = weight_grad(grad, inp)
        assert got.is_contiguous() and got.shape == (fan_out, fan_in)
        assert torch.equal(got, autograd_layout(grad, inp)), (batch, fan_in, fan_out, seed)


def test_float64_and_non_contiguous_inputs_are_autograds_too() -> None:
    grad, inp = pair(400, 2, 2048, 1, torch.float64)
    assert torch.equal(weight_grad(grad, inp), autograd_layout(grad, inp))
    wide = torch.randn(400, 4)
    strided = wide[:, ::2]  # (400, 2) with a row stride of 4
    grad32 = torch.randn(400, 2048)
    assert torch.equal(weight_grad(grad32, strided), autograd_layout(grad32, strided))


def test_a_layout_one_ulp_off_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weight_grads, "SPEEDUP", 1e9)  # any speed would do: only the bits decide

    def one_ulp_off(grad: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        out = transposed_layout(grad, inp)
        out[0, 0] = torch.nextafter(out[0, 0], torch.tensor(float("inf")))
        return out

    assert keeps_transposed(800, 2, 4096, torch.float32, candidate=autograd_layout)
    assert not keeps_transposed(800, 2, 4096, torch.float32, candidate=one_ulp_off)


def test_a_slower_layout_is_not_kept() -> None:
    def slower(grad: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return autograd_layout(grad, inp)

    assert not keeps_transposed(200, 2, 512, torch.float32, candidate=slower)


def test_the_probe_runs_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []
    real = weight_grads.keeps_transposed

    def counted(batch: int, fan_in: int, fan_out: int, dtype: torch.dtype) -> bool:
        calls.append((batch, fan_in, fan_out))
        return real(batch, fan_in, fan_out, dtype)

    monkeypatch.setattr(weight_grads, "keeps_transposed", counted)
    weight_grads._layout.cache_clear()
    for seed in range(4):
        weight_grad(*pair(700, 3, 512, seed))
        weight_grad(*pair(300, 3, 512, seed))
    weight_grad(*pair(700, 64, 32, 0))  # more inputs than outputs: autograd's layout, no probe
    weight_grad(*pair(4, 2, 64, 0))  # too small to be worth a probe
    assert calls == [(700, 3, 512), (300, 3, 512)]
