"""The worker's temporary disk: a batch downloads only what fits, and keeps a reserve for OpenFace's outputs.

Batches of up to ``BATCH_MAX_MESSAGES`` jobs download their media before
OpenFace starts, side by side, so without a budget a few large uploads could
fill the disk and every job on it would fail. Before each download the batch
takes the blob's size from the budget: the disk's free space, less
``DISK_RESERVE_BYTES``, less what other downloads are about to write. What
does not fit waits: its job is handed back for later, spending no attempt. A
media that could not fit even on an empty disk is ``too_large``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path


class DiskBudget:
    def __init__(
        self,
        reserve_bytes: int,
        folder: Callable[[], Path] = lambda: Path(tempfile.gettempdir()),
        usage: Callable[[Path], tuple[int, int, int]] = shutil.disk_usage,
    ):
        self.reserve_bytes = reserve_bytes
        self._folder, self._usage = folder, usage
        self._coming = 0  # bytes of downloads under way: not on the disk yet, but soon
        self._lock = threading.Lock()

    def capacity(self) -> int:
        """The largest media that could ever be downloaded here."""
        total, _, _ = self._usage(self._folder())
        return total - self.reserve_bytes

    def take(self, size: int) -> bool:
        """Room for a download of ``size`` bytes, if there is; give it back once the file is written."""
        with self._lock:
            _, _, free = self._usage(self._folder())
            if size > free - self.reserve_bytes - self._coming:
                return False
            self._coming += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self._coming -= size
