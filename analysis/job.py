"""A job: one analysis of one container, always in a named state, stored as a blob.

Records live in their own blob container (``JOB_RECORDS_CONTAINER``) as
``<job_id>.json``. Every write is conditional on the record's ETag, so two
processes never overwrite each other's changes unknowingly. An empty marker
``by-container/<container>/<job_id>`` per job lets a caller who knows only
the upload container find its jobs.

A running job has a holder: the token of the claim that runs it. Moves made
for that claim name its token (``by=``), so a worker whose lease lapsed,
and whose job another worker took since, can no longer settle it. The
record's blob metadata carries its status and when it last showed life, so
a sweep (analysis/sweep.py) can list the jobs to check without reading them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import Enum

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobPrefix, BlobServiceClient, ContainerClient, ContentSettings

from analysis.options import Options
from analysis.storage import BlobInput
from media_rules import Faces, Media, MediaType

# Bump when a change here should make the same upload analyse again.
FINGERPRINT_VERSION = 1
INDEX_PREFIX = "by-container/"


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


# Every state change a job may make; JobStore.move refuses the rest.
TRANSITIONS = {
    JobStatus.QUEUED: {JobStatus.RUNNING, JobStatus.FAILED},  # taken by a worker; given up on
    # done; back in the queue (a retry, or handed back on shutdown); taken again after its worker died
    JobStatus.RUNNING: {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.QUEUED, JobStatus.RUNNING},
    JobStatus.FAILED: {JobStatus.QUEUED},  # asked for again
    JobStatus.SUCCEEDED: set(),
}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def job_id_for(container: str, media: Media, options: Options, inputs: list[BlobInput]) -> str:
    """Same container, blob versions and options -> same id; any change -> a new one."""
    identity = {
        "v": FINGERPRINT_VERSION,
        "container": container,
        "media": media.value,
        "options": options.flags(),
        "inputs": sorted((b.name, b.etag) for b in inputs),
    }
    if options.faces is not Faces.SINGLE:  # only then, so the ids of one-face jobs stay as they were
        identity["faces"] = options.faces.value
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest[:32]


# A field named otherwise in the record (and in GET /jobs/<id>) than in code.
_RECORD_KEYS = {"flags": "options"}
_FIELDS = {key: name for name, key in _RECORD_KEYS.items()}


@dataclass
class Job:
    job_id: str
    container: str
    media: str
    media_type: str
    flags: list[str]  # OpenFace's command-line flags; "options" in the record
    inputs: list[dict]
    faces: str = Faces.SINGLE.value
    extra_outputs: list[str] = field(default_factory=list)  # OpenFace outputs asked for besides the CSV
    status: JobStatus = JobStatus.QUEUED
    attempts: int = 0
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    started_at: str | None = None
    finished_at: str | None = None
    outputs: list[str] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)  # one entry per media blob
    summary: dict | None = None
    error: str | None = None
    # While it runs: media finished out of the total, and each video's percent (analysis/worker/progress.py).
    progress: dict | None = None
    # Set when a shared OpenFace run failed: the retry runs on its own, so a
    # crash is pinned on the job whose media cause it.
    runs_alone: bool = False
    # Whether the container held results (processed/) when the job was made;
    # None in records from before this was kept. Without any, the worker does
    # not look for earlier results (analysis/worker/plan.py).
    results_before: bool | None = None
    # The token of the claim that runs it (while running), and when that claim last showed life.
    holder: str | None = None
    heartbeat_at: str | None = None
    # When its latest message was sent: a queued job older than that has lost it, or waits long.
    queued_at: str | None = None
    # The record blob's ETag when it was read; not part of the document.
    etag: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def new(
        cls, container: str, media: Media, options: Options, inputs: list[BlobInput], results_before: bool | None = None
    ) -> Job:
        return cls(
            job_id=job_id_for(container, media, options, inputs),
            container=container,
            media=media.value,
            media_type=options.media_type.value,
            flags=options.flags(),
            inputs=[b.to_dict() for b in inputs],
            faces=options.faces.value,
            extra_outputs=list(options.extra_outputs),
            results_before=results_before,
            queued_at=now(),
        )

    @property
    def alive_at(self) -> float:
        """When it last showed life (epoch seconds): its holder's heartbeat while running, else its queuing."""
        alive = self.heartbeat_at if self.status is JobStatus.RUNNING else self.queued_at
        return datetime.fromisoformat(alive or self.updated_at).timestamp()

    @property
    def options(self) -> Options:
        return Options.of_job(self.media_type, self.faces, self.extra_outputs)

    @property
    def blob_inputs(self) -> list[BlobInput]:
        return [BlobInput(**item) for item in self.inputs]

    def to_document(self) -> dict:
        doc = {_RECORD_KEYS.get(name, name): value for name, value in asdict(self).items()}
        doc.pop("etag")
        doc["status"] = self.status.value
        return doc

    @classmethod
    def from_document(cls, doc: dict, etag: str | None = None) -> Job:
        known = {f.name for f in fields(cls)} - {"etag"}
        doc = {_FIELDS.get(key, key): value for key, value in doc.items()}
        job = cls(**{k: v for k, v in doc.items() if k in known})
        job.status = JobStatus(job.status)
        job.etag = etag
        return job

    def public(self) -> dict:
        """What ``GET /jobs/<id>`` shows."""
        doc = self.to_document()
        for private in ("runs_alone", "results_before", "holder", "heartbeat_at", "queued_at"):
            doc.pop(private)
        doc["media_type"] = MediaType(self.media_type).name.lower()
        doc["inputs"] = [{"name": i["name"], "etag": i["etag"], "size": i["size"]} for i in self.inputs]
        return doc


class JobConflict(RuntimeError):
    """The record changed since it was read."""


class InvalidTransition(RuntimeError):
    """A state change TRANSITIONS does not allow (another process moved the job first)."""


class LeaseLost(InvalidTransition):
    """The job is held by another claim now: the one that asked may not change it."""


@dataclass(frozen=True)
class RecordSeen:
    """A record as a listing of the records shows it: no read needed."""

    job_id: str
    status: JobStatus
    alive_at: float  # epoch seconds of its last sign of life: queued, claimed, heartbeat


class ContainerIndex:
    """Which jobs each upload container has: an empty marker blob per job, named after both."""

    def __init__(self, records: ContainerClient):
        self.records = records  # the records container

    def add(self, job: Job) -> None:
        """The job's marker, written before its record.

        A marker without a record is skipped when listing; the first marker
        of a job keeps its time (storage times have whole seconds only).
        """
        try:
            self.records.upload_blob(
                self._marker(job.container, job.job_id),
                b"",
                overwrite=False,
                metadata={"created_ns": str(time.time_ns())},
            )
        except ResourceExistsError:
            pass

    def newest_first(self, container: str) -> Iterator[str]:
        """The ids of the container's jobs, the newest first."""
        markers = self.records.list_blobs(name_starts_with=self._marker(container, ""), include=["metadata"])
        for marker in sorted(markers, key=lambda blob: int(blob.metadata.get("created_ns", 0)), reverse=True):
            yield marker.name.rsplit("/", 1)[1]

    @staticmethod
    def _marker(container: str, job_id: str) -> str:
        return f"{INDEX_PREFIX}{container}/{job_id}"


class JobStore:
    """The job records, one JSON blob each, written only if unchanged since read (their ETag)."""

    def __init__(self, service: BlobServiceClient, container: str):
        self.container = service.get_container_client(container)
        self.index = ContainerIndex(self.container)

    def ensure(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    def ping(self) -> None:
        self.container.get_container_properties()

    def create(self, job: Job) -> tuple[Job, bool]:
        """Store a new job; if one with this id exists, return it instead."""
        for _ in range(3):  # a record may be deleted between our write and our read
            try:
                self.index.add(job)
                result = self._blob(job.job_id).upload_blob(
                    self._encode(job),
                    content_settings=ContentSettings(content_type="application/json"),
                    metadata=self._metadata(job),
                    overwrite=False,  # fails if the record exists: If-None-Match: *
                )
            except ResourceExistsError:
                existing = self.get(job.job_id)
                if existing is None:
                    continue
                return existing, False
            job.etag = result["etag"]
            return job, True
        raise JobConflict(job.job_id)

    def for_container(self, container: str, limit: int) -> list[Job]:
        """The container's jobs, newest first, at most ``limit``."""
        jobs = []
        for job_id in self.index.newest_first(container):
            job = self.get(job_id)
            if job is not None:
                jobs.append(job)
            if len(jobs) == limit:
                break
        return jobs

    def get(self, job_id: str) -> Job | None:
        try:
            download = self._blob(job_id).download_blob()
        except ResourceNotFoundError:
            return None
        return Job.from_document(json.loads(download.readall()), etag=download.properties.etag)

    def save(self, job: Job) -> Job:
        """Write the job back; raises JobConflict if someone else wrote it first."""
        job.updated_at = now()
        try:
            result = self._blob(job.job_id).upload_blob(
                self._encode(job),
                overwrite=True,
                content_settings=ContentSettings(content_type="application/json"),
                metadata=self._metadata(job),
                etag=job.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceExistsError):
            raise JobConflict(job.job_id) from None
        job.etag = result["etag"]
        return job

    def move(self, job: Job, status: JobStatus, by: str | None = None, **changes) -> Job:
        """Put the job in ``status``, with ``changes``; on a conflict, re-read and try again.

        The only way a job changes state: a move TRANSITIONS does not allow
        raises InvalidTransition, also when another process got there first.
        With ``by`` (a claim's token), the move is that claim's: LeaseLost if
        another claim holds the job now.
        """

        def change(latest: Job) -> None:
            if by is not None and latest.holder != by:
                raise LeaseLost(f"job {latest.job_id} is held by another claim now")
            if status not in TRANSITIONS[latest.status]:
                raise InvalidTransition(f"job {latest.job_id} cannot go from {latest.status.value} to {status.value}")
            latest.status = status
            latest.progress = None  # progress belongs to one run; every state change ends it
            _assign(latest, changes)

        return self._write(job, change)

    def claim(self, job: Job, token: str, **changes) -> Job:
        """Make the claim ``token`` the running job's holder, with ``changes``, if the record is still as
        read: JobConflict if it changed since (the caller looks again), never a blind take-over."""
        if JobStatus.RUNNING not in TRANSITIONS[job.status]:
            raise InvalidTransition(f"job {job.job_id} cannot go from {job.status.value} to running")
        claimed = Job.from_document(job.to_document(), etag=job.etag)  # the caller's copy stays as read
        stamp = now()
        _assign(claimed, {"status": JobStatus.RUNNING, "holder": token, "heartbeat_at": stamp, "started_at": stamp})
        _assign(claimed, changes)
        return self.save(claimed)

    def touch(self, job: Job, by: str | None, **changes) -> Job:
        """Change fields of a job, not its state (a heartbeat, its progress), for its holder only
        (``by``: the claim's token; None for a job no claim holds)."""

        def change(latest: Job) -> None:
            if latest.holder != by:
                raise LeaseLost(f"job {latest.job_id} is held by another claim now")
            _assign(latest, changes)

        return self._write(job, change)

    def records(self) -> Iterator[RecordSeen]:
        """Every job record, as its listing shows it (the by-container markers left out)."""
        for blob in self.container.walk_blobs(include=["metadata"], delimiter="/"):
            if isinstance(blob, BlobPrefix) or not blob.name.endswith(".json"):
                continue
            metadata = blob.metadata or {}
            try:
                yield RecordSeen(blob.name[:-5], JobStatus(metadata["status"]), float(metadata["alive_at"]))
            except (KeyError, ValueError):  # a record from before its metadata was kept
                yield RecordSeen(blob.name[:-5], JobStatus.QUEUED, blob.last_modified.timestamp())

    def _write(self, job: Job, change: Callable[[Job], None]) -> Job:
        """``change`` the job and save it; on a conflict, re-read it and change the latest."""
        for _ in range(5):
            change(job)
            try:
                return self.save(job)
            except JobConflict:
                latest = self.get(job.job_id)
                if latest is None:
                    raise
                job = latest
        raise JobConflict(job.job_id)

    @staticmethod
    def _metadata(job: Job) -> dict[str, str]:
        return {"status": job.status.value, "alive_at": f"{job.alive_at:.0f}"}

    def _blob(self, job_id: str):
        return self.container.get_blob_client(f"{job_id}.json")

    @staticmethod
    def _encode(job: Job) -> bytes:
        return json.dumps(job.to_document(), indent=1).encode()


def _assign(job: Job, changes: dict) -> None:
    for name, value in changes.items():
        setattr(job, name, value)
