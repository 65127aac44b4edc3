"""Full-batch epochs replayed as one CUDA graph.

A full-batch epoch on a GPU is a few dozen small kernels (forward, backward, the optimizer's
update, the metric sums, the validation pass), each launched from Python: on the 2-D blobs the
launches, not the arithmetic, are the epoch. `torch.cuda.CUDAGraph` records them once and
replays them with one launch. The epoch's code is the graph's body: its first epochs run
eagerly on a side stream (the warm-up torch asks for: the optimizer creates its state, cuBLAS its
workspace), the next one is captured and then replayed, and every later epoch is one replay.
Replays read and write the very tensors the capture saw (weights, gradients, optimizer state,
the metric sums), so the body must not sync with the host nor change between epochs; the fit
loop reads the sums once per epoch, after the replay.

`unsupported` says which loops qualify: CUDA, one step per epoch, a learning rate no scheduler
changes, an optimizer that can be captured (SGD, or Adam, AdamW and RMSprop made `capturable`,
which `planned` asks for), no dropout (its random masks would repeat), no compiled forward.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from pipeline.errors import PipelineError

T = TypeVar("T")
# the body -> (what its captured run returned, a replay of it); capturing does not run the body
Capture = Callable[[Callable[[], T]], tuple[T, Callable[[], None]]]

WARMUP_EPOCHS = 3  # eager runs of the body before the capture, as torch's graph notes advise


def unsupported(
    device: torch.device,
    steps_per_epoch: int,
    scheduler: bool,
    model: nn.Module,
    compiled: bool,
    optimizer: torch.optim.Optimizer | None = None,
) -> str:
    """Why a fit cannot replay its epochs as a CUDA graph ('' when it can)."""
    if device.type != "cuda":
        return f"training on {device.type}, not CUDA"
    if steps_per_epoch != 1:
        return f"{steps_per_epoch} steps per epoch (mini-batches), not full-batch"
    if scheduler:
        return "a scheduler changes the learning rate between epochs"
    if optimizer is not None and not all(g.get("capturable", True) for g in optimizer.param_groups):
        return f"{type(optimizer).__name__} made without capturable (batch_size: full asks for it)"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return "dropout (a replay would repeat its random masks)"
    if compiled:
        return "a compiled forward (train.compile)"
    return ""


def planned(cfg: Any, device: torch.device, model: nn.Module) -> bool:
    """Whether a fit with `cfg` may replay graphs, as far as is known before the data (a
    `batch_size` of `full`): its optimizer is then made `capturable` (step counters and bias
    corrections on the device, as a capture requires)."""
    return (
        cfg.cuda_graphs is not False
        and cfg.batch_size == "full"
        and not unsupported(device, 1, cfg.scheduler != "none", model, cfg.compile)
    )


def cuda_capture(stream: Any) -> Capture[Any]:
    """torch's own capture on `stream` (the side stream the warm-up ran on)."""

    def capture(body: Callable[[], T]) -> tuple[T, Callable[[], None]]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            outputs = body()
        return outputs, graph.replay

    return capture


class EpochGraph:
    """Runs `body` (one epoch) eagerly for the warm-up, then captures it once and replays it.

    `epoch()` returns what the body returned: during the warm-up this epoch's fresh values, after
    the capture the same objects every time, refilled by each replay. A capture that fails
    (`required` false) is said in one line on stderr and the epochs go on eagerly; `required`,
    it ends the fit in one line. A failed capture ran nothing: its epoch then runs eagerly."""

    def __init__(
        self,
        body: Callable[[], T],
        capture: Capture[T] | None = None,
        warmup: int = WARMUP_EPOCHS,
        required: bool = False,
    ) -> None:
        self.body, self.warmup, self.required = body, warmup, required
        self.stream: Any = None
        if capture is None:  # the real thing: a side stream for the warm-up and the capture
            self.stream = torch.cuda.Stream()
            capture = cuda_capture(self.stream)
        self.capture = capture
        self.replay: Callable[[], None] | None = None
        self.outputs: Any = None
        self.eager_epochs = 0
        self.failure = ""  # why the capture failed, if it did

    def epoch(self) -> Any:
        if self.replay is None and (self.eager_epochs < self.warmup or self.failure):
            self.eager_epochs += 1
            return self._on_side_stream(self.body)
        if self.replay is None:
            try:
                self.outputs, self.replay = self._on_side_stream(lambda: self.capture(self.body))
            except RuntimeError as exc:
                self._failed(exc)
                return self.epoch()
        self.replay()
        return self.outputs

    def _failed(self, exc: RuntimeError) -> None:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        self.failure = lines[0][:200]
        if self.required:
            what = f"train.cuda_graphs: true, but capturing the epoch failed: {self.failure}"
            raise PipelineError(what) from exc
        print(
            f"note: capturing the epoch as a CUDA graph failed ({self.failure}); "
            "the epochs run eagerly (train.cuda_graphs: false skips the attempt)",
            file=sys.stderr,
        )

    def _on_side_stream(self, work: Callable[[], Any]) -> Any:
        if self.stream is None:
            return work()
        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            result = work()
        current.wait_stream(self.stream)
        return result
