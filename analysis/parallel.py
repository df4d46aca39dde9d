"""Storage steps of many jobs at once, for the moments when they only wait on the network.

A batch's steps around OpenFace (claiming jobs, reading blobs, downloading,
publishing, writing manifests and records) are round trips to storage; run
side by side on THREADS threads they no longer add up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import TypeVar

R = TypeVar("R")

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
