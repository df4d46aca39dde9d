"""Running OpenFace's own executables over a group of local files.

All files of a run go through one process, so the models load once. After
each process the runner reads what every input left and classifies it
(analysis/openface/results.py): the first input without outputs is
unreadable, and the process runs again over the others that have none.

OpenFace works through its inputs in order and writes an input's
``_of_details.txt`` when it starts on it, so the runner knows which media is
in hand. Each media has its own time limit, scaled to its size: one that
overruns it is stopped and marked failed, and the run goes on with the rest.
When OpenFace crashes, what it finished before the media in hand stands; that
media and the ones after it are reported ``crashed``, for the job to retry.
Since an input is finished once OpenFace has started on the next one, each
result is handed on (``on_result``) as soon as it is final, while OpenFace
goes on with the rest.

Media are shared among up to ``processes`` OpenFace processes at once
(analysis/openface/schedule.py).
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
from dataclasses import dataclass
from pathlib import Path

from analysis import metrics
from analysis.config import Settings, executable_for
from analysis.openface.results import (
    FileResult,
    MediaFile,
    OpenFaceCancelled,
    RunEnd,
    TimeLimits,
    classify,
    collect,
    details_path,
)
from analysis.openface.sandbox import Sandbox
from analysis.openface.schedule import Slots, processes_worth, split
from media_rules import Media

log = logging.getLogger(__name__)

_LOG_TAIL_LINES = 15
# The video executables print "0% 10% ... 100%" as they go through a video.
_PERCENT = re.compile(rb"(\d{1,3})% ")
# How often a run is looked at: finished inputs are handed on, progress and time limits checked.
_POLL_SECONDS = 0.1


class OpenFaceRunner:
    """OpenFace's executables, one process per share of a group of media, within the free slots."""

    # Every run pays a model load, so a batch waits a moment for company (analysis/worker/handler.py).
    pays_per_run = True

    def __init__(self, bin_dir: Path, limits: TimeLimits, processes: int = 1, sandbox: Sandbox | None = None):
        self.bin_dir = bin_dir
        self.limits = limits
        self.slots = Slots(processes)
        self.sandbox = sandbox or Sandbox()

    @classmethod
    def from_settings(cls, settings: Settings, sandbox: Sandbox | None = None) -> OpenFaceRunner:
        """Raises SandboxError when OPENFACE_SANDBOX or OPENFACE_ENV_PASSTHROUGH cannot work."""
        limits = TimeLimits(
            settings.openface_timeout_seconds,
            settings.openface_timeout_seconds_per_mb,
            settings.openface_timeout_max_seconds,
        )
        sandbox = sandbox or Sandbox.create(
            settings.openface_sandbox, settings.openface_env_passthrough, settings.openface_memory_limit_mb
        )
        return cls(settings.openface_bin_dir, limits, settings.openface_processes, sandbox)

    def run(
        self,
        media: Media,
        files: list[MediaFile],
        out_dir: Path,
        flags: list[str],
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
        run = _Run(
            media,
            executable or executable_for(media),
            flags,
            out_dir,
            cancel,
            on_result,
            on_progress or (lambda key, percent: None),
        )
        shares = split(media, files, self.slots.take(processes_worth(media, files, self.slots.count), cancel))
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

    def _run_share(self, run: _Run, files: list[MediaFile]) -> list[FileResult]:
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
            argv = self.sandbox.command([*argv, *run.flags, "-out_dir", str(out_dir)])
            console = out_dir / f"console-{remaining[0].key}-{run_number}.log"
            end = self._execute(argv, remaining, out_dir, console, run, hand_on)
            done, missing = collect(media, remaining, out_dir)
            final, remaining = classify(media, remaining, end, done, missing)
            results += final
        for result in results:
            if result.key not in handed_on:
                handed_on.add(result.key)
                on_result(result)
        return results

    def _execute(
        self,
        argv: list[str],
        files: list[MediaFile],
        out_dir: Path,
        console: Path,
        run: _Run,
        hand_on: Callable[[list[MediaFile]], None],
    ) -> RunEnd:
        log.info("running OpenFace", extra={"argv": argv})
        cancel = run.cancel
        started = time.monotonic()
        in_hand = _InHand(files, out_dir, self.limits)
        percent = _Percent(console)
        with console.open("wb") as out:
            # Own process group, so a kill reaches anything OpenFace started too.
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=out_dir,
                start_new_session=True,
                env=self.sandbox.environment(out_dir),
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
                        log.warning(
                            "OpenFace overran the time limit of one media; stopping it",
                            extra={"file": files[in_hand.index].path.name, "limit_seconds": round(in_hand.limit)},
                        )
                        return RunEnd(None, in_hand.index, in_hand.limit)
                    hand_on(files[: in_hand.index])  # those before the one in hand are finished
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
        return RunEnd(code, in_hand.index, tail=_tail(console) if code != 0 else "")


@dataclass(frozen=True)
class _Run:
    """What every OpenFace process of one runner call shares."""

    media: Media
    executable: str
    flags: list[str]
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
        latest = max(
            (i for i in range(self.index, len(self.files)) if details_path(self.out_dir, self.files[i]).is_file()),
            default=self.index,
        )
        if latest != self.index:
            self.index, self.since = latest, time.monotonic()
            self.limit = self.limits.for_file(self.files[latest])

    def overran(self) -> bool:
        self.follow()
        return time.monotonic() - self.since > self.limit


def _tail(console: Path) -> str:
    lines = console.read_text(errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:])
