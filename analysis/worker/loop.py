"""The worker's loop: whenever an OpenFace slot is free, a batch of what waits on the queue.

Whenever one of its ``OPENFACE_PROCESSES`` OpenFace slots is free, the
worker takes what is waiting and starts a batch (analysis/worker/handler.py)
in a thread of its own; the batch goes on gathering the messages that keep
arriving (analysis/worker/gather.py). A lone job on an idle worker does not
wait for company. Jobs of the quarantine line run one at a time, each in a
batch of its own. While the queue is empty, the worker sweeps for jobs whose
message was lost (analysis/sweep.py).

On SIGTERM the running batches may finish within
``WORKER_SHUTDOWN_GRACE_SECONDS``; after that they are stopped and the jobs
not yet settled are handed back, spending no attempt.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from analysis.backends import Backends
from analysis.config import Settings
from analysis.openface.runner import OpenFaceRunner
from analysis.queue import Delivery
from analysis.sweep import Sweeper
from analysis.worker.handler import BatchHandler
from analysis.worker.lifecycle import Lifecycle
from analysis.worker.quarantine import Quarantine

log = logging.getLogger(__name__)


class Worker:
    """The slot loop: a batch whenever a slot is free, the quarantine line, the sweep, the stop."""

    def __init__(self, settings: Settings, backends: Backends, runner: OpenFaceRunner):
        self.settings = settings
        self.backends = backends
        self.runner = runner
        self.quarantine = Quarantine(backends.queue, settings.queue_visibility_seconds)
        lifecycle = Lifecycle(settings, backends, self.quarantine)
        self.sweeper = Sweeper(
            backends.jobs, backends.queue, settings.job_requeue_seconds, settings.queue_visibility_seconds
        )
        self.stopping = threading.Event()  # take no new batch
        self.cancel = threading.Event()  # stop the running batches and hand them back
        self.handler = BatchHandler(settings, backends, runner, lifecycle, self.stopping, self.cancel)
        self._found_empty = 0.0  # time.monotonic() of the latest receive that found the queue empty

    def request_stop(self, signum=None, frame=None) -> None:
        if self.stopping.is_set():
            self.cancel.set()  # a second signal: do not wait for the grace period
            return
        log.info("stopping: running batches may finish within %s s", self.settings.worker_shutdown_grace_seconds)
        self.stopping.set()
        timer = threading.Timer(self.settings.worker_shutdown_grace_seconds, self.cancel.set)
        timer.daemon = True
        timer.start()

    def queue_empty(self) -> bool:
        """Whether the queue was found empty a moment ago: nothing waits that the sweep could queue twice."""
        return time.monotonic() - self._found_empty < 2 * self.settings.worker_poll_seconds + 1

    def run(self, burst: bool = False) -> None:
        """Process batches until stopped; with ``burst``, until the queue is empty and all are done."""
        slots, poll = self.runner.slots, self.settings.worker_poll_seconds
        log.info("worker started", extra={"queue": self.settings.job_queue_name, "openface_processes": slots.count})
        # A batch waiting on another's blob holds no slot, so a few more batches than slots may run.
        most = 2 * slots.count
        with self.quarantine, ThreadPoolExecutor(most, thread_name_prefix="batch") as pool:
            self.sweeper.run(self.stopping, self.settings.job_sweep_seconds, self.queue_empty)
            running: set[Future] = set()
            alone: Future | None = None  # the quarantined job running now: one at a time
            while not self.stopping.is_set():
                running = {future for future in running if not future.done()}
                if len(running) == most or not slots.wait_for_free(poll):
                    wait(running, timeout=poll, return_when=FIRST_COMPLETED)
                    continue
                if alone is None or alone.done():
                    suspect = self.quarantine.next()
                    if suspect is not None:
                        alone = self._start(pool, running, [suspect], alone=True, quarantined=True)
                        continue
                try:
                    first = self.backends.queue.receive(
                        self.settings.batch_max_messages, self.settings.queue_visibility_seconds
                    )
                except Exception:
                    log.exception("could not read the queue; retrying")
                    self.stopping.wait(poll * 5)
                    continue
                if not first:
                    self._found_empty = time.monotonic()
                    if burst and not running and not len(self.quarantine):
                        break
                    self.stopping.wait(poll)
                    continue
                # A lone job on an idle worker waits for no one.
                self._start(pool, running, first, alone=len(first) == 1 and not running)
        log.info("worker stopped")

    def _start(
        self,
        pool: ThreadPoolExecutor,
        running: set[Future],
        first: list[Delivery],
        alone: bool,
        quarantined: bool = False,
    ) -> Future:
        started = threading.Event()
        future = pool.submit(contextvars.copy_context().run, self._handle, first, started, alone, quarantined)
        running.add(future)
        # The batch gathers what arrives next; the worker takes more once it runs.
        while not started.wait(0.05) and not self.cancel.is_set():
            pass
        return future

    def _handle(self, first: list[Delivery], started: threading.Event, alone: bool, quarantined: bool) -> None:
        try:
            self.handler.handle(first, started, alone, quarantined)
        except Exception:
            # The messages reappear after their visibility timeout and are retried.
            log.exception("unexpected error while handling a batch")
        finally:
            started.set()
