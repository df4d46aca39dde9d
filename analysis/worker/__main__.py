"""The worker process: ``python -m analysis.worker`` (bin/worker).

Checks its settings, OpenFace and storage before it takes any job, and says
in one line why it cannot start; then runs the loop (analysis/worker/loop.py)
on resident engines or OpenFace's executables until SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from azure.core.exceptions import AzureError, ResourceNotFoundError

from analysis import metrics
from analysis.backends import Backends
from analysis.config import ConfigError, Settings, load_settings, missing_executables
from analysis.logs import configure_logging
from analysis.openface.engine import EngineError, EnginePool, engine_available
from analysis.openface.runner import OpenFaceRunner
from analysis.openface.sandbox import Sandbox, SandboxError
from analysis.worker import workspace
from analysis.worker.loop import Worker

log = logging.getLogger("analysis.worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run OpenFace analysis jobs from the queue.")
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help="write this file once the queues are ready and work can be taken",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    missing = missing_executables(settings.openface_bin_dir)
    if missing:
        print(
            f"worker: OPENFACE_BIN_DIR={settings.openface_bin_dir} lacks executable {', '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    if settings.openface_engine == "resident" and not engine_available(settings.openface_bin_dir):
        print(
            f"worker: OPENFACE_ENGINE=resident, but OPENFACE_BIN_DIR={settings.openface_bin_dir} has no "
            "executable openface-engine",
            file=sys.stderr,
        )
        return 2
    try:
        sandbox = Sandbox.create(
            settings.openface_sandbox, settings.openface_env_passthrough, settings.openface_memory_limit_mb
        )
    except SandboxError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    workspace.sweep()  # job folders of workers that died before us
    backends = Backends(settings)
    try:
        backends.ensure() if settings.create_storage else backends.ping()
    except ResourceNotFoundError:
        print(
            "worker: the job records container or queue is missing; the deployment creates them "
            "(CREATE_STORAGE=true creates them at start, for local runs)",
            file=sys.stderr,
        )
        return 3
    except AzureError as exc:
        # The orchestrator restarts us; say why in one line rather than a traceback.
        print(f"worker: storage unreachable ({type(exc).__name__}): {str(exc).splitlines()[0]}", file=sys.stderr)
        return 3
    with contextlib.ExitStack() as stack:
        try:
            runner = choose_runner(settings, sandbox, stack)
        except EngineError as exc:
            print(f"worker: {exc}", file=sys.stderr)
            return 2
        if settings.metrics_port:
            metrics.serve_worker_metrics(settings.metrics_port, backends.queue)
        worker = Worker(settings, backends, runner)
        signal.signal(signal.SIGTERM, worker.request_stop)
        signal.signal(signal.SIGINT, worker.request_stop)
        if args.ready_file:
            args.ready_file.write_text(f"{os.getpid()}\n")
        worker.run(burst=args.burst)
    return 0


def choose_runner(settings: Settings, sandbox: Sandbox, stack: contextlib.ExitStack) -> OpenFaceRunner | EnginePool:
    """Warm engines when openface-engine is there (OPENFACE_ENGINE=auto) or asked for (resident), else the
    executables. Under ``auto`` an engine that cannot start leaves the executables to do the work."""
    cli = OpenFaceRunner.from_settings(settings, sandbox)
    if settings.openface_engine == "cli" or (
        settings.openface_engine == "auto" and not engine_available(settings.openface_bin_dir)
    ):
        log.info("OpenFace runs as its executables", extra={"openface_engine": settings.openface_engine})
        return cli
    folder = stack.enter_context(workspace.workspace(prefix=workspace.ENGINES_PREFIX))
    sandbox.open_to(folder)
    pool = EnginePool(
        settings.openface_bin_dir,
        cli.limits,
        settings.openface_processes,
        sandbox,
        folder,
        settings.engine_max_requests,
        settings.engine_max_rss_mb,
    )
    try:
        pool.start()
    except EngineError:
        pool.stop()
        if settings.openface_engine == "resident":
            raise
        log.exception("the resident engine could not start; OpenFace runs as its executables")
        return cli
    stack.callback(pool.stop)
    log.info(
        "OpenFace runs as resident engines",
        extra={"engines": settings.openface_processes, **{k: pool.ready.get(k) for k in ("load_ms", "engine")}},
    )
    return pool


if __name__ == "__main__":
    sys.exit(main())
