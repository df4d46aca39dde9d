"""Storage steps of many jobs at once, for the moments when they only wait on the network.

A batch's steps around OpenFace (claiming jobs, reading blobs, downloading,
publishing, writing manifests and records) are round trips to storage; run
side by side on THREADS threads they no longer add up.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

R = TypeVar("R")
log = logging.getLogger(__name__)

# Storage calls in flight at once; the SDK keeps 10 connections per host.
THREADS = 8


class Once:
    """Each key's value computed by one thread only; the others wait for it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[Hashable, Future] = {}

    def get(self, key: Hashable, compute: Callable[[], R]) -> R:
        with self._lock:
            future, mine = self._values.get(key), False
            if future is None:
                future = self._values[key] = Future()
                mine = True
        if mine:
            try:
                future.set_result(compute())
            except BaseException as exc:
                future.set_exception(exc)
        return future.result()


class Tasks:
    """Work handed to a pool of THREADS, whose end can be awaited: every task given, even those that
    tasks gave in turn. A task that raises is logged; it never takes the pool down."""

    def __init__(self, name: str):
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix=name)
        self._futures: set[Future] = set()
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., object], *args) -> None:
        future = self._pool.submit(contextvars.copy_context().run, _logged, fn, *args)
        with self._lock:
            self._futures = {f for f in self._futures if not f.done()} | {future}

    def wait(self) -> None:
        """Until every task given so far, and every task they gave, is done."""
        while True:
            with self._lock:
                pending = [future for future in self._futures if not future.done()]
            if not pending:
                return
            wait(pending)

    def shutdown(self) -> None:
        self.wait()
        self._pool.shutdown()


def _logged(fn: Callable[..., object], *args) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("unexpected error in a task of the batch")
