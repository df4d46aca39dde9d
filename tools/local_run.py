"""The local pipeline: Azurite, web, worker and upload watcher, each a real process.

Started by ``bin/local-run``. It refuses to start beside another copy or on a
taken port, starts every process and waits until each says it is ready.
Each media file given is then uploaded to a new container named by a UUID,
as the upload pipeline does; the watcher notices the upload and calls the
service, exactly as the Azure Function would. local-run follows the job that
starts, and when it is done copies the container's ``processed/`` into
``results/<container>/``. Without ``--once`` everything keeps running until
Ctrl-C, and the results of later uploads (Azure Storage Explorer, azcopy,
curl) land in ``results/`` too.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient
from rich.console import Console

from analysis.client import cli
from analysis.client.service import ClientError, ServiceClient, download_results
from analysis.config import Settings, load_settings, missing_executables, retry_delay_seconds
from analysis.job import JobStore
from analysis.keys import parse_api_keys
from analysis.names import JOB_MANIFEST_PREFIX, job_manifest_name
from analysis.openface.results import MediaFile, TimeLimits
from analysis.queue import AzureJobQueue
from tools import azurite
from tools.azurite import ROOT

# Logs, Azurite's data, the lock and the key; LOCAL_RUN_DIR moves it (the tests do).
STATE = Path(os.environ.get("LOCAL_RUN_DIR") or ROOT / ".local-run").resolve()
READY_SECONDS = 60  # for one process to say it is ready
FIRE_SECONDS = 30  # for the watcher to start a job after an upload
POLL_SECONDS = 0.5
CONSOLE = Console(highlight=False, soft_wrap=True)


class Stop(Exception):
    """local-run cannot go on; the message says why, in one line."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# -- the processes ---------------------------------------------------------


class Process:
    """One process of the pipeline and its log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def last_line(self) -> str:
        """The log line that best says what went wrong: the last exception, else error, else line."""
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()][-50:]
        if not lines:
            return "(its log is empty)"
        entries = [_json_or_none(line) for line in lines]
        for entry in reversed(entries):
            if entry and entry.get("exc_info"):
                return f"{entry.get('message', '')}: {entry['exc_info'].strip().splitlines()[-1]}"[:400]
        for entry in reversed(entries):
            if entry and entry.get("level") in ("ERROR", "CRITICAL"):
                return str(entry.get("message", ""))[:400]
        last = entries[-1]
        return (f"{last.get('level', '')} {last.get('message', '')}".strip() if last else lines[-1])[:400]


def _json_or_none(line: str) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


class Pipeline:
    def __init__(self, env: dict[str, str], state: Path = STATE):
        self.env = env
        self.state = state  # logs and ready files
        self.processes: list[Process] = []

    def start(self, name: str, argv: list[str]) -> Process:
        process = Process(name, argv, self.env, self.state)
        self.processes.append(process)
        return process

    def check(self) -> None:
        """Stop at once, saying why, if any process has exited."""
        for process in self.processes:
            code = process.proc.poll()
            if code is not None:
                raise Stop(f"{process.name} stopped (exit code {code}): {process.last_line()} [log: {process.log}]")

    def wait_until_ready(self, process: Process, is_ready, what: str) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while not is_ready():
            self.check()
            if time.monotonic() > deadline:
                raise Stop(
                    f"{process.name} did not {what} within {READY_SECONDS} s: {process.last_line()} "
                    f"[log: {process.log}]"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop in reverse order, so storage is the last to go."""
        for process in reversed(self.processes):
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGTERM)
            try:
                process.proc.wait(30)
            except subprocess.TimeoutExpired:
                process.proc.kill()


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def web_is_ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def start_pipeline(
    pipeline: Pipeline, ports: dict[str, int], url: str, data: Path | None, watcher: bool = True, emulator: bool = True
) -> None:
    """Azurite (its data in ``data``, or in memory), web, worker and the watcher, each ready in turn.

    Without ``emulator``, the processes use the storage their environment names.
    """
    if emulator:
        storage = pipeline.start("azurite", azurite.command(ports["blob"], ports["queue"], ports["table"], data))
        pipeline.wait_until_ready(
            storage, lambda: port_is_open(ports["blob"]) and port_is_open(ports["queue"]), "open its ports"
        )
    create_storage(pipeline.env)
    web = pipeline.start("web", [str(ROOT / "bin/web")])
    pipeline.wait_until_ready(web, lambda: web_is_ready(url), "answer 200 on /readyz")
    for name in ("worker", "watcher") if watcher else ("worker",):
        ready_file = pipeline.state / f"{name}.ready"
        ready_file.unlink(missing_ok=True)
        process = pipeline.start(name, [str(ROOT / "bin" / name), "--ready-file", str(ready_file)])
        pipeline.wait_until_ready(process, ready_file.exists, "say it is ready")


def create_storage(env: dict[str, str]) -> None:
    """The records container and the queues, as a deployment creates them: the service does not.

    Only the names are read here; the processes check every setting and name a bad one.
    """
    defaults = Settings.model_fields
    queue = env.get("JOB_QUEUE_NAME") or defaults["job_queue_name"].default
    records = env.get("JOB_RECORDS_CONTAINER") or defaults["job_records_container"].default
    conn = env["AZURE_STORAGE_CONNECTION_STRING"]
    JobStore(BlobServiceClient.from_connection_string(conn), records).ensure()
    AzureJobQueue(QueueServiceClient.from_connection_string(conn), queue, f"{queue}-poison").ensure()


# -- refusing to start -----------------------------------------------------


def take_lock():
    """Hold ``.local-run/lock`` for this process's life; a second local-run is refused."""
    handle = (STATE / "lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        raise Stop(
            f"another bin/local-run is running (pid {owner}); use it, or stop it with Ctrl-C first", code=2
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_ports(ports: dict[str, int]) -> None:
    names = {"blob": "AZURITE_BLOB_PORT", "queue": "AZURITE_QUEUE_PORT", "table": "AZURITE_TABLE_PORT", "web": "PORT"}
    for what, port in ports.items():
        with socket.socket() as sock:
            # As servers do, so that connections of an earlier run in TIME_WAIT do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise Stop(
                    f"port {port} ({what}) is in use; stop what uses it, or set {names[what]} to another port", code=2
                ) from None


def api_key() -> tuple[str, str]:
    """The key the service accepts: the first of API_KEYS, else one kept in .local-run/api-key."""
    try:
        keys = parse_api_keys(os.environ.get("API_KEYS", ""))
    except ValueError as exc:
        raise Stop(f"API_KEYS: {exc}", code=2) from None
    if keys:
        return keys[0], "from API_KEYS"
    stored = STATE / "api-key"
    try:
        return parse_api_keys(stored.read_text())[0], f"kept in {stored}"
    except (OSError, ValueError, IndexError):  # none yet, or one made before keys had to be long
        keep(stored, secrets.token_hex(24))
        return stored.read_text().strip(), f"kept in {stored}"


def keep(path: Path, secret: str) -> None:
    """A file only this user may read, for the CLI (analysis/client/cli.py) to find."""
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")


# -- following uploads -----------------------------------------------------


class Results:
    """Copies finished containers' results to ``results/<container>/`` and says what came of each media."""

    def __init__(self, blobs: BlobServiceClient, root: Path):
        self.blobs = blobs
        self.root = root
        self.collected: set[tuple[str, str]] = set()  # (container, manifest ETag)

    def collect(self, container: str, job: dict) -> bool:
        """True when the job and all its media came through."""
        dest = self.root / container
        download_results(self.blobs, container, dest)
        manifest = self.blobs.get_blob_client(container, job_manifest_name(job["job_id"]))
        try:
            self.collected.add((container, manifest.get_blob_properties().etag))
        except Exception:  # no manifest (container deleted): nothing more to collect
            pass
        ok = cli.report(job, CONSOLE)
        print(f"results: {dest}/", flush=True)
        return ok

    def collect_new(self, since: datetime) -> None:
        """Every job that finished since ``since`` and is not collected yet (uploads made by others)."""
        for container in self.blobs.list_containers():
            client = self.blobs.get_container_client(container.name)
            for blob in client.list_blobs(name_starts_with=JOB_MANIFEST_PREFIX):
                # Manifests only (an image job's table sits beside its manifest).
                if (
                    not blob.name.endswith(".json")
                    or blob.last_modified < since
                    or (container.name, blob.etag) in self.collected
                ):
                    continue
                job = json.loads(client.download_blob(blob.name).readall())
                print(f"{container.name}: job finished", flush=True)
                self.collect(container.name, job)


def wait_for_job(client: ServiceClient, pipeline: Pipeline, container: str) -> dict:
    """The job the watcher started for the container."""
    deadline = time.monotonic() + FIRE_SECONDS
    while True:
        pipeline.check()
        jobs = client.jobs(container)
        if jobs:
            return jobs[0]
        if time.monotonic() > deadline:
            watcher = next(p for p in pipeline.processes if p.name == "watcher")
            raise Stop(
                f"no job started for {container} within {FIRE_SECONDS} s of the upload; watcher: {watcher.last_line()}"
            )
        time.sleep(POLL_SECONDS)


def job_limit(path: Path) -> float:
    """How long a job on this file may take: OpenFace's limit for it on every attempt, plus slack."""
    settings = load_settings()
    limits = TimeLimits(
        settings.openface_timeout_seconds,
        settings.openface_timeout_seconds_per_mb,
        settings.openface_timeout_max_seconds,
    )
    retry_delays = sum(retry_delay_seconds(attempt) for attempt in range(1, settings.max_attempts))
    return settings.max_attempts * (limits.for_file(MediaFile(path.name, path)) + 60) + retry_delays


# -- main ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bin/local-run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("media", nargs="*", type=Path, help="image or video files to upload and analyse")
    parser.add_argument("--wild", action="store_true", help="mark uploads as in-the-wild (media_type=iw)")
    parser.add_argument("--once", action="store_true", help="stop once the given media are analysed")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="where each container's processed/ is copied (default: ./results)",
    )
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.media if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    if args.once and not args.media:
        parser.error("--once needs at least one media file")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return run(args)
    except Stop as stop:
        print(f"local-run: {stop}", file=sys.stderr)
        return stop.code
    except ClientError as error:
        print(f"local-run: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def run(args: argparse.Namespace) -> int:
    bin_dir = Path(os.environ["OPENFACE_BIN_DIR"]).resolve()
    missing = missing_executables(bin_dir)
    if missing:
        raise Stop(f"OPENFACE_BIN_DIR={bin_dir} has no executable {', '.join(missing)}", code=2)
    STATE.mkdir(parents=True, exist_ok=True)
    lock = take_lock()  # noqa: F841 - held until this process ends
    ports = {
        name: int(os.environ.get(var, default))
        for name, var, default in (
            ("blob", "AZURITE_BLOB_PORT", 10000),
            ("queue", "AZURITE_QUEUE_PORT", 10001),
            ("table", "AZURITE_TABLE_PORT", 10002),
            ("web", "PORT", 8000),
        )
    }
    check_ports(ports)
    key, key_source = api_key()
    conn = azurite.connection_string(ports["blob"], ports["queue"], ports["table"])
    keep(STATE / "connection-string", conn)
    url = f"http://127.0.0.1:{ports['web']}"
    env = {
        **os.environ,
        "AZURE_STORAGE_CONNECTION_STRING": conn,
        "API_KEYS": key,
        "SERVICE_URL": url,
        "SERVICE_API_KEY": key,
        "HOST": "127.0.0.1",
        "PORT": str(ports["web"]),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OPENFACE_BIN_DIR": str(bin_dir),
        # Quicker than the deployed default: one person waits on each upload.
        "WATCH_INTERVAL_SECONDS": os.environ.get("WATCH_INTERVAL_SECONDS", "1"),
    }
    if args.wild:
        env["DEFAULT_MEDIA_TYPE"] = "iw"
    os.environ.update(env)  # so this process reads the same settings as the ones it starts

    pipeline = Pipeline(env)
    try:
        start_pipeline(pipeline, ports, url, data=STATE / "azurite")
        print(f"pipeline ready: service {url}, storage {conn}")
        print(f"API key ({key_source}): {key}")
        print(f"  curl -H 'X-API-Key: {key}' '{url}/jobs?container=<container>'")
        print(f"  curl -X POST -H 'X-API-Key: {key}' {url}/analyse/image/ip/<container>")
        print(
            f"logs: {STATE}/{{azurite,web,worker,watcher}}.log; results: {args.results.resolve()}/<container>/",
            flush=True,
        )
        return serve(args, pipeline, ServiceClient(url, key), BlobServiceClient.from_connection_string(conn))
    finally:
        pipeline.stop()


def serve(args: argparse.Namespace, pipeline: Pipeline, client: ServiceClient, blobs: BlobServiceClient) -> int:
    started = datetime.now(UTC) - timedelta(seconds=2)  # storage times have whole seconds
    results = Results(blobs, args.results.resolve())
    failed = False
    for path in args.media:
        container = str(uuid.uuid4())
        cli.upload_files(blobs, [path], container, args.wild)
        print(f"uploaded {path} -> {container}/{path.name}; waiting for the watcher to start its job", flush=True)
        job = wait_for_job(client, pipeline, container)
        print(f"job {job['job_id']} ({job['media']}, {job['media_type']})", flush=True)
        job = cli.follow(client, job["job_id"], job_limit(path), CONSOLE, check=pipeline.check)
        failed |= not results.collect(container, job)
    if args.once:
        return 1 if failed else 0
    print("running; upload to any container to analyse it. Ctrl-C stops.", flush=True)
    while True:
        pipeline.check()
        results.collect_new(started)
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
