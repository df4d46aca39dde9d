"""Blob versions a worker's batches are analysing right now, so that concurrent batches analyse each once.

Jobs of uploads trickling into one container overlap: job k lists blobs
1..k. When two of them land in batches that run at the same time, the first
batch to ask for a blob version owns it: it downloads, runs and publishes it,
then announces how it went (its ``SharedOutcome``). A batch that finds a
version owned waits for that outcome instead of analysing the blob again.
Waiting cannot go round in a circle: a batch takes its versions while it
gathers, batches gather one at a time, and a batch runs all of its own
OpenFace before it waits for anyone else's outcome.

A published outcome is kept for RECENT_SECONDS after it is announced: a batch looks
for earlier results in storage once per container, when its first job of
that container comes, and a young job made when its container held none does
not look at all (analysis/worker/plan.py), so a version another batch published
since would otherwise be analysed again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

# (container, blob name, ETag, media kind, faces, OpenFace options, job id of a job that runs alone or "")
Key = tuple[str, str, str, str, str, tuple[str, ...], str]
# Far longer than a batch gathers (BATCH_WAIT_SECONDS at most).
RECENT_SECONDS = 120.0


@dataclass(frozen=True)
class SharedOutcome:
    """How the owner's analysis of a blob version went, for every job that listed that version."""

    status: str | None = None  # the media outcome it published
    reason: str | None = None
    outputs: list[str] = field(default_factory=list)
    job_id: str | None = None  # the job that published it
    csv: bytes | None = None  # an image's CSV, for the job tables of the others (it is small)
    retry: str | None = None  # the owner could not finish it: why, for the waiting jobs to retry
    later: str | None = None  # the owner had no room for it now: the waiting jobs wait too, spending nothing
    superseded: bool = False  # the blob changed before the owner could download it
    gone: bool = False  # its container was deleted


class InFlight:
    def __init__(self, recent_seconds: float = RECENT_SECONDS):
        self._lock = threading.Lock()
        self._owned: dict[Key, Future] = {}
        self._recent: OrderedDict[Key, tuple[float, Future]] = OrderedDict()  # published outcomes, oldest first
        self._recent_seconds = recent_seconds

    def own(self, keys: list[Key]) -> tuple[set[Key], dict[Key, Future]]:
        """The keys now ours to analyse, and the others' keys with a future of their outcome."""
        mine, theirs = set(), {}
        with self._lock:
            now = time.monotonic()
            while self._recent and next(iter(self._recent.values()))[0] < now:
                self._recent.popitem(last=False)
            for key in keys:
                if key in self._owned:
                    theirs[key] = self._owned[key]
                elif key in self._recent:
                    theirs[key] = self._recent[key][1]
                else:
                    self._owned[key] = Future()
                    mine.add(key)
        return mine, theirs

    def knows(self, key: Key) -> bool:
        """Whether a batch is analysing ``key``, or published it lately: its outcome will come from there."""
        with self._lock:
            recent = self._recent.get(key)
            return key in self._owned or (recent is not None and recent[0] >= time.monotonic())

    def announce(self, key: Key, outcome: SharedOutcome) -> None:
        """Our analysis of ``key`` is over: tell whoever waits. Unless it was published, later batches
        may own it afresh."""
        with self._lock:
            future = self._owned.pop(key, None)
            if future is not None and outcome.status is not None:
                self._recent[key] = (time.monotonic() + self._recent_seconds, future)
        if future is not None:
            future.set_result(outcome)
