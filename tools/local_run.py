"""The local pipeline: Azurite, web, worker and upload watcher, each a real process.

Started by ``bin/local-run``. Each media file given is uploaded to a new
container named by a UUID, as the upload pipeline does; the watcher notices
the upload and calls the service, exactly as the Azure Function would. The
result blobs are then printed. Without ``--once`` everything keeps running
until Ctrl-C, for more uploads (Azure Storage Explorer, azcopy, curl).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from azure.storage.blob import BlobServiceClient, ContentSettings

from tools import azurite
from tools.azurite import ROOT

STATE = ROOT / ".local-run"
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp",
                 ".mp4": "video/mp4", ".avi": "video/x-msvideo", ".wmv": "video/x-ms-wmv", ".mov": "video/quicktime"}


def wait_for_port(port: int, what: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"local-run: {what} exited with code {proc.returncode}; see {STATE}/{what}.log")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    sys.exit(f"local-run: {what} is not listening on port {port}; see {STATE}/{what}.log")


class Pipeline:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (STATE / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def upload(service: BlobServiceClient, path: Path, media_type: str) -> tuple[str, str]:
    container = str(uuid.uuid4())
    service.create_container(container)
    content_type = CONTENT_TYPES.get(path.suffix.lower())
    with path.open("rb") as handle:
        service.get_blob_client(container, path.name).upload_blob(
            handle, metadata={"media_type": media_type},
            content_settings=ContentSettings(content_type=content_type) if content_type else None,
        )
    return container, path.name


def wait_for_result(service: BlobServiceClient, container: str, blob: str, timeout: float) -> dict | None:
    """The media's summary blob, written last for every outcome."""
    stem = blob.rsplit(".", 1)[0]
    client = service.get_blob_client(container, f"processed/{stem}.summary.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.exists():
            return json.loads(client.download_blob().readall())
        time.sleep(0.5)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("media", nargs="*", type=Path, help="image or video files to upload and analyse")
    parser.add_argument("--wild", action="store_true", help="mark uploads as in-the-wild (media_type=iw)")
    parser.add_argument("--once", action="store_true", help="stop once the given media are analysed")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait per media (900)")
    args = parser.parse_args()
    missing = [str(p) for p in args.media if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    if args.once and not args.media:
        parser.error("--once needs at least one media file")

    STATE.mkdir(exist_ok=True)
    ports = {name: int(os.environ.get(var, default)) for name, var, default in (
        ("blob", "AZURITE_BLOB_PORT", 10000), ("queue", "AZURITE_QUEUE_PORT", 10001),
        ("table", "AZURITE_TABLE_PORT", 10002), ("web", "PORT", 8000))}
    api_key = os.environ.get("API_KEYS", "").split(",")[0] or secrets.token_urlsafe(24)
    conn = azurite.connection_string(ports["blob"], ports["queue"], ports["table"])
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": conn, "API_KEYS": api_key,
           "SERVICE_URL": f"http://127.0.0.1:{ports['web']}", "SERVICE_API_KEY": api_key,
           "HOST": "127.0.0.1", "PORT": str(ports["web"]), "PYTHON": sys.executable,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OPENFACE_BIN_DIR": str(Path(os.environ["OPENFACE_BIN_DIR"]).resolve())}
    if args.wild:
        env["DEFAULT_MEDIA_TYPE"] = "iw"

    pipeline = Pipeline(env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        emulator = pipeline.start("azurite", azurite.command(
            ports["blob"], ports["queue"], ports["table"], location=STATE / "azurite"))
        wait_for_port(ports["blob"], "azurite", emulator)
        wait_for_port(ports["queue"], "azurite", emulator)
        web = pipeline.start("web", [str(ROOT / "bin/web")])
        wait_for_port(ports["web"], "web", web)
        pipeline.start("worker", [str(ROOT / "bin/worker")])
        pipeline.start("watcher", [str(ROOT / "bin/watcher")])
        time.sleep(1)  # the watcher takes its first look before our uploads
        print(f"pipeline up: service http://127.0.0.1:{ports['web']}  X-API-Key: {api_key}")
        print(f"storage: {conn}")
        print(f"logs: {STATE}/{{azurite,web,worker,watcher}}.log")

        service = BlobServiceClient.from_connection_string(conn)
        failed = False  # only when a media got no result at all
        for path in args.media:
            container, blob = upload(service, path, "iw" if args.wild else "ip")
            print(f"uploaded {path} -> {container}/{blob}; waiting for processed/ ...", flush=True)
            result = wait_for_result(service, container, blob, args.timeout)
            if result is None:
                print(f"  no result after {args.timeout:g} s; see the logs", flush=True)
                failed = True
                continue
            print(f"  status: {result['status']}" + (f" ({result['reason']})" if result["reason"] else ""))
            for name in result["outputs"]:
                print(f"  {container}/{name}")
            if result["summary"]:
                headline = ("faces", "frames", "frames_with_face", "success_rate", "mean_confidence")
                print("  summary: " + json.dumps({k: v for k, v in result["summary"].items() if k in headline}))
        if args.once:
            return 1 if failed else 0
        print("running; upload to any container to analyse it. Ctrl-C stops.", flush=True)
        while all(proc.poll() is None for proc in pipeline.processes):
            time.sleep(1)
        print("local-run: a process stopped; see the logs", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        pipeline.stop()


if __name__ == "__main__":
    sys.exit(main())
