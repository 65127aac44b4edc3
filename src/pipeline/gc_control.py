"""Python's garbage collector while a command imports, and during long work after that.

Importing torch, MLflow and scikit-learn creates about a million objects; with the collector on,
they trigger collection after collection, each walking what is alive so far: 15-25 % of the
imports' time (torch 2.4 -> 1.9 s, MLflow 1.9 -> 1.6 s, scikit-learn 1.2 -> 1.0 s on 2 cores).
A `pipeline` command therefore runs with the collector off (`paused`), which is harmless for short
work; long work afterwards (the fit, the tracking process's calls) turns it on again with what
was imported set aside (`resumed`), so its collections walk only what that work allocates. And
Python's shutdown would run one more full collection over all of it (0.8 s of every stage
command, for a process that is ending): `no_collection_at_exit` sets it aside first.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """The collector off for the duration (as it was, after)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def resumed() -> Iterator[None]:
    """Everything alive now set aside (gc.freeze) and the collector on, for work that allocates
    for a long time; as it was, after (objects handed back: nothing leaks in a long-lived process)."""
    gc.freeze()
    enabled = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        if not enabled:
            gc.disable()
        gc.unfreeze()


def resume_for_good() -> None:
    """`resumed` for the rest of a process that never returns (the tracking process)."""
    gc.freeze()
    gc.enable()


def no_collection_at_exit() -> None:
    """At interpreter shutdown, what is still alive is set aside (gc.freeze) before Python's
    final collection, which then walks nothing; modules and objects are torn down as usual.
    Registered once, early, so that it runs after every exit handler registered later."""
    global _AT_EXIT
    if not _AT_EXIT:
        atexit.register(gc.freeze)
        _AT_EXIT = True


_AT_EXIT = False
