"""What OpenFace made of each input, as its executables and the engine report it.

OpenFace reports some failures only by what it does not write:
- ``FaceLandmarkImg`` writes no CSV for an image without a face (exit 0);
- an image it cannot open stops the run with exit 1, after the earlier
  images' outputs are written;
- ``FeatureExtraction`` exits 0 when it cannot open a video; depending on
  the version it stops there or goes on with the next video.
``collect`` reads what an input left; ``classify`` says, from how an OpenFace
process ended, which results are final and which inputs must run again. Both
are pure: they need no process to test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from media_rules import Media

# What OpenFace prints when it cannot read an input (image, video).
CANNOT_OPEN = ("Could not open the image", "Failed to open the video file")
# What OpenFace (C++, OpenCV) says when an allocation fails, as under its memory cap.
_OUT_OF_MEMORY = ("std::bad_alloc", "St9bad_alloc", "Insufficient memory", "Failed to allocate")


class Outcome(str, Enum):
    ANALYSED = "analysed"
    NO_FACE = "no_face"
    UNREADABLE = "unreadable"
    FAILED = "failed"  # OpenFace did not finish it within its time limit, or ran out of memory on it
    CRASHED = "crashed"  # OpenFace itself failed while it was in hand: the job is retried
    TOO_LARGE = "too_large"  # refused before OpenFace: over a size limit


@dataclass(frozen=True)
class MediaFile:
    """A local copy; ``key`` is the generated file stem OpenFace names outputs after."""

    key: str
    path: Path
    deadline: float | None = None  # time.monotonic() by which its jobs' time caps run out


@dataclass(frozen=True)
class FileResult:
    key: str
    outcome: Outcome
    csv: Path | None = None
    details: Path | None = None
    reason: str | None = None
    extras: dict[str, Path] = field(default_factory=dict)  # optional outputs found: hog, aligned, tracked
    analysed_by: str = "cli"  # OpenFace's executables ("cli") or a resident engine ("engine")


@dataclass(frozen=True)
class TimeLimits:
    """How long OpenFace may spend on one media: a base, plus an allowance per megabyte, up to a cap,
    and never past the time cap of the jobs that wait for it.

    Size stands in for length, which is unknown before OpenFace opens a video;
    the limit only has to catch a run that hangs.
    """

    base_seconds: float
    seconds_per_mb: float
    max_seconds: float = float("inf")

    def for_file(self, item: MediaFile) -> float:
        own = min(self.max_seconds, self.base_seconds + self.seconds_per_mb * item.path.stat().st_size / 1_000_000)
        return own if item.deadline is None else max(0.0, min(own, item.deadline - time.monotonic()))


def over_time_reason(limit: float) -> str:
    return (
        f"OpenFace did not finish it within {limit:.0f} s, its time limit (OPENFACE_TIMEOUT_SECONDS plus "
        "OPENFACE_TIMEOUT_SECONDS_PER_MB per MB, at most OPENFACE_TIMEOUT_MAX_SECONDS, and within the "
        "job's JOB_TIMEOUT_SECONDS)"
    )


def ran_out_of_memory(text: str) -> bool:
    return any(marker in text for marker in _OUT_OF_MEMORY)


def out_of_memory_reason() -> str:
    return "OpenFace ran out of memory on it: its process may use at most OPENFACE_MEMORY_LIMIT_MB of address space"


class OpenFaceCancelled(RuntimeError):
    """The worker is shutting down and stopped the run."""


@dataclass(frozen=True)
class RunEnd:
    """How one OpenFace process ended."""

    exit_code: int | None  # None: stopped because the input in hand overran its limit
    in_hand: int  # index of the input OpenFace was on when it stopped
    limit: float = 0.0  # that input's time limit
    tail: str = ""  # the end of its console, when it exited non-zero


def classify(
    media: Media, inputs: list[MediaFile], end: RunEnd, done: list[FileResult], missing: list[MediaFile]
) -> tuple[list[FileResult], list[MediaFile]]:
    """The results one OpenFace process made final over ``inputs``, and the inputs to run again.

    ``done`` and ``missing`` are what ``collect`` found of ``inputs``. The
    inputs before the one in hand are complete. An overrun, or running out
    of memory, fails the input in hand alone; a crash (not an input it could
    not open) leaves the input in hand and those after it ``crashed``, for
    the job to retry; an input it could not open is ``unreadable`` and the
    rest run again.
    """
    finished = {item.key for item in inputs[: end.in_hand]}
    complete = [result for result in done if result.key in finished]
    in_hand, after = inputs[end.in_hand], inputs[end.in_hand + 1 :]
    if end.exit_code is None:
        return complete + [FileResult(in_hand.key, Outcome.FAILED, reason=over_time_reason(end.limit))], after
    if end.exit_code != 0 and ran_out_of_memory(end.tail):
        return complete + [FileResult(in_hand.key, Outcome.FAILED, reason=out_of_memory_reason())], after
    if end.exit_code != 0 and not (missing and any(marker in end.tail for marker in CANNOT_OPEN)):
        reason = f"OpenFace exited with code {end.exit_code}: {end.tail}"
        answered = {result.key for result in complete}
        return complete + [
            FileResult(item.key, Outcome.CRASHED, reason=reason) for item in inputs if item.key not in answered
        ], []
    if not missing:
        return done, []
    return done + [FileResult(missing[0].key, Outcome.UNREADABLE, reason=unreadable_reason(media))], missing[1:]


def collect(
    media: Media, files: list[MediaFile], out_dir: Path, analysed_by: str = "cli"
) -> tuple[list[FileResult], list[MediaFile]]:
    """Results for the files OpenFace wrote something for, and the files it did not."""
    done: list[FileResult] = []
    missing: list[MediaFile] = []
    for item in files:
        csv = out_dir / f"{item.key}.csv"
        details = details_path(out_dir, item)
        if csv.is_file():
            done.append(
                FileResult(
                    item.key,
                    Outcome.ANALYSED,
                    csv,
                    details if details.is_file() else None,
                    extras=_extras(out_dir, item.key, media),
                    analysed_by=analysed_by,
                )
            )
        elif media is Media.IMAGE and details.is_file():
            done.append(
                FileResult(
                    item.key,
                    Outcome.NO_FACE,
                    None,
                    details,
                    "OpenFace found no face",
                    extras=_extras(out_dir, item.key, media),
                    analysed_by=analysed_by,
                )
            )
        else:
            missing.append(item)
    return done, missing


def _extras(out_dir: Path, key: str, media: Media) -> dict[str, Path]:
    """The optional outputs OpenFace wrote for one input (only those asked for are ever written)."""
    tracked = "tracked_image" if media is Media.IMAGE else "tracked_video"
    paths = {
        "hog": out_dir / f"{key}.hog",
        "aligned": out_dir / f"{key}_aligned",
        tracked: out_dir / f"{key}.{'jpg' if media is Media.IMAGE else 'avi'}",
    }
    return {name: path for name, path in paths.items() if path.exists()}


def details_path(out_dir: Path, item: MediaFile) -> Path:
    return out_dir / f"{item.key}_of_details.txt"


def unreadable_reason(media: Media) -> str:
    return f"OpenFace could not open the {media.value}; it may be corrupt or in an unsupported format"
