"""A Linear layer's weight gradient in the faster of two GEMM layouts, where both give the same bits.

Autograd computes the gradient of a weight (out, in) as grad^T @ inp, (out, batch) @ (batch, in).
The same numbers come out of (inp^T @ grad)^T. MKL takes other kernels for the two, and for a thin
input (2 or 3 features, as the 2-D blobs have) the first is 4-20x slower: S0 wide's first layer,
(4096, 800) @ (800, 2), took 18 ms of a 37-ms epoch, against 0.9 ms the other way. For other
shapes (4 to 10 features here) the two kernels sum in different orders and their last bits differ.

So the first step of each shape computes both layouts on seeded probe data of that shape and keeps
the transposed one only where it gives autograd's bits on every probe and is clearly faster. The
gradients are autograd's bits either way; only the time depends on what the probe finds.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch

WeightGrad = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PROBES = 3  # seeded (grad, inp) pairs both layouts must agree on, bit for bit
TIMINGS = 3  # calls of each layout timed after one warm call; the fastest counts
SPEEDUP = 0.8  # the transposed layout is kept only at most this fraction of autograd's time
MIN_PRODUCTS = 1 << 16  # smaller products (batch x in x out) are not worth a probe


def autograd_layout(grad: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """(batch, out), (batch, in) -> (out, in): the product autograd's addmm backward takes."""
    return grad.t().mm(inp)


def transposed_layout(grad: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """The same product as (in, out)^T, made contiguous as autograd leaves it (the probes are
    contiguous, so other layouts take autograd's product)."""
    if not (grad.is_contiguous() and inp.is_contiguous()):
        return autograd_layout(grad, inp)
    return inp.t().mm(grad).t().contiguous()


def layout_for(grad: torch.Tensor, inp: torch.Tensor) -> WeightGrad:
    """The layout for a weight gradient from grad (batch, out) and the layer's input (batch, in):
    the transposed one only on the CPU, for more outputs than inputs, where a probe kept it."""
    batch, fan_out = grad.shape
    fan_in = inp.shape[1]
    if grad.device.type != "cpu" or fan_in >= fan_out or batch * fan_in * fan_out < MIN_PRODUCTS:
        return autograd_layout
    return _layout(batch, fan_in, fan_out, grad.dtype, torch.get_num_threads())


def weight_grad(grad: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """grad (batch, out), the layer's input (batch, in) -> the weight's gradient (out, in)."""
    return layout_for(grad, inp)(grad, inp)


@functools.lru_cache(maxsize=256)
def _layout(batch: int, fan_in: int, fan_out: int, dtype: torch.dtype, threads: int) -> WeightGrad:
    """The layout for one shape, dtype and thread count, probed once per process."""
    if keeps_transposed(batch, fan_in, fan_out, dtype):
        return transposed_layout
    return autograd_layout


def keeps_transposed(
    batch: int,
    fan_in: int,
    fan_out: int,
    dtype: torch.dtype,
    candidate: WeightGrad = transposed_layout,
) -> bool:
    """Whether `candidate` gives autograd_layout's bits on every probe and is clearly faster."""
    generator = torch.Generator().manual_seed(0)
    probes = [
        (
            torch.randn(batch, fan_out, generator=generator, dtype=dtype),
            torch.randn(batch, fan_in, generator=generator, dtype=dtype),
        )
        for _ in range(PROBES)
    ]
    if not all(torch.equal(candidate(g, x), autograd_layout(g, x)) for g, x in probes):
        return False
    grad, inp = probes[0]
    return _seconds(candidate, grad, inp) <= SPEEDUP * _seconds(autograd_layout, grad, inp)


def _seconds(layout: WeightGrad, grad: torch.Tensor, inp: torch.Tensor) -> float:
    layout(grad, inp)
    best = float("inf")
    for _ in range(TIMINGS):
        start = time.perf_counter()
        layout(grad, inp)
        best = min(best, time.perf_counter() - start)
    return best
