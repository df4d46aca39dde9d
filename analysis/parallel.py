"""Storage steps of many jobs at once, for the moments when they only wait on the network.

A batch's steps before and after OpenFace (claiming jobs, reading blobs,
downloading, writing manifests and records) are round trips to storage, one
after another per job; run side by side they no longer add up. (During
OpenFace's runs the cores are busy, so results are published as they come,
not in parallel.)
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Storage calls in flight at once; the SDK keeps 10 connections per host.
THREADS = 8


def each(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(item) for item in items]``, several at a time, each with the caller's log context."""
    items = list(items)
    if len(items) < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(THREADS, len(items)), thread_name_prefix="storage") as pool:
        return list(pool.map(lambda item: contextvars.copy_context().run(fn, item), items))


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
