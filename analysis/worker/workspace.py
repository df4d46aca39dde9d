"""A batch's private temp folder, and sweeping up the ones dead workers left.

Each folder holds a lock file that its worker keeps locked (``flock``) while
the batch runs. The kernel drops the lock when the process dies, however it
dies, so on start a worker removes every job folder whose lock it can take:
their owners are gone. Folders of workers still running are left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "openface-job-"  # a batch's
ENGINES_PREFIX = "openface-engines-"  # the resident engines' working folder, for the worker's life
LOCK_NAME = ".owner.lock"
# A folder this young may be between being made and being locked.
_GRACE_SECONDS = 60


@contextlib.contextmanager
def workspace(root: Path | None = None, prefix: str = PREFIX) -> Iterator[Path]:
    """A new folder, locked while in use and removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    with (path / LOCK_NAME).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def sweep(root: Path | None = None) -> int:
    """Remove the job folders under ``root`` whose owner has died; returns how many."""
    removed = 0
    folders = [
        path for prefix in (PREFIX, ENGINES_PREFIX) for path in Path(root or tempfile.gettempdir()).glob(f"{prefix}*")
    ]
    for path in folders:
        if path.is_dir() and _abandoned(path):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d job folder(s) left by workers that died", removed)
    return removed


def _abandoned(path: Path) -> bool:
    try:
        lock = (path / LOCK_NAME).open("r")
    except FileNotFoundError:
        return time.time() - path.stat().st_mtime > _GRACE_SECONDS
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its worker is alive and holds it
        return True
