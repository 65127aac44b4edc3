"""A CPU stand-in for torch.cuda.CUDAGraph, to test graph-replayed code where no GPU is.

A CUDA graph records the kernels one run of some code launches, with the memory each reads and
writes, and a replay launches the same kernels on the same memory; the Python that launched them
does not run again. `capture` here records the aten operations a function runs (through a
TorchDispatchMode) with the very tensors they touched, and `replay` runs them again on those
tensors: each result is copied into the tensor the recording returned (an in-place operation
writes where it wrote anyway), and a view is already a view of the right memory. Like a real
capture, capturing leaves every tensor as it was (writes are undone), and reading a tensor on
the host (`.item()`, `.tolist()`, `bool(t)`) while capturing fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

T = TypeVar("T")


class HostSync(RuntimeError):
    """What CUDA reports as an illegal operation while a stream is capturing."""


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


class Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[Any, tuple[Any, ...], dict[str, Any], Any]] = []
        # every tensor that existed before the capture and an operation read or wrote, as it was
        # (by contents, not by schemas: native_batch_norm updates its running stats unannounced)
        self.before: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.made: set[int] = set()  # storages the recorded operations created
        self.seen: dict[int, torch.Tensor] = {}

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        for tensor in tree_leaves((args, kwargs)):
            if isinstance(tensor, torch.Tensor) and id(tensor) not in self.seen:
                self.seen[id(tensor)] = tensor
                if _storage(tensor) not in self.made:
                    self.before.append((tensor, tensor.detach().clone()))
        result = func(*args, **kwargs)
        if any(isinstance(leaf, (bool, int, float, complex)) for leaf in tree_leaves(result)):
            raise HostSync(f"{func} reads a tensor on the host while capturing")
        self.made |= {_storage(t) for t in tree_leaves(result) if isinstance(t, torch.Tensor)}
        self.ops.append((func, args, kwargs, result))
        return result

    def undo_writes(self) -> None:
        with torch.no_grad():
            for tensor, value in reversed(self.before):
                tensor.copy_(value)
        self.before.clear()

    def replay(self) -> None:
        with torch.no_grad():
            for func, args, kwargs, recorded in self.ops:
                if func.is_view:
                    continue
                result = func(*args, **kwargs)
                for fresh, kept in zip(tree_leaves(result), tree_leaves(recorded), strict=True):
                    if isinstance(kept, torch.Tensor) and fresh is not kept:  # not an in-place op's self
                        kept.copy_(fresh)


# host reads that bypass the dispatcher (they read the memory directly): refused while capturing
DIRECT_READS = ("tolist", "numpy", "__array__")


@contextmanager
def direct_reads_refused() -> Iterator[None]:
    def refuse(name: str) -> Callable[..., Any]:
        def read(*args: Any, **kwargs: Any) -> Any:
            raise HostSync(f"Tensor.{name} reads a tensor on the host while capturing")

        return read

    kept = {name: getattr(torch.Tensor, name) for name in DIRECT_READS}
    try:
        for name in DIRECT_READS:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, method in kept.items():
            setattr(torch.Tensor, name, method)


def capture(body: Callable[[], T]) -> tuple[T, Callable[[], None]]:
    """`body`'s operations recorded, not applied (its writes undone), and a replay of them."""
    recorder = Recorder()
    with direct_reads_refused(), recorder:
        outputs = body()
    recorder.undo_writes()
    return outputs, recorder.replay
