"""Test plumbing shared by fixtures and tests: Azurite and service processes.

A plain module (not conftest.py) so tests can import from it by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tools import azurite
from tools.azurite import ROOT
from tools.local_run import create_storage

STANDIN_BIN_DIR = ROOT / "tests" / "openface_standin"
SHARED_MEDIA = ROOT.parent / "shared" / "media"
API_KEY = "test-key-" + uuid.uuid4().hex
OTHER_KEY = "other-key-" + uuid.uuid4().hex
# The stand-in's knobs (tests/openface_standin/README.md) reach it only when passed through by name.
STANDIN_KNOBS = "OPENFACE_STANDIN_LOG,OPENFACE_STANDIN_SLEEP,OPENFACE_STANDIN_EXIT,OPENFACE_STANDIN_ENGINE_SLEEP"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    process: subprocess.Popen | None = None

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{azurite.ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return azurite.connection_string(self.blob_port, self.queue_port, self.table_port)

    def start(self) -> None:
        if not azurite.EXECUTABLE.exists():
            raise RuntimeError("Azurite is not installed: run `npm ci` (bin/test does it for you)")
        self.process = subprocess.Popen(
            azurite.command(self.blob_port, self.queue_port, self.table_port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        wait_for_port(self.blob_port)
        wait_for_port(self.queue_port)

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)


def unique_names() -> dict[str, str]:
    """Queue and records names of their own, so parallel services never share jobs."""
    tag = uuid.uuid4().hex[:10]
    return {"job_queue_name": f"jobs-{tag}", "job_records_container": f"records-{tag}"}


def process_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: this venv's Python first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENFACE_STANDIN_", "AZURE_STORAGE_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


@dataclass
class ServiceProcesses:
    """The web process (bin/web, real gunicorn) and one worker (bin/worker)."""

    azurite: Azurite
    port: int
    env_overrides: dict[str, str] = field(default_factory=dict)
    api_key: str = API_KEY
    processes: list[subprocess.Popen] = field(default_factory=list)
    log_dir: Path | None = None

    def __post_init__(self):
        names = unique_names()
        self.queue_name = names["job_queue_name"]
        defaults = dict(
            AZURE_STORAGE_CONNECTION_STRING=self.azurite.connection_string,
            OPENFACE_BIN_DIR=str(STANDIN_BIN_DIR),
            OPENFACE_ENV_PASSTHROUGH=STANDIN_KNOBS,
            API_KEYS=self.api_key,
            JOB_QUEUE_NAME=names["job_queue_name"],
            JOB_RECORDS_CONTAINER=names["job_records_container"],
            QUEUE_VISIBILITY_SECONDS="10",
            WORKER_POLL_SECONDS="0.2",
            HOST="127.0.0.1",
            PORT=str(self.port),
            WEB_CONCURRENCY="1",
        )
        self.env = process_env(**{**defaults, **self.env_overrides})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connection_string(self) -> str:
        return self.azurite.connection_string

    def start(self) -> ServiceProcesses:
        self.create_storage()
        self.start_web()
        self.start_worker()
        return self

    def create_storage(self) -> None:
        """The records container and queues, made as a deployment makes them (the service does not)."""
        create_storage(self.env)

    def start_web(self) -> subprocess.Popen:
        proc = self._spawn("web")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"bin/web exited with {proc.returncode}: {self.log('web')}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).ok:
                    return proc
            except requests.RequestException:  # not listening yet, or slow to answer under load
                time.sleep(0.2)
        raise TimeoutError(f"web did not answer: {self.log('web')}")

    def start_worker(self) -> subprocess.Popen:
        return self._spawn("worker")

    def kill_worker(self) -> subprocess.Popen:
        """SIGKILL the running worker, as an eviction or the out-of-memory killer would."""
        worker = next(p for p in reversed(self.processes) if p.name == "worker" and p.poll() is None)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        return worker

    def _spawn(self, name: str) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [str(ROOT / "bin" / name)], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        proc.name = name
        self.processes.append(proc)
        return proc

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.processes:
            stop_process(proc)
        self.processes.clear()

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    def analyse(self, media: str, media_type: str, container: str, **options: str) -> requests.Response:
        """``options``: the query parameters faces and outputs."""
        return requests.post(
            f"{self.url}/analyse/{media}/{media_type}/{container}",
            params=options or None,
            headers=self.headers(),
            timeout=30,
        )

    def job(self, job_id: str) -> dict:
        response = requests.get(f"{self.url}/jobs/{job_id}", headers=self.headers(), timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_for_job(self, job_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in ("succeeded", "failed"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}; worker log: {self.log('worker')}")
            time.sleep(0.2)
