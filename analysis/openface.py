"""Running OpenFace's own executables over a batch of local files.

All files of a job go through one process, so the models load once. OpenFace
reports some failures only by what it does not write:
- ``FaceLandmarkImg`` writes no CSV for an image without a face (exit 0);
- an image it cannot open stops the run with exit 1, after the earlier
  images' outputs are written;
- ``FeatureExtraction`` exits 0 when it cannot open a video; depending on
  the version it stops there or goes on with the next video.
So after each run we check every input's files, mark the first input that
has none as unreadable, and run again over the other inputs that have none.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from analysis.config import IMAGE_EXECUTABLE, VIDEO_EXECUTABLE
from media_rules import Media

log = logging.getLogger(__name__)

# What OpenFace prints when it cannot read an input (image, video).
_CANNOT_OPEN = ("Could not open the image", "Failed to open the video file")
_LOG_TAIL_LINES = 15


class Outcome(str, Enum):
    ANALYSED = "analysed"
    NO_FACE = "no_face"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class MediaFile:
    """A local copy; ``key`` is the generated file stem OpenFace names outputs after."""

    key: str
    path: Path


@dataclass(frozen=True)
class FileResult:
    key: str
    outcome: Outcome
    csv: Path | None = None
    details: Path | None = None
    reason: str | None = None


class OpenFaceFailed(RuntimeError):
    """OpenFace exited non-zero for a reason other than an unreadable input."""

    def __init__(self, exit_code: int, log_tail: str):
        super().__init__(f"OpenFace exited with code {exit_code}: {log_tail}")
        self.exit_code = exit_code


class OpenFaceTimeout(RuntimeError):
    pass


class OpenFaceCancelled(RuntimeError):
    """The worker is shutting down and stopped the run."""


def executable_for(media: Media) -> str:
    return IMAGE_EXECUTABLE if media is Media.IMAGE else VIDEO_EXECUTABLE


def missing_executables(bin_dir: Path) -> list[str]:
    return [
        name
        for name in (IMAGE_EXECUTABLE, VIDEO_EXECUTABLE)
        if not os.access(bin_dir / name, os.X_OK)
    ]


class OpenFaceRunner:
    def __init__(self, bin_dir: Path, timeout_seconds: float):
        self.bin_dir = bin_dir
        self.timeout_seconds = timeout_seconds

    def run(
        self,
        media: Media,
        files: list[MediaFile],
        out_dir: Path,
        options: list[str],
        cancel: threading.Event | None = None,
    ) -> list[FileResult]:
        """Analyse ``files`` in as few runs as OpenFace allows; one result per file."""
        deadline = time.monotonic() + self.timeout_seconds
        results: list[FileResult] = []
        remaining = list(files)
        run_number = 0
        while remaining:
            run_number += 1
            argv = [str(self.bin_dir / executable_for(media))]
            for item in remaining:
                argv += ["-f", str(item.path)]
            argv += [*options, "-out_dir", str(out_dir)]
            console = out_dir / f"console-{run_number}.log"
            exit_code = self._execute(argv, console, deadline, cancel)
            done, missing = self._collect(media, remaining, out_dir)
            if exit_code != 0:
                # A non-zero exit is only explained by an input it could not open;
                # anything else (a crash, missing models) may have cut a CSV short.
                tail = _tail(console)
                if not missing or not any(marker in tail for marker in _CANNOT_OPEN):
                    raise OpenFaceFailed(exit_code, tail)
            results += done
            if not missing:
                break
            culprit, remaining = missing[0], missing[1:]
            results.append(FileResult(culprit.key, Outcome.UNREADABLE, reason=_unreadable_reason(media)))
        order = {item.key: index for index, item in enumerate(files)}
        return sorted(results, key=lambda result: order[result.key])

    def _execute(self, argv: list[str], console: Path, deadline: float, cancel: threading.Event | None) -> int:
        log.info("running OpenFace", extra={"argv": argv})
        started = time.monotonic()
        with console.open("wb") as out:
            # Own process group, so a timeout kills anything OpenFace started too.
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=console.parent, start_new_session=True,
            )
            try:
                while True:
                    try:
                        code = proc.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if time.monotonic() > deadline:
                        raise OpenFaceTimeout(
                            f"OpenFace did not finish within {self.timeout_seconds:g} s"
                        )
                    if cancel is not None and cancel.is_set():
                        raise OpenFaceCancelled("worker is shutting down")
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        log.info(
            "OpenFace exited",
            extra={"exit_code": code, "seconds": round(time.monotonic() - started, 3)},
        )
        return code

    @staticmethod
    def _collect(media: Media, files: list[MediaFile], out_dir: Path) -> tuple[list[FileResult], list[MediaFile]]:
        """Results for the files OpenFace wrote something for, and the files it did not."""
        done: list[FileResult] = []
        missing: list[MediaFile] = []
        for item in files:
            csv = out_dir / f"{item.key}.csv"
            details = out_dir / f"{item.key}_of_details.txt"
            if csv.is_file():
                done.append(FileResult(item.key, Outcome.ANALYSED, csv, details if details.is_file() else None))
            elif media is Media.IMAGE and details.is_file():
                done.append(FileResult(item.key, Outcome.NO_FACE, None, details, "OpenFace found no face"))
            else:
                missing.append(item)
        return done, missing


def _unreadable_reason(media: Media) -> str:
    return f"OpenFace could not open the {media.value}; it may be corrupt or in an unsupported format"


def _tail(console: Path) -> str:
    lines = console.read_text(errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:])
