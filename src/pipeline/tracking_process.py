"""MLflow in a process of its own, beside the stage that logs to it.

A stage forks this process first thing; it imports MLflow and opens the store (3-4 s in a fresh
`pipeline train` or `evaluate`) while the stage imports torch and computes, on the other core.
The stage then talks to it through `RemoteTracker`, which has Tracker's methods: calls whose
answer the stage needs wait for it; the rest (metrics, tags, checkpoints logged as models) are
sent and done there while training goes on. Calls run in the order they were made; an error
there comes back with the next call that waits (at the latest `finish`), as the same one line.

Only where `fork` is safe and cheap (Linux), and by default (`tracking.process: auto`) only when
the stage's process has not loaded MLflow itself: a `pipeline` command, not a long-lived process
(tests, a notebook) that has already paid for the import and the store, and would pay again
for the modules a child imports and loses. Otherwise the stage uses Tracker in its own process.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from pipeline.config import TrackingConfig
from pipeline.errors import PipelineError

# methods whose answer the stage waits for; the others are sent and not waited on
ANSWERED = {"start", "join", "info", "last_logged_step", "log_model", "register", "decide_champion", "finish"}


class TrackingProcess:
    """The forked child and the parent's end of the pipe to it."""

    def __init__(self, pid: int, conn: Any) -> None:
        self.pid, self.conn = pid, conn
        self.finished = False

    @classmethod
    @contextlib.contextmanager
    def beside(cls, cfg: TrackingConfig, models: bool = False) -> Iterator[TrackingProcess | None]:
        """For the duration of a stage: the tracking process (see `fork`), closed at the end."""
        process = cls.fork(cfg, models)
        try:
            yield process
        finally:
            if process is not None:
                process.close()

    @classmethod
    def fork(cls, cfg: TrackingConfig, models: bool = False) -> TrackingProcess | None:
        """The child, started; `models`: it also gets ready to log models (pyfunc, our model code)."""
        loaded = "mlflow" in sys.modules
        if not cfg.enabled or not cfg.process or not sys.platform.startswith("linux"):
            return None
        if cfg.process == "auto" and loaded:
            return None
        from multiprocessing.connection import Pipe

        if loaded:  # a long-lived process (tests, a notebook): the child inherits
            from pipeline.tracking import open_store, tracking_uri  # the open store, not opens its own

            open_store(tracking_uri())
        parent, child = Pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: serve, then leave without running the parent's exit handlers
            parent.close()
            code = 1
            try:
                _serve(child, models)
                code = 0
            finally:
                with contextlib.suppress(BaseException):
                    from pipeline.store_template import fold_logs

                    fold_logs()  # its exit handlers do not run
                os._exit(code)
        child.close()
        return cls(pid, parent)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "finish":
            self.finished = True
        try:
            self.conn.send((name, args, kwargs))
            if name not in ANSWERED:
                return None
            status, value = self.conn.recv()
        except (EOFError, OSError, pickle.PicklingError) as exc:
            stopped = f"the MLflow tracking process stopped ({type(exc).__name__}); see its output above"
            raise PipelineError(stopped) from None
        if status == "pipeline_error":
            raise PipelineError(value)
        if status == "error":
            raise RuntimeError(f"in the MLflow tracking process:\n{value}")
        return value

    def close(self) -> None:
        """Done with it: after `finish` it has ended or is ending; before (the stage failed
        first), it has nothing left worth waiting for."""
        try:
            self.conn.close()
            if not self.finished:
                os.kill(self.pid, signal.SIGKILL)
        finally:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)


def start_tracker(
    process: TrackingProcess | None,
    cfg: TrackingConfig,
    params: dict[str, Any],
    tags: dict[str, str],
    run_id: str | None,
) -> Any:
    """This execution's run (see Tracker.start), in the tracking process when there is one."""
    if process is None:
        from pipeline.tracking import Tracker

        return Tracker.start(cfg, params, tags, run_id=run_id)
    return RemoteTracker(process, cfg).start(params, tags, run_id)


def join_tracker(process: TrackingProcess | None, cfg: TrackingConfig, run_id: str | None) -> Any:
    """The run train opened (see Tracker.join), in the tracking process when there is one."""
    if process is None:
        from pipeline.tracking import Tracker

        return Tracker.join(cfg, run_id)
    return RemoteTracker(process, cfg).join(run_id)


class RemoteTracker:
    """Tracker's interface, carried out in the tracking process."""

    def __init__(self, process: TrackingProcess, cfg: TrackingConfig) -> None:
        self.process, self.cfg = process, cfg
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def _opened(self, answer: dict[str, Any]) -> RemoteTracker:
        self.run_id, self.experiment_id = answer["run_id"], answer["experiment_id"]
        return self

    def start(self, params: dict[str, Any], tags: dict[str, str], run_id: str | None) -> RemoteTracker:
        return self._opened(self.process.call("start", self.cfg, params, tags, run_id))

    def join(self, run_id: str | None) -> RemoteTracker:
        return self._opened(self.process.call("join", self.cfg, run_id))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def forward(*args: Any, **kwargs: Any) -> Any:
            return self.process.call(name, *args, **kwargs)

        return forward


def _serve(conn: Any, models: bool) -> None:
    """The child's loop: MLflow ready first, then each call in turn until `finish` or the pipe
    ends; while idle, what logging a model needs is imported ahead."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the stage's to handle
    gc.freeze()  # what the parent had imported is never garbage here: no collection walks it
    from pipeline import gc_control, tracking

    _forget_inherited_connections()
    waiting_error: tuple[str, str] | None = None
    try:
        tracking.warm_up()
    except BaseException as exc:  # said with the first call that waits
        waiting_error = _describe(exc)
    gc_control.resume_for_good()  # MLflow imported (with the collector paused by the command)
    tracker: Any = None
    while True:
        if models and not conn.poll():
            models = False
            with contextlib.suppress(BaseException):  # the call that needs them will say what is wrong
                tracking.warm_up(models=True)
        try:
            name, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        if waiting_error is not None and name in ANSWERED and name != "finish":
            conn.send(waiting_error)  # an earlier failure answers this call instead
            waiting_error = None
            continue
        try:
            if name in ("start", "join"):
                cfg, *rest = args
                tracker = getattr(tracking.Tracker, name)(cfg, *rest, **kwargs)
                value: Any = {"run_id": tracker.run_id, "experiment_id": tracker.experiment_id}
            elif tracker is None:
                raise PipelineError(f"tracking: {name} before the run was opened")
            else:
                value = getattr(tracker, name)(*args, **kwargs)
                if name == "log_model" and value is not None:
                    value = SimpleNamespace(model_uri=value.model_uri, model_id=value.model_id)
        except BaseException as exc:
            described = _describe(exc)
            if name in ANSWERED:
                conn.send(described)
                waiting_error = None
            elif waiting_error is None:
                waiting_error = described
            if name == "finish":
                return
            continue
        if name in ANSWERED:
            if waiting_error is not None:  # a call sent earlier failed: the stage hears it now
                conn.send(waiting_error)
                waiting_error = None
            else:
                conn.send(("ok", value))
        if name == "finish":
            return


def _describe(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, PipelineError):
        return "pipeline_error", str(exc)
    return "error", "".join(traceback.format_exception(exc)).rstrip()


def _die_with_parent() -> None:
    """If the stage is killed (SIGKILL leaves it no chance to say so), this process goes too."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _forget_inherited_connections() -> None:
    """A stage that already used MLflow (tests, benchmarks, a long-lived process) hands its
    SQLAlchemy pools down through fork; the child opens its own connections instead of sharing
    the parent's, as SQLAlchemy asks for forked processes. torch, if the parent had it, runs on
    one thread here (its thread pool does not survive a fork)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if "mlflow" not in sys.modules:
        return
    try:
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        from pipeline.tracking import tracking_uri

        uri = tracking_uri()
        for store in (tracking_utils._get_store(uri), registry_utils._get_store(uri)):
            engine = getattr(store, "engine", None)
            if engine is not None:
                engine.dispose(close=False)
    except Exception:  # a store without SQLAlchemy has nothing to forget
        pass
