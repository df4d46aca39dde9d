"""Running OpenFace's own executables over a batch of local files.

All files of a run go through one process, so the models load once. OpenFace
reports some failures only by what it does not write:
- ``FaceLandmarkImg`` writes no CSV for an image without a face (exit 0);
- an image it cannot open stops the run with exit 1, after the earlier
  images' outputs are written;
- ``FeatureExtraction`` exits 0 when it cannot open a video; depending on
  the version it stops there or goes on with the next video.
So after each run we check every input's files, mark the first input that
has none as unreadable, and run again over the other inputs that have none.

OpenFace works through its inputs in order and writes an input's
``_of_details.txt`` when it starts on it, so the runner knows which media is
in hand. Each media has its own time limit, scaled to its size: one that
overruns it is stopped and marked failed, and the run goes on with the rest.
When OpenFace crashes, what it finished before the media in hand stands; that
media and the ones after it are reported ``crashed``, for the job to retry.
Since an input is finished once OpenFace has started on the next one, each
result is handed on (``on_result``) as soon as it is final, while OpenFace
goes on with the rest.

OpenFace uses about one core, so a runner shares a batch among up to
``processes`` OpenFace processes at once: videos each to their own process,
images in shares big enough to pay for a process's model load.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from analysis import metrics
from analysis.config import IMAGE_EXECUTABLE, MULTI_FACE_EXECUTABLE, VIDEO_EXECUTABLE, Settings
from analysis.sandbox import Sandbox
from media_rules import Media

log = logging.getLogger(__name__)

# What OpenFace prints when it cannot read an input (image, video).
_CANNOT_OPEN = ("Could not open the image", "Failed to open the video file")
_LOG_TAIL_LINES = 15
# The video executables print "0% 10% ... 100%" as they go through a video.
_PERCENT = re.compile(rb"(\d{1,3})% ")
# How often a run is looked at: finished inputs are handed on, progress and time limits checked.
_POLL_SECONDS = 0.1
# Loading OpenFace's models costs about as much as 9 images (0.6 s against 0.07 s
# an image, on 2 cores): a share of fewer images is not worth a process.
MIN_IMAGES_PER_PROCESS = 4



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
    return (f"OpenFace did not finish it within {limit:.0f} s, its time limit (OPENFACE_TIMEOUT_SECONDS plus "
            "OPENFACE_TIMEOUT_SECONDS_PER_MB per MB, at most OPENFACE_TIMEOUT_MAX_SECONDS, and within the "
            "job's JOB_TIMEOUT_SECONDS)")


# What OpenFace (C++, OpenCV) says when an allocation fails, as under its memory cap.
_OUT_OF_MEMORY = ("std::bad_alloc", "St9bad_alloc", "Insufficient memory", "Failed to allocate")


def ran_out_of_memory(text: str) -> bool:
    return any(marker in text for marker in _OUT_OF_MEMORY)


def out_of_memory_reason() -> str:
    return ("OpenFace ran out of memory on it: its process may use at most OPENFACE_MEMORY_LIMIT_MB "
            "of address space")


class OpenFaceCancelled(RuntimeError):
    """The worker is shutting down and stopped the run."""


def executable_for(media: Media) -> str:
    return IMAGE_EXECUTABLE if media is Media.IMAGE else VIDEO_EXECUTABLE


def missing_executables(bin_dir: Path) -> list[str]:
    return [
        name
        for name in (IMAGE_EXECUTABLE, VIDEO_EXECUTABLE, MULTI_FACE_EXECUTABLE)
        if not os.access(bin_dir / name, os.X_OK)
    ]


def split(media: Media, files: list[MediaFile], processes: int) -> list[list[MediaFile]]:
    """Share ``files`` among up to ``processes`` runs, where another process pays for itself."""
    if media is Media.IMAGE:
        count = min(processes, max(1, len(files) // MIN_IMAGES_PER_PROCESS))
    else:
        count = min(processes, len(files))
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


@dataclass
class _RunEnd:
    exit_code: int | None  # None: stopped because the input in hand overran its limit
    in_hand: int  # index of the input OpenFace was on when it stopped
    limit: float = 0.0


class OpenFaceRunner:
    # Every run pays a model load, so a batch waits a moment for company (analysis/worker.py).
    pays_per_run = True

    def __init__(self, bin_dir: Path, limits: TimeLimits, processes: int = 1, sandbox: Sandbox | None = None):
        self.bin_dir = bin_dir
        self.limits = limits
        self.slots = Slots(processes)
        self.sandbox = sandbox or Sandbox()

    @classmethod
    def from_settings(cls, settings: Settings, sandbox: Sandbox | None = None) -> "OpenFaceRunner":
        """Raises SandboxError when OPENFACE_SANDBOX or OPENFACE_ENV_PASSTHROUGH cannot work."""
        limits = TimeLimits(settings.openface_timeout_seconds, settings.openface_timeout_seconds_per_mb,
                            settings.openface_timeout_max_seconds)
        sandbox = sandbox or Sandbox.create(settings.openface_sandbox, settings.openface_env_passthrough,
                                            settings.openface_memory_limit_mb)
        return cls(settings.openface_bin_dir, limits, settings.openface_processes, sandbox)

    def run(
        self,
        media: Media,
        files: list[MediaFile],
        out_dir: Path,
        options: list[str],
        cancel: threading.Event | None = None,
        started: threading.Event | None = None,
        on_result: Callable[[FileResult], None] | None = None,
        executable: str | None = None,
        on_progress: Callable[[str, int], None] | None = None,
    ) -> list[FileResult]:
        """Analyse ``files`` in as many OpenFace processes as pay and are free; one result per file, in order.

        ``executable`` defaults to the media's usual one. ``started`` is set
        once the run has its processes' slots. ``on_result`` gets each result
        once, as soon as it is final; ``on_progress`` gets (key, percent) of
        the video in hand as OpenFace reports it (both from the run's threads).
        """
        on_result = on_result or (lambda result: None)
        run = _Run(media, executable or executable_for(media), options, out_dir, cancel, on_result,
                   on_progress or (lambda key, percent: None))
        shares = split(media, files, self.slots.take(len(split(media, files, self.slots.count)), cancel))
        if started is not None:
            started.set()

        def run_share(share: list[MediaFile]) -> list[FileResult]:
            try:
                return self._run_share(run, share)
            finally:
                self.slots.give(1)  # as soon as this process is done, for the next batch

        if len(shares) == 1:
            results = run_share(files)
        else:
            with ThreadPoolExecutor(len(shares), thread_name_prefix="openface") as pool:
                futures = [pool.submit(copy_context().run, run_share, share) for share in shares]
                results = [result for future in futures for result in future.result()]
        order = {item.key: index for index, item in enumerate(files)}
        return sorted(results, key=lambda result: order[result.key])

    def _run_share(self, run: "_Run", files: list[MediaFile]) -> list[FileResult]:
        """One share, in as few runs as OpenFace allows."""
        media, out_dir, on_result = run.media, run.out_dir, run.on_result
        handed_on: set[str] = set()

        def hand_on(finished: list[MediaFile]) -> None:
            for result in collect(media, [f for f in finished if f.key not in handed_on], out_dir)[0]:
                handed_on.add(result.key)
                on_result(result)

        results: list[FileResult] = []
        remaining = list(files)
        run_number = 0
        while remaining:
            run_number += 1
            argv = [str(self.bin_dir / run.executable)]
            for item in remaining:
                argv += ["-f", str(item.path)]
            argv = self.sandbox.command([*argv, *run.options, "-out_dir", str(out_dir)])
            console = out_dir / f"console-{remaining[0].key}-{run_number}.log"
            end = self._execute(argv, remaining, out_dir, console, run, hand_on)
            # The inputs before the one in hand are complete.
            finished, in_hand = remaining[:end.in_hand], remaining[end.in_hand]
            if end.exit_code is None:
                results += collect(media, finished, out_dir)[0]
                results.append(FileResult(in_hand.key, Outcome.FAILED, reason=over_time_reason(end.limit)))
                remaining = remaining[end.in_hand + 1:]
                continue
            done, missing = collect(media, remaining, out_dir)
            tail = _tail(console) if end.exit_code != 0 else ""
            if end.exit_code != 0 and ran_out_of_memory(tail):
                # Over its memory cap on the media in hand: that one fails, the run goes on without it.
                results += [result for result in done if result.key in {f.key for f in finished}]
                results.append(FileResult(in_hand.key, Outcome.FAILED, reason=out_of_memory_reason()))
                remaining = remaining[end.in_hand + 1:]
                continue
            if end.exit_code != 0 and not (missing and any(marker in tail for marker in _CANNOT_OPEN)):
                # Not an input it could not open: a crash, missing models... The media in
                # hand may have a CSV cut short; it and those after it are tried again.
                complete = [result for result in done if result.key in {f.key for f in finished}]
                results += complete
                reason = f"OpenFace exited with code {end.exit_code}: {tail}"
                settled = {result.key for result in complete}
                results += [FileResult(f.key, Outcome.CRASHED, reason=reason) for f in remaining
                            if f.key not in settled]
                break
            results += done
            if not missing:
                break
            culprit, remaining = missing[0], missing[1:]
            results.append(FileResult(culprit.key, Outcome.UNREADABLE, reason=unreadable_reason(media)))
        for result in results:
            if result.key not in handed_on:
                handed_on.add(result.key)
                on_result(result)
        return results

    def _execute(self, argv: list[str], files: list[MediaFile], out_dir: Path, console: Path,
                 run: "_Run", hand_on: Callable[[list[MediaFile]], None]) -> _RunEnd:
        log.info("running OpenFace", extra={"argv": argv})
        cancel = run.cancel
        started = time.monotonic()
        in_hand = _InHand(files, out_dir, self.limits)
        percent = _Percent(console)
        with console.open("wb") as out:
            # Own process group, so a kill reaches anything OpenFace started too.
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=out_dir, start_new_session=True, env=self.sandbox.environment(out_dir),
            )
            try:
                while True:
                    try:
                        code = proc.wait(timeout=_POLL_SECONDS)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if cancel is not None and cancel.is_set():
                        raise OpenFaceCancelled("worker is shutting down")
                    if in_hand.overran():
                        log.warning("OpenFace overran the time limit of one media; stopping it",
                                    extra={"file": files[in_hand.index].path.name,
                                           "limit_seconds": round(in_hand.limit)})
                        return _RunEnd(None, in_hand.index, in_hand.limit)
                    hand_on(files[:in_hand.index])  # those before the one in hand are finished
                    reported = percent.latest()
                    if reported is not None and reported < 100:  # 100: the video is done, and reported so
                        run.on_progress(files[in_hand.index].key, reported)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                metrics.OPENFACE_SECONDS.labels(run.executable).observe(time.monotonic() - started)
        in_hand.follow()
        log.info("OpenFace exited", extra={"exit_code": code, "seconds": round(time.monotonic() - started, 3)})
        return _RunEnd(code, in_hand.index)

@dataclass(frozen=True)
class _Run:
    """What every OpenFace process of one runner call shares."""

    media: Media
    executable: str
    options: list[str]
    out_dir: Path
    cancel: threading.Event | None
    on_result: Callable[[FileResult], None]
    on_progress: Callable[[str, int], None]


class _Percent:
    """The last percent a video executable printed to its console file, read as the file grows."""

    def __init__(self, console: Path):
        self.console = console
        self.offset = 0
        self.tail = b""  # a token may be cut between two reads

    def latest(self) -> int | None:
        try:
            with self.console.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return None
        self.offset += len(chunk)
        text, self.tail = self.tail + chunk, chunk[-8:]
        found = _PERCENT.findall(text)
        return int(found[-1]) if found and chunk else None


class _InHand:
    """Which input a running OpenFace is on, and whether it has overrun that input's limit."""

    def __init__(self, files: list[MediaFile], out_dir: Path, limits: TimeLimits):
        self.files, self.out_dir, self.limits = files, out_dir, limits
        self.index = 0
        self.since = time.monotonic()  # the first input's clock includes loading the models
        self.limit = limits.for_file(files[0])

    def follow(self) -> None:
        """Move on to the last input with a details file; unreadable inputs leave gaps."""
        latest = max((i for i in range(self.index, len(self.files))
                      if _details(self.out_dir, self.files[i]).is_file()), default=self.index)
        if latest != self.index:
            self.index, self.since = latest, time.monotonic()
            self.limit = self.limits.for_file(self.files[latest])

    def overran(self) -> bool:
        self.follow()
        return time.monotonic() - self.since > self.limit


def collect(media: Media, files: list[MediaFile], out_dir: Path,
            analysed_by: str = "cli") -> tuple[list[FileResult], list[MediaFile]]:
    """Results for the files OpenFace wrote something for, and the files it did not."""
    done: list[FileResult] = []
    missing: list[MediaFile] = []
    for item in files:
        csv = out_dir / f"{item.key}.csv"
        details = _details(out_dir, item)
        if csv.is_file():
            done.append(FileResult(item.key, Outcome.ANALYSED, csv, details if details.is_file() else None,
                                   extras=_extras(out_dir, item.key, media), analysed_by=analysed_by))
        elif media is Media.IMAGE and details.is_file():
            done.append(FileResult(item.key, Outcome.NO_FACE, None, details, "OpenFace found no face",
                                   extras=_extras(out_dir, item.key, media), analysed_by=analysed_by))
        else:
            missing.append(item)
    return done, missing


def _extras(out_dir: Path, key: str, media: Media) -> dict[str, Path]:
    """The optional outputs OpenFace wrote for one input (only those asked for are ever written)."""
    tracked = "tracked_image" if media is Media.IMAGE else "tracked_video"
    paths = {"hog": out_dir / f"{key}.hog", "aligned": out_dir / f"{key}_aligned",
             tracked: out_dir / f"{key}.{'jpg' if media is Media.IMAGE else 'avi'}"}
    return {name: path for name, path in paths.items() if path.exists()}


def _details(out_dir: Path, item: MediaFile) -> Path:
    return out_dir / f"{item.key}_of_details.txt"


def unreadable_reason(media: Media) -> str:
    return f"OpenFace could not open the {media.value}; it may be corrupt or in an unsupported format"


def _tail(console: Path) -> str:
    lines = console.read_text(errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:])
