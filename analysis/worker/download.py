"""Downloading a shared blob version for OpenFace, within the disk budget, pinned to its ETag.

A small blob was read whole when it was judged, and that copy is used. A
download takes its size from the disk budget first; without room, or when
the disk refuses the write, its jobs wait (handed back, spending no
attempt). An image whose header declares more than ``MAX_IMAGE_PIXELS`` is
refused here, before OpenFace, with its size in the reason.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from azure.core.exceptions import AzureError

from analysis.config import Settings
from analysis.openface.results import FileResult, MediaFile, Outcome
from analysis.storage import BlobChanged, ContainerNotFound, MediaStore, first_line
from analysis.worker.disk import DiskBudget
from analysis.worker.inflight import SharedOutcome
from analysis.worker.plan import BlobFacts, image_size_problem
from analysis.worker.shared import SharedMedia
from media_rules import Media


class Downloader:
    def __init__(self, store: MediaStore, facts: BlobFacts, disk: DiskBudget, settings: Settings):
        self.store, self.facts, self.disk, self.settings = store, facts, disk, settings
        self.folder = Path()  # the batch's in/, once it has one
        self._numbers = itertools.count()  # local file names are ours: m00000, m00001...

    def fetch(self, item: SharedMedia) -> SharedOutcome | FileResult | None:
        """Put the version on disk (``item.file``); or say what became of it instead: an outcome for its
        jobs, or a result refused before OpenFace."""
        key = f"m{next(self._numbers):05d}"
        started = time.monotonic()
        path = None
        try:
            if item.extension is None:  # planned as in hand elsewhere, which it no longer is: judge it now
                verdict = self.facts.verdict(item.container, item.blob)
                if verdict.kind is None or not verdict.readable or verdict.kind.value != item.run_key[0]:
                    return SharedOutcome(retry="its analysis elsewhere in the worker did not finish")
                item.extension = verdict.extension
            path = self.folder / f"{key}.{item.extension}"
            size = self._download(item, path)
            if size is None:
                return SharedOutcome(
                    later=f"no room on the worker's disk for {item.blob.size} bytes now (DISK_RESERVE_BYTES kept free)"
                )
        except BlobChanged:
            return SharedOutcome(superseded=True)
        except ContainerNotFound:
            return SharedOutcome(gone=True)
        except AzureError as exc:
            return SharedOutcome(retry=f"could not download {item.blob.name}: {first_line(exc)}")
        except OSError as exc:  # the disk filled after all: not the media's fault
            if path is not None:
                path.unlink(missing_ok=True)
            return SharedOutcome(later=f"could not write {item.blob.name} to the worker's disk: {exc}")
        if item.run_key[0] == Media.IMAGE.value:
            problem = image_size_problem(path, self.settings.max_image_pixels)
            if problem:  # never shown to OpenFace
                path.unlink()
                return FileResult(key, Outcome.TOO_LARGE, reason=problem)
        claimants = list(item.claimants)
        item.file = MediaFile(key, path, deadline=max(member.deadline for member, _ in claimants))
        for member, _ in claimants:
            member.steps["download_bytes"] += size
            member.steps["download_seconds"] += time.monotonic() - started
        return None

    def _download(self, item: SharedMedia, path: Path) -> int | None:
        """The bytes written; None when the disk has no room for them now."""
        copy = self.facts.take_copy(item.container, item.blob)  # read whole when it was judged
        if copy is not None:
            return copy.rename(path).stat().st_size
        if not self.disk.take(item.blob.size):
            return None
        try:
            return self.store.download(item.container, item.blob, path)
        finally:
            self.disk.give(item.blob.size)
