"""One side of one workload in a process of its own: set up (untimed), then time a run per request.

    python -m benchmarks.worker '{"workload": "s1", "side": "ours", "quick": true, "cwd": "..."}'
    python -m benchmarks.worker --zygote baseline|ours [STORE]   (forks one such process per request)

Sides: `baseline` (the tutorial loop), `ours` (pipeline.stages.train, tracking on), `ours_untracked`
(the same with tracking.enabled false) and `scaling` (our fit loop, one epoch, growing data).
Commands, one per line on stdin: `{"inputs": {...}}` (what the suite prepared: data files, a
Layout, params), `warmup`, `run` (or `run SIDE`, a side this process hosts: suite.HOSTED), `profile`,
`exit`. Each gets one JSON line back
on the original stdout; whatever the libraries print goes to stderr. A fresh process per side
keeps the peak RSS (ru_maxrss, reported after every run) honest to that side.
"""

from __future__ import annotations

import contextlib
import cProfile
import functools
import gc
import io
import itertools
import json
import os
import pstats
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from benchmarks import workloads as W


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def minor_faults() -> int:
    """Pages this process has faulted in so far (a freed block mapped again counts anew)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Probe:
    """Wall seconds spent in a few named functions of ours during one run (nested ones included
    in their callers' time too): where does a run of `stages.train` go?"""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: Any, attribute: str, label: str | Callable[..., str]) -> None:
        original = getattr(owner, attribute, None)
        if original is None or getattr(original, "_bench_probe", False):
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label(*args, **kwargs) if callable(label) else label
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        timed._bench_probe = True  # type: ignore[attr-defined]
        setattr(owner, attribute, timed)

    def install(self) -> None:
        from pipeline import checkpoints, stages, tracking, training

        def model_label(*args: Any, **kwargs: Any) -> str:
            name = str(kwargs.get("name", "model"))
            return "log_checkpoint_model" if name.startswith("checkpoint") else "log_model"

        self.wrap(stages, "_load_split", "load_split")
        self.wrap(training.Trainer, "fit", "fit")
        self.wrap(tracking, "ask_git", "ask_git")  # starting the two git commands; read later
        self.wrap(tracking.Tracker, "start", "tracker_start")
        self.wrap(tracking.Tracker, "flush", "metrics_flush")
        self.wrap(tracking.Tracker, "log_metrics", "log_metrics")  # buffers each epoch's row
        self.wrap(tracking.Tracker, "log_model", model_label)  # checkpoints log theirs through it
        self.wrap(tracking.Tracker, "log_checkpoint", "log_checkpoint")
        self.wrap(tracking.Tracker, "register", "register_model")
        self.wrap(tracking.Tracker, "info", "run_info")
        self.wrap(tracking.Tracker, "finish", "tracker_finish")
        self.wrap(checkpoints, "save_checkpoint", "save_checkpoint")
        self.wrap(checkpoints, "save_model", "save_model")

    def take(self) -> dict[str, float]:
        out, self.seconds = {k: round(v, 4) for k, v in sorted(self.seconds.items())}, {}
        return out


class Side:
    """Set-up in __init__ and set_inputs (untimed); `run()` is the timed part and returns what it
    measured, `warmup()` a short run first."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.workload = W.by_name(spec["workload"], spec["quick"])
        self.info: dict[str, Any] = {}
        self.inputs: dict[str, Any] = {}

    def set_inputs(self, inputs: dict[str, Any]) -> None:
        """What the suite prepared for this side (data files, a Layout, params), after set-up."""
        self.inputs = inputs

    def run(self) -> dict[str, Any]:
        raise NotImplementedError

    def warmup(self) -> dict[str, Any]:
        """An untimed short run first: lazy imports, first calls, the MLflow store's caches."""
        return self.run()


class Baseline(Side):
    """The tutorial loop; its data comes from the file the suite wrote (generation is untimed)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        started = time.perf_counter()
        import numpy  # noqa: F401
        import torch

        self.info["threads"] = torch.get_num_threads()
        if self.workload.name == "s4":
            import torchvision  # noqa: F401
        self.info["import_s"] = round(time.perf_counter() - started, 3)
        self.train: Callable[[int, bool], dict[str, Any]] | None = None

    def load(self) -> Callable[[int, bool], dict[str, Any]]:
        """train(size, warmup): the baseline on its data; a warm-up makes WARMUP_STEPS steps."""
        import numpy as np

        name, inputs, steps = self.workload.name, self.inputs, W.WARMUP_STEPS
        device = self.spec.get("device", "cpu")
        if name == "s4":
            root = Path(inputs["root"])
            return lambda n, warm: W.baseline_s4(root, steps if warm else n, device)
        with np.load(inputs["data"]) as arrays:
            x, y = arrays["x"], arrays["y"]
        if name in ("s0_small", "s0_wide"):
            hidden = 4096 if name == "s0_wide" else 10
            return lambda n, warm: W.baseline_s0(x, y, hidden, steps if warm else n, device)
        return lambda n, warm: (
            W.baseline_s1(x[: 16 * steps], y[: 16 * steps], 1, device)
            if warm
            else W.baseline_s1(x, y, n, device)
        )

    def run(self, warm: bool = False) -> dict[str, Any]:
        self.train = self.train or self.load()
        gc.collect()
        started = time.perf_counter()
        result = self.train(self.workload.size, warm)
        return {"seconds": time.perf_counter() - started, **result}

    def warmup(self) -> dict[str, Any]:
        return self.run(warm=True)


class Ours(Side):
    """`pipeline.stages.train` on a Layout whose data and split the suite wrote with
    `pipeline.stages.data` and `split`; params as composed by the suite (`workloads.ours_params`)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        started = time.perf_counter()
        import torch

        from pipeline import checkpoints, stages, tracking, training  # noqa: F401
        from pipeline.config import params_from_dict

        self.info["threads"] = torch.get_num_threads()
        if spec["side"] == "ours":
            import mlflow  # noqa: F401  (train imports it lazily; a process pays it once)
        self.info["import_s"] = round(time.perf_counter() - started, 3)
        self.stages, self.params_from_dict = stages, params_from_dict
        self.probe = Probe()
        self.probe.install()

    def set_inputs(self, inputs: dict[str, Any]) -> None:
        super().set_inputs(inputs)
        self.variants = {
            side: (
                self.stages.Layout(Path(given["layout"])),
                self.params_from_dict(given["params"]),
                self.params_from_dict(given["warmup_params"]),
            )
            for side, given in {self.spec["side"]: inputs, **inputs.get("hosted", {})}.items()
        }

    def warmup(self) -> dict[str, Any]:
        results = [self.run(warm=True, side=side) for side in self.variants]  # the hosted ones too
        return {**results[0], "seconds": sum(r["seconds"] for r in results)}

    def run(self, warm: bool = False, side: str | None = None) -> dict[str, Any]:
        """A run of this process's side, or of a side it hosts (`side`, suite.HOSTED)."""
        layout, params, warmup_params = self.variants[side or self.spec["side"]]
        params = warmup_params if warm else params
        gc.collect()
        self.probe.take()
        started = time.perf_counter()
        result = self.stages.train(params, layout)
        seconds = time.perf_counter() - started
        out: dict[str, Any] = {
            "seconds": seconds,
            "final_loss": result["train_loss"],
            "parts": self.probe.take(),
        }
        if self.workload.name == "s4":
            tests = json.loads(layout.history.read_text()).get("test_history") or [{}]
            out["test_accuracy"] = tests[-1].get("test_accuracy")
        return out


class EpochClock:
    """A fit callback: when each epoch ended (its training, validation and callbacks done)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        self.ends.append(time.perf_counter())

    def on_train_end(self, trainer: Any) -> None:
        pass


class Scaling(Side):
    """One epoch of our fit loop (the default params: blobs 2->16->4, Adam, batch 32, 70/10/20
    split) at 10^3 ... 10^6 samples. Each repeat is a fit of EPOCHS epochs; the epochs timed are
    all but its first, which also pays what a fit pays once (the first Adam step through torch's
    own, the first calls' allocations), 2-3 ms, not per epoch: a bogus sub-linear first decade
    (printed too, as `first_epoch_s`). A size's time is its fastest timed epoch: on a shared
    host an epoch's time only ever grows with what else runs (10^5 samples: 230-430 ms, epoch
    after epoch of one fit, 2026-12-03), and the fastest is the least disturbed (the median is
    printed too, `median_s`). Every size gets at least EPOCHS - 1 timed epochs."""

    EPOCHS = 4

    SIZES = (1_000, 10_000, 100_000, 1_000_000)
    QUICK_SIZES = SIZES[:3]  # 10^6 is a quarter of a minute on a slow core

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec, self.info = spec, {}

    def run(self) -> dict[str, Any]:
        budget = 0.5 if self.spec["quick"] else 3.0  # seconds of repeats per size, at least 1 run
        # what the imports made, set aside: each fit's gc.collect() walks only what the fits left
        # (0.16 s a collection of the 0.3 million objects imported: 6 s of a quick run's 40 fits)
        gc.freeze()
        try:
            return {
                "sizes": [
                    self.size(n, budget) for n in (self.QUICK_SIZES if self.spec["quick"] else self.SIZES)
                ]
            }
        finally:
            gc.unfreeze()

    def size(self, n: int, budget: float) -> dict[str, Any]:
        """One size's row: fits of EPOCHS epochs until `budget` seconds of timed epochs."""
        import statistics

        import torch

        from pipeline.config import default_loss, params_from_dict
        from pipeline.data import make_dataset
        from pipeline.model import build_model, head_size
        from pipeline.split import split_dataset
        from pipeline.training import Trainer, seed_everything, to_tensors

        cpu = torch.device("cpu")
        params = params_from_dict(
            {
                "data": {"source": "blobs", "n_samples": n},
                "train": {"epochs": self.EPOCHS, "progress": "off", "device": "cpu", "checkpoint_every": 0},
                "tracking": {"enabled": False},
            }
        )
        parts = split_dataset(make_dataset(params.data), params.split)
        loss = default_loss(parts["train"].task) if params.train.loss == "auto" else params.train.loss
        train = to_tensors(parts["train"].features, parts["train"].targets, loss, cpu)
        val = to_tensors(parts["val"].features, parts["val"].targets, loss, cpu)
        times: list[float] = []
        firsts: list[float] = []
        while not times or (sum(times) < budget and len(times) < 150):
            seed_everything(params.train.seed, cpu)
            model = build_model(params.model, train.x.shape[1], head_size(loss, parts["train"].n_classes))
            trainer = Trainer(model, params.train, loss, cpu)
            clock = EpochClock()
            gc.collect()
            started = time.perf_counter()
            trainer.fit(train, val, [clock])
            firsts.append(clock.ends[0] - started)
            times += [end - before for before, end in itertools.pairwise(clock.ends)]
        return {
            "n_samples": n,
            "seconds": min(times),
            "median_s": statistics.median(times),
            "first_epoch_s": statistics.median(firsts),
            "repeats": len(times),
        }


SIDES: dict[str, type[Side]] = {
    "baseline": Baseline,
    "ours": Ours,
    "ours_untracked": Ours,
    "ours_fused": Ours,
    "scaling": Scaling,
}


def profile(side: Side, limit: int = 30) -> dict[str, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    result = side.run()
    profiler.disable()
    report = {}
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.strip_dirs().sort_stats(key).print_stats(limit)
        report[key] = text.getvalue()
    return {**result, "profile": report}


def serve(spec: dict[str, Any], commands: TextIO, proto: TextIO) -> None:
    """One side's loop: set up, say ready, then answer each command with one JSON line."""

    def answer(obj: dict[str, Any]) -> None:
        proto.write(json.dumps({**obj, "peak_rss_kb": peak_rss_kb()}) + "\n")
        proto.flush()

    if spec.get("cwd"):
        os.chdir(spec["cwd"])
    try:
        started = time.perf_counter()
        side = SIDES[spec["side"]](spec)
        answer({"ready": True, "setup_s": round(time.perf_counter() - started, 3), **side.info})
    except Exception:
        answer({"error": traceback.format_exc()})
        return
    for line in commands:
        command = line.strip()
        if command == "exit":
            break
        try:
            if command.startswith("{"):
                side.set_inputs(json.loads(command)["inputs"])
                answer({"ok": True})
            elif command == "warmup":
                result = side.warmup()
                gc.collect()
                gc.freeze()  # imports and set-up: out of every later collection (same for all sides)
                answer(result)
            elif command == "run" or command.startswith("run "):  # "run SIDE": a hosted side's
                faults = minor_faults()
                result = side.run(side=command[4:]) if command != "run" else side.run()
                answer({**result, "minor_faults": minor_faults() - faults})
            elif command == "profile":
                answer(profile(side))
            else:
                answer({"error": f"unknown command {command!r}"})
        except Exception:
            answer({"error": traceback.format_exc()})


PREIMPORTS = {
    # what every process of a kind imports anyway, sooner or later (the first optimizer imports
    # torch._dynamo; the first MLflow call its store; model logging mlflow.pyfunc and pandas).
    # S4's baseline imports torchvision itself, so the other baselines do not carry it.
    "baseline": ("numpy", "torch", "torch._dynamo"),
    "ours": (
        "numpy",
        "torch",
        "torch._dynamo",
        "pipeline.stages",
        "pipeline.training",
        "pipeline.model",
        "pipeline.checkpoints",
        "pipeline.callbacks",
        "pipeline.tracking",
        "pipeline.config",
        "pipeline.serving",
        "mlflow",
        "mlflow.pyfunc",
        "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store",
        "pandas",
    ),
}


def fork_running(work: Callable[[], None]) -> int:
    """A child process that runs `work` and exits (1 with the traceback on stderr if it raised);
    returns its pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            work()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid


def zygote(kind: str) -> None:
    """Import once what every side of `kind` needs, then fork one process per side asked for on
    stdin (a JSON line: spec, env, log file and two FIFOs for the commands and the answers).

    Forking after `import torch` is safe as long as no parallel op ran first (none does here);
    each side's peak RSS still counts everything imported, as a process of its own would."""
    import importlib

    started = time.perf_counter()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as pipeline.tracking does
    for name in PREIMPORTS[kind]:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    ready = {"import_s": round(time.perf_counter() - started, 3)}
    print(json.dumps(ready), flush=True)
    children = []
    for line in sys.stdin:
        request = json.loads(line)

        def side(request: dict[str, Any] = request) -> None:
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.environ.update(request["env"])
            with open(request["commands"]) as commands, open(request["answers"], "w") as answers:
                serve(request["spec"], commands, answers)

        children.append(fork_running(side))
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def main() -> None:
    if sys.argv[1] == "--zygote":  # --zygote KIND
        zygote(sys.argv[2])
        return
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed, by Python or C, goes to stderr
    serve(json.loads(sys.argv[1]), sys.stdin, proto)


if __name__ == "__main__":
    main()
