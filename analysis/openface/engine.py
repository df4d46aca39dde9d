"""The resident OpenFace engine: ``openface-engine`` processes that keep OpenFace's models loaded.

An engine (engine/src/main.cpp) loads the models once, says so in a ready
line, then answers one JSON request per line: one media, analysed exactly as
OpenFace's own executable would for that file alone. The worker starts
``OPENFACE_PROCESSES`` of them (``EnginePool``) and keeps them warm; each
media goes to the next free engine, so no media waits for a model load and
none waits for company.

An engine is one media's risk at a time:
- a media over its time limit is marked ``failed`` and its engine killed;
- an engine that dies takes only the media in hand (``crashed``: its job is
  retried alone) and is replaced;
- an engine is replaced after ``ENGINE_MAX_REQUESTS`` requests, or once its
  memory passes ``ENGINE_MAX_RSS_MB``.
Engines run like OpenFace's executables: through the sandbox (its
environment, its user), dying with the worker.
"""

from __future__ import annotations

import json
import logging
import os
import queue
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
from analysis.config import IMAGE_EXECUTABLE, MULTI_FACE_EXECUTABLE, VIDEO_EXECUTABLE, executable_for
from analysis.openface.results import (
    FileResult,
    MediaFile,
    OpenFaceCancelled,
    Outcome,
    TimeLimits,
    collect,
    out_of_memory_reason,
    over_time_reason,
    ran_out_of_memory,
    unreadable_reason,
)
from analysis.openface.sandbox import Sandbox
from analysis.openface.schedule import Slots
from media_rules import Media

log = logging.getLogger(__name__)

ENGINE_EXECUTABLE = "openface-engine"
MODES = {IMAGE_EXECUTABLE: "image", VIDEO_EXECUTABLE: "video", MULTI_FACE_EXECUTABLE: "multi"}
# Loading every model takes about a second; a slow disk or a busy machine can take longer.
READY_SECONDS = 120.0
# How often a request in hand is looked at: the worker stopping, the time limit.
_LOOK_SECONDS = 0.1
_TAIL_LINES = 15


def engine_available(bin_dir: Path) -> bool:
    return os.access(bin_dir / ENGINE_EXECUTABLE, os.X_OK)


class EngineError(RuntimeError):
    """The engine could not start, or died; the message says why."""


@dataclass
class Reply:
    """An engine's reply to one request, as its JSON line has it."""

    status: str
    outputs: list[str]
    faces: int = 0
    frames: int = 0
    ms: float = 0.0
    message: str = ""

    @classmethod
    def from_message(cls, message: dict) -> Reply:
        return cls(
            message.get("status", "error"),
            list(message.get("outputs") or []),
            int(message.get("faces") or 0),
            int(message.get("frames") or 0),
            float(message.get("ms") or 0),
            str(message.get("message") or ""),
        )


class Engine:
    """One ``openface-engine`` process, and the one request it may have in hand."""

    def __init__(
        self,
        executable: Path,
        models_dir: Path,
        sandbox: Sandbox,
        workdir: Path,
        number: int,
        launcher: ThreadPoolExecutor,
    ):
        self.executable, self.models_dir, self.sandbox = executable, models_dir, sandbox
        # Processes are started from one long-lived thread: a parent-death signal fires when the
        # thread that started the process ends, not the process.
        self.launcher = launcher
        self.workdir = workdir  # its working folder and console
        self.number = number
        self.requests = 0
        self.ready: dict = {}
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def console(self) -> Path:
        return self.workdir / f"engine-{self.number}.log"

    def start(self) -> dict:
        """Start the process and wait for its ready line; EngineError if it never says it is ready."""
        self.requests = 0
        self._lines = queue.Queue()
        argv = self.sandbox.command([str(self.executable), "--models", str(self.models_dir)])
        with self.console.open("wb") as console:
            self._proc = self.launcher.submit(
                subprocess.Popen,
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=console,
                cwd=self.workdir,
                env=self.sandbox.environment(self.workdir),
                start_new_session=True,
                text=True,
                bufsize=1,
            ).result()
        reader = threading.Thread(
            target=self._read, args=(self._proc, self._lines), daemon=True, name=f"engine-{self.number}"
        )
        reader.start()
        line = self._next_line(READY_SECONDS)
        ready = _json(line) if line else None
        if not ready or not ready.get("ready"):
            self.kill()
            why = (ready or {}).get("message") or self.tail() or "no ready line"
            raise EngineError(f"openface-engine did not start: {why}")
        self.ready = ready
        log.info(
            "engine ready",
            extra={"engine": self.number, "load_ms": round(ready.get("load_ms", 0)), "pid": self._proc.pid},
        )
        return ready

    def analyse(
        self, request: dict, limit: float, on_progress: Callable[[int], None], cancel: threading.Event | None = None
    ) -> Reply:
        """One request. TimeoutError if it overran ``limit``, OpenFaceCancelled if the worker stops
        meanwhile (the engine is killed in both cases); EngineError if it died."""
        assert self._proc is not None and self._proc.stdin is not None
        self.requests += 1
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise EngineError(self._death()) from None
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            line = self._next_line(min(max(0.0, left), _LOOK_SECONDS))
            if line is None:
                if not self.alive() and self._lines.empty():
                    raise EngineError(self._death())
                if cancel is not None and cancel.is_set():
                    self.kill()
                    raise OpenFaceCancelled("worker is shutting down")
                if left <= 0:
                    self.kill()
                    raise TimeoutError(limit)
                continue
            message = _json(line)
            if message is None or message.get("id") != request["id"]:
                log.warning(
                    "engine wrote a line that is no reply to the request in hand",
                    extra={"engine": self.number, "line": line[:200]},
                )
                continue
            if "progress" in message:
                on_progress(int(message["progress"]))
                continue
            return Reply.from_message(message)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def rss_mb(self) -> float | None:
        """The engine's resident memory; under the sandbox helper, that of the helper's child."""
        if not self.alive():
            return None
        return _rss_mb(_innermost(self._proc.pid))

    def stop(self, timeout: float = 10) -> None:
        """End of input: the engine exits by itself; killed if it does not."""
        if self._proc is None:
            return
        try:
            if self._proc.stdin:
                self._proc.stdin.close()
            self._proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)  # the sandbox helper's child dies with it
            except ProcessLookupError:
                pass
        self._proc.wait()

    def tail(self) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-_TAIL_LINES:])
        except OSError:
            return ""

    def _death(self) -> str:
        code = self._proc.wait() if self._proc else None
        return f"openface-engine exited with code {code}: {self.tail()}"

    def _next_line(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None

    @staticmethod
    def _read(proc: subprocess.Popen, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # end of output: the engine is gone


class EnginePool:
    """``OPENFACE_PROCESSES`` warm engines, shared by every batch of the worker.

    ``run`` has the CLI runner's signature (analysis/openface/runner.py), so a batch
    runs its media through either; here each media goes to the next free
    engine, side by side, and its result is handed on as soon as it is in.
    """

    # The models are loaded already: no batch need wait for company.
    pays_per_run = False

    def __init__(
        self,
        bin_dir: Path,
        limits: TimeLimits,
        processes: int,
        sandbox: Sandbox,
        workdir: Path,
        max_requests: int = 1000,
        max_rss_mb: float = 1500,
        executable: Path | None = None,
    ):
        self.bin_dir, self.limits, self.sandbox = bin_dir, limits, sandbox
        self.executable = executable or bin_dir / ENGINE_EXECUTABLE
        self.max_requests, self.max_rss_mb = max_requests, max_rss_mb
        self.slots = Slots(processes)
        self._idle: list[Engine] = []
        self._lock = threading.Lock()
        self._numbers = iter(range(1, 1 << 30))
        self.workdir = workdir
        self.ready: dict = {}
        self._launcher = ThreadPoolExecutor(1, thread_name_prefix="engine-launcher")

    def start(self) -> None:
        """Start every engine, side by side; EngineError if one cannot."""
        engines = [self._new_engine() for _ in range(self.slots.count)]
        self._idle = engines  # stop() ends them, however far they got
        with ThreadPoolExecutor(len(engines)) as pool:
            for future in [pool.submit(engine.start) for engine in engines]:
                future.result()
        self.ready = engines[0].ready

    def stop(self) -> None:
        with self._lock:
            engines, self._idle = self._idle, []
        for engine in engines:
            engine.stop()
        self._launcher.shutdown()

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
        """Analyse ``files``, each on the next free engine; one result per file, in order."""
        if started is not None:
            started.set()  # nothing here waits for a model load
        on_result = on_result or (lambda result: None)
        on_progress = on_progress or (lambda key, percent: None)
        mode = MODES[executable or executable_for(media)]

        def one(item: MediaFile) -> FileResult:
            result = self._analyse(media, mode, item, out_dir, flags, cancel, on_progress)
            on_result(result)
            return result

        with ThreadPoolExecutor(max(1, min(len(files), self.slots.count)), thread_name_prefix="engine") as pool:
            futures = [pool.submit(copy_context().run, one, item) for item in files]
            return [future.result() for future in futures]

    def _analyse(
        self,
        media: Media,
        mode: str,
        item: MediaFile,
        out_dir: Path,
        flags: list[str],
        cancel: threading.Event | None,
        on_progress: Callable[[str, int], None],
    ) -> FileResult:
        self.slots.take(1, cancel)  # OpenFaceCancelled when the worker stops meanwhile
        engine = self._checkout()
        limit = self.limits.for_file(item)
        started = time.monotonic()
        request = {"id": item.key, "mode": mode, "input": str(item.path), "out_dir": str(out_dir), "flags": flags}
        try:
            answer: Reply | Exception = engine.analyse(
                request, limit, lambda percent: on_progress(item.key, percent), cancel
            )
        except OpenFaceCancelled:
            self.slots.give(1)  # the worker stops: its engines are not replaced
            raise
        except (TimeoutError, EngineError) as exc:
            answer = exc
        finally:
            metrics.ENGINE_REQUEST_SECONDS.labels(mode).observe(time.monotonic() - started)
        result, why_replace = judge(media, item, out_dir, limit, answer)
        if why_replace:
            log.warning(why_replace, extra={"file": item.path.name, "engine": engine.number})
            self._replace(engine)
        else:
            self._checkin(engine)
        return result

    def _checkout(self) -> Engine:
        with self._lock:
            return self._idle.pop()

    def _checkin(self, engine: Engine) -> None:
        rss = engine.rss_mb()
        if engine.requests >= self.max_requests or (rss is not None and rss > self.max_rss_mb):
            log.info(
                "engine replaced to bound its memory",
                extra={"engine": engine.number, "requests": engine.requests, "rss_mb": rss},
            )
            engine.stop()
            self._replace(engine)
            return
        with self._lock:
            self._idle.append(engine)
        self.slots.give(1)

    def _replace(self, engine: Engine) -> None:
        """A fresh engine takes the place of one that is gone; the slot is free once it is ready."""
        engine.kill()
        fresh = self._new_engine()
        while True:
            try:
                fresh.start()
                break
            except EngineError:
                log.exception("could not start a replacement engine; trying again")
                time.sleep(1)
        with self._lock:
            self._idle.append(fresh)
        self.slots.give(1)

    def _new_engine(self) -> Engine:
        metrics.ENGINE_STARTS.inc()
        return Engine(self.executable, self.bin_dir, self.sandbox, self.workdir, next(self._numbers), self._launcher)


def judge(
    media: Media, item: MediaFile, out_dir: Path, limit: float, answer: Reply | Exception
) -> tuple[FileResult, str | None]:
    """What an engine's answer to one media means: the media's result, and why the engine must be
    replaced (None: it may take the next media). ``answer``: its reply, or the TimeoutError or
    EngineError its request ended with."""
    if isinstance(answer, TimeoutError):
        reason = over_time_reason(limit)
        return _failed(item, reason), f"OpenFace overran the time limit of one media ({limit:.0f} s); engine replaced"
    if isinstance(answer, EngineError):
        if ran_out_of_memory(str(answer)):  # over its memory cap on this media: that media fails, alone
            return _failed(item, out_of_memory_reason()), "engine died out of memory on one media; replaced"
        crashed = FileResult(item.key, Outcome.CRASHED, reason=str(answer), analysed_by="engine")
        return crashed, "engine died with a media in hand; replaced"
    if answer.status == "error" and ran_out_of_memory(answer.message):
        # Caught inside the engine, but what it holds may be half-made: a fresh one takes its place.
        return _failed(item, out_of_memory_reason()), "engine ran out of memory on one media; replaced"
    if answer.status == "unreadable":
        return FileResult(item.key, Outcome.UNREADABLE, reason=unreadable_reason(media), analysed_by="engine"), None
    if answer.status != "ok":
        return _failed(item, f"OpenFace failed on it: {answer.message}"), None
    done, _ = collect(media, [item], out_dir, analysed_by="engine")
    if not done:  # as FeatureExtraction on a video it opened but could not read
        return FileResult(item.key, Outcome.UNREADABLE, reason=unreadable_reason(media), analysed_by="engine"), None
    return done[0], None


def _failed(item: MediaFile, reason: str) -> FileResult:
    return FileResult(item.key, Outcome.FAILED, reason=reason, analysed_by="engine")


def _json(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _innermost(pid: int) -> int:
    """The sandbox helper runs the engine as its child: follow the line of only children."""
    while True:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return pid
        if len(children) != 1:
            return pid
        pid = int(children[0])
