"""Overhead of the service against raw OpenFace, measured in one run.

For the same media and the same OpenFace options it times:
- raw, batched: one OpenFace process over all files (what the worker runs);
- raw, one by one: a process per file (what the earlier per-file design cost);
- service: upload to a new container, POST, poll until the job is done and
  its results are in storage, through real Azurite, gunicorn and a worker.

    OPENFACE_BIN_DIR=/opt/openface/bin .venv/bin/python bench/run.py --images 30
    OPENFACE_BIN_DIR=/opt/openface/bin .venv/bin/python bench/run.py face1.jpg face2.jpg --repeat 5

With no files, it makes N test pictures (the stand-in finds a face in them;
real OpenFace may not, which still exercises the same path).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
from azure.storage.blob import BlobServiceClient

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from analysis.job import OUTPUT_FLAGS  # noqa: E402
from tools import azurite  # noqa: E402
from tools.local_run import STATE, Pipeline, wait_for_port  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def raw_run(exe: Path, files: list[Path], options: list[str]) -> None:
    with tempfile.TemporaryDirectory() as out:
        argv = [str(exe)] + [a for f in files for a in ("-f", str(f))] + options + ["-out_dir", out]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def service_run(blobs: BlobServiceClient, url: str, key: str, media: str, files: list[Path]) -> float:
    container = blobs.create_container(str(uuid.uuid4()))
    for path in files:
        container.upload_blob(path.name, path.read_bytes())
    started = time.perf_counter()
    job = requests.post(f"{url}/analyse/{media}/ip/{container.container_name}",
                        headers={"X-API-Key": key}, timeout=30).json()
    while True:
        state = requests.get(f"{url}{job['status_url']}", headers={"X-API-Key": key}, timeout=30).json()
        if state["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if state["status"] != "succeeded":
        sys.exit(f"bench: job failed: {state['error']}")
    container.delete_container()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--images", type=int, default=10, help="test pictures to make when no files are given")
    parser.add_argument("--video", action="store_true", help="the files are videos")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bin_dir = Path(os.environ.get("OPENFACE_BIN_DIR", "")).resolve()
    if not os.environ.get("OPENFACE_BIN_DIR") or not bin_dir.is_dir():
        sys.exit("bench: set OPENFACE_BIN_DIR to OpenFace's bin folder (or tests/openface_standin)")
    media = "video" if args.video else "image"
    exe = bin_dir / ("FeatureExtraction" if args.video else "FaceLandmarkImg")
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    files = args.files
    if not files:
        from openface_standin.media import make_face_image
        files = [make_face_image(work / f"face{i:03d}.jpg", size=(640, 480)) for i in range(args.images)]
    options = list(OUTPUT_FLAGS)

    STATE.mkdir(exist_ok=True)
    ports = [int(os.environ.get("BENCH_PORT_BASE", 18000)) + i for i in range(4)]
    key = uuid.uuid4().hex
    conn = azurite.connection_string(*ports[:3])
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": conn, "API_KEYS": key, "HOST": "127.0.0.1",
           "PORT": str(ports[3]), "OPENFACE_BIN_DIR": str(bin_dir), "WORKER_POLL_SECONDS": "0.05",
           "PYTHON": sys.executable, "LOG_LEVEL": "WARNING",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    pipeline = Pipeline(env)
    try:
        emulator = pipeline.start("azurite", azurite.command(*ports[:3]))
        wait_for_port(ports[0], "azurite", emulator)
        wait_for_port(ports[1], "azurite", emulator)
        web = pipeline.start("web", [str(ROOT / "bin/web")])
        wait_for_port(ports[3], "web", web)
        pipeline.start("worker", [str(ROOT / "bin/worker")])
        blobs = BlobServiceClient.from_connection_string(conn)
        url = f"http://127.0.0.1:{ports[3]}"
        service_run(blobs, url, key, media, files[:1])  # warm-up: queues, containers, imports

        results = {"batched": [], "one_by_one": [], "service": []}
        for _ in range(args.repeat):
            results["batched"].append(timed(lambda: raw_run(exe, files, options)))
            results["one_by_one"].append(timed(lambda: [raw_run(exe, [f], options) for f in files]))
            results["service"].append(service_run(blobs, url, key, media, files))
    finally:
        pipeline.stop()

    median = {name: statistics.median(values) for name, values in results.items()}
    report = {
        "openface": str(exe), "media": media, "files": len(files), "repeat": args.repeat,
        "bytes": sum(f.stat().st_size for f in files),
        "median_seconds": {k: round(v, 3) for k, v in median.items()},
        "service_overhead_seconds": round(median["service"] - median["batched"], 3),
        "all_seconds": {k: [round(v, 3) for v in vs] for k, vs in results.items()},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
