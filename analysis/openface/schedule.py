"""Scheduling OpenFace processes: the slots a worker has, and sharing a group of media among them.

OpenFace uses about one core, so a worker runs up to ``OPENFACE_PROCESSES``
at once, shared by all its batches. A runner call shares its media among the
slots it gets: videos each to their own process, images in shares big
enough to pay for a process's model load.
"""

from __future__ import annotations

import threading

from analysis.openface.results import MediaFile, OpenFaceCancelled
from media_rules import Media

# A process's model load costs about as much CPU as 9 images (0.6 s against 0.07 s an image, on
# 2 cores). A second process halves the time of a share when a core is free, so it pays from about
# half that: shares of fewer than 4 images stay in one process.
MIN_IMAGES_PER_PROCESS = 4
# How often a wait for a slot looks at whether the worker is stopping.
_POLL_SECONDS = 0.1


def processes_worth(media: Media, files: list[MediaFile], processes: int) -> int:
    """How many of ``processes`` pay for themselves on ``files``: one per video, one per few images."""
    if media is Media.IMAGE:
        return min(processes, max(1, len(files) // MIN_IMAGES_PER_PROCESS))
    return max(1, min(processes, len(files)))


def split(media: Media, files: list[MediaFile], processes: int) -> list[list[MediaFile]]:
    """Share ``files`` among up to ``processes`` runs, where another process pays for itself."""
    count = processes_worth(media, files, processes)
    if count <= 1:
        return [files]
    # The largest first, each to the share with the fewest bytes so far.
    shares: list[list[MediaFile]] = [[] for _ in range(count)]
    loads = [0] * count
    for item in sorted(files, key=lambda f: f.path.stat().st_size, reverse=True):
        lightest = loads.index(min(loads))
        shares[lightest].append(item)
        loads[lightest] += item.path.stat().st_size
    order = {item.key: index for index, item in enumerate(files)}
    return [sorted(share, key=lambda f: order[f.key]) for share in shares]


class Slots:
    """The OpenFace processes a worker may run at once, shared by all its batches."""

    def __init__(self, count: int):
        self.count = count
        self._free = count
        self._changed = threading.Condition()

    @property
    def free(self) -> int:
        return self._free

    def wait_for_free(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._free > 0, timeout)

    def take(self, wanted: int, cancel: threading.Event | None) -> int:
        """One slot, waiting for it if need be, and up to ``wanted`` if more are free now."""
        with self._changed:
            while self._free == 0:
                if cancel is not None and cancel.is_set():
                    raise OpenFaceCancelled("worker is shutting down")
                self._changed.wait(_POLL_SECONDS)
            taken = min(wanted, self._free)
            self._free -= taken
            return taken

    def give(self, count: int) -> None:
        with self._changed:
            self._free += count
            self._changed.notify_all()
