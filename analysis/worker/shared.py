"""Blob versions shared by the jobs of a batch, and with the worker's other batches.

Jobs of one container overlap (each upload starts a job over the whole
container), so a batch analyses each blob version once however many of its
jobs list it (``SharedMedia``, one per ``shared_key``). The first batch of
the worker to list a version owns it (analysis/worker/inflight.py); a batch
that finds it owned takes the owner's ``SharedOutcome`` instead. Every
outcome is given to each job that listed the version, and counts as one
more of that job's media done.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from azure.core.exceptions import AzureError

from analysis.job import Job
from analysis.logs import log_context
from analysis.openface.results import MediaFile, OpenFaceCancelled
from analysis.storage import BlobInput, ContainerNotFound, first_line
from analysis.worker.inflight import InFlight, Key, SharedOutcome
from analysis.worker.plan import Candidate, JobFailed
from analysis.worker.publish import SUPERSEDED, ResultWriter
from media_rules import Media


@dataclass
class Member:
    """One job of a batch and what has become of it."""

    job: Job
    results: ResultWriter
    order: int = 0  # the job's place in the batch: the first job to list a media publishes it
    deadline: float = float("inf")  # time.monotonic() when its time cap runs out
    candidates: list[Candidate] = field(default_factory=list)
    pending: int = 0  # candidates still without an outcome; at 0 the job is finished
    retry: str | None = None  # why the job must be tried again
    later: str | None = None  # why the job must wait, spending no attempt (no room on the disk)
    gone: bool = False  # its container was deleted: no blob can be written
    steps: dict = field(default_factory=lambda: defaultdict(float))

    def retry_later(self, reason: str) -> None:
        self.retry = self.retry or reason

    def wait_for_room(self, reason: str) -> None:
        self.later = self.later or reason

    def plan(self, choose: Callable[[], list[Candidate]]) -> None:
        """The job's media, as ``choose`` finds them; what stops it decides what becomes of the job."""
        with self.context():
            try:
                self.candidates = choose()
                self.results.progress.expect_more(len(self.candidates))
            except JobFailed as exc:
                self.results.fail(str(exc))
            except ContainerNotFound:
                self.gone = True
            except AzureError as exc:
                self.retry_later(f"storage: {first_line(exc)}")
            except OSError as exc:  # reading a small blob whole for its verdict: the disk is full
                self.wait_for_room(f"the worker's disk: {exc}")

    def context(self, blob: BlobInput | None = None):
        return log_context(job_id=self.job.job_id, container=self.job.container, blob=blob.name if blob else None)


@dataclass
class SharedMedia:
    """One blob version that jobs of the batch need OpenFace's result for."""

    key: Key
    blob: BlobInput
    extension: str | None  # None: planned as in hand elsewhere, never judged here
    claimants: list[tuple[Member, Candidate]] = field(default_factory=list)
    file: MediaFile | None = None
    outcome: SharedOutcome | None = None  # how its analysis went, once known
    owner: Future | None = None  # set when another batch analyses it: its outcome comes from there

    @property
    def container(self) -> str:
        return self.key[0]

    @property
    def run_key(self) -> tuple:
        """What media must share to go through one OpenFace run: kind, faces, options, alone or not."""
        return self.key[3:]


def shared_key(job: Job, blob: BlobInput) -> Key:
    """What makes one analysis serve several jobs: the blob version, the media kind and options; a job
    that runs alone shares with no one."""
    return (
        job.container,
        blob.name,
        blob.etag,
        job.media,
        job.faces,
        tuple(job.flags),
        job.job_id if job.runs_alone else "",
    )


class Sharing:
    """The batch's shared media; ``media_done(member)`` is called once per media of a job given its outcome."""

    def __init__(self, inflight: InFlight, media_done: Callable[[Member], None]):
        self.inflight = inflight
        self.media_done = media_done
        self.items: dict[Key, SharedMedia] = {}
        self._lock = threading.Lock()

    def join(self, member: Member, candidate: Candidate) -> SharedMedia | None:
        """Add the job as a claimant of its blob version; returns the version when the caller must download it."""
        key = shared_key(member.job, candidate.blob)
        with self._lock:
            item = self.items.get(key)
            new = item is None
            if new:
                item = self.items[key] = SharedMedia(key, candidate.blob, candidate.extension)
                _, theirs = self.inflight.own([key])
                item.owner = theirs.get(key)
            item.claimants.append((member, candidate))
            outcome = item.outcome
        if outcome is not None:  # its outcome came before this job did
            self.give([(member, candidate)], outcome)
        elif new and item.owner is None:
            return item
        elif new and item.owner.done():  # published a moment ago by another batch: no need to wait
            self.announce(item, item.owner.result(), owned=False)
        return None

    def announce(self, item: SharedMedia, outcome: SharedOutcome, owned: bool = True) -> None:
        """The version's outcome is in: give it to the jobs waiting on it (and, if ours, to other batches)."""
        with self._lock:
            item.outcome = outcome
            claimants = list(item.claimants)
        if owned:
            self.inflight.announce(item.key, outcome)
        self.give(claimants, outcome)

    def published(self, item: SharedMedia, outcome: SharedOutcome) -> None:
        """Ours, published for every claimant already: tell other batches, count the media done."""
        with self._lock:
            item.outcome = outcome
            claimants = list(item.claimants)
        self.inflight.announce(item.key, outcome)
        for member, _ in claimants:
            self.media_done(member)

    def give(self, claimants: list[tuple[Member, Candidate]], outcome: SharedOutcome) -> None:
        for member, candidate in claimants:
            with member.context(candidate.blob):
                if outcome.retry:
                    member.retry_later(outcome.retry)
                elif outcome.later:
                    member.wait_for_room(outcome.later)
                elif outcome.gone:
                    member.gone = True
                elif outcome.superseded:
                    member.results.record(candidate.blob, SUPERSEDED, "the blob changed after the job was created")
                else:
                    member.results.record(
                        candidate.blob,
                        outcome.status,
                        f"analysed by job {outcome.job_id}, in another batch of this worker",
                        outcome.outputs,
                        csv=outcome.csv,
                    )
            self.media_done(member)

    def groups(self) -> list[list[SharedMedia]]:
        """The downloaded versions this batch analyses itself, by what must share an OpenFace run."""
        groups: dict[tuple, list[SharedMedia]] = {}
        for item in self.items.values():
            if item.file is not None and item.owner is None:
                groups.setdefault(item.run_key, []).append(item)
        return list(groups.values())

    def take_the_others(self, stopping: threading.Event) -> None:
        """Wait for every outcome another batch owes this one; shutdown does not wait."""
        for item in list(self.items.values()):
            if item.owner is not None and item.outcome is None:
                self.announce(item, _wait_for(item.owner, stopping), owned=False)

    def worth_a_process(self, images: int) -> bool:
        """Whether the media this batch will analyse are worth an OpenFace process: a video, or ``images`` images."""
        with self._lock:
            kinds = [item.run_key[0] for item in self.items.values() if item.owner is None and item.outcome is None]
        return Media.VIDEO.value in kinds or len(kinds) >= images

    def close(self) -> None:
        """Versions of ours never finished: later batches may claim them afresh."""
        for item in self.items.values():
            if item.owner is None and item.outcome is None:
                self.inflight.announce(item.key, SharedOutcome(retry="the batch analysing it stopped"))


def _wait_for(future: Future, stopping: threading.Event) -> SharedOutcome:
    while True:
        try:
            outcome = future.result(timeout=0.5)
        except TimeoutError:
            if stopping.is_set():
                raise OpenFaceCancelled("worker is shutting down") from None
            continue
        if outcome.retry and stopping.is_set():
            raise OpenFaceCancelled("worker is shutting down")  # the other batch was stopped
        return outcome
