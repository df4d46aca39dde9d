"""Throughput of the service against raw OpenFace, measured in one run.

Every service scenario runs the whole path (Azurite, gunicorn, a worker) and
is reported as a ratio to one raw OpenFace process over the same media, timed
in the same run:

- ``raw_batched``: one FaceLandmarkImg process over all the images (1.00x);
- ``raw_per_image``: one process per image (the per-file design of old);
- ``one_container``: the images in one container, one POST;
- ``per_upload``: one container per image, all POSTs at once;
- ``trickle``: the images uploaded one by one into one container, a POST
  after each upload, as the trigger does (timed from the first upload);
- ``videos``: the videos in one container, one POST, against one raw
  FeatureExtraction process over them;
- ``memory`` (with ``--memory``): the worker's peak memory while it handles a
  100,000-frame video. The CSV comes from the OpenFace stand-in in tests/,
  so this is the worker's own cost, not OpenFace's.

    OPENFACE_BIN_DIR=/path/to/OpenFace/bin .venv/bin/python -m bench.run \\
        --images FACES_DIR --videos clip1.wmv clip2.avi --repeat 3 --memory

The service runs over Azurite on this machine, unless
``BENCH_STORAGE_CONNECTION_STRING`` names a storage account elsewhere (as
in Azure, where storage does not share the service's cores).

Service time is from the first request (or upload, for ``trickle``) until
every job's record says it is done, its results in storage. Timings depend on
the machine; the figures in bench/README.md name theirs.

Each scenario's CPU-seconds are counted too, by part: Azurite, the web
processes, the worker's own Python, the OpenFace processes, and the bench's
own client. Their sum spread perfectly over every core gives ``cpu_floor``:
the ratio no schedule could beat on this machine with all of them on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from analysis.client import upload
from analysis.options import OUTPUT_FLAGS
from analysis.storage import environment_options
from tools import azurite
from tools.azurite import ROOT
from tools.local_run import Pipeline, start_pipeline

STANDIN = ROOT / "tests" / "openface_standin"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """Web and one worker with the shipped defaults on free ports, over Azurite in memory.

    With ``storage`` (a connection string), over that account instead, as in
    Azure, where storage does not share the service's cores. The bench then
    uses a queue and a records container of its own, and removes them at the end.
    """

    def __init__(self, bin_dir: Path, storage: str | None = None, **env: str):
        self.state = Path(tempfile.mkdtemp(prefix="bench-"))
        ports = {"blob": free_port(), "queue": free_port(), "table": free_port(), "web": free_port()}
        self.key = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{ports['web']}"
        self.conn = storage or azurite.connection_string(ports["blob"], ports["queue"], ports["table"])
        self.own = f"bench-{self.key[:12]}" if storage else None  # its queue and records container
        names = {"JOB_QUEUE_NAME": self.own, "JOB_RECORDS_CONTAINER": self.own} if self.own else {}
        self.pipeline = Pipeline({
            **os.environ, "AZURE_STORAGE_CONNECTION_STRING": self.conn, "API_KEYS": self.key, "HOST": "127.0.0.1",
            "PORT": str(ports["web"]), "OPENFACE_BIN_DIR": str(bin_dir), "PYTHON": sys.executable,
            "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **names, **env,
        }, state=self.state)
        self.blobs = BlobServiceClient.from_connection_string(self.conn, **environment_options())
        self.made: list[str] = []
        try:
            start_pipeline(self.pipeline, ports, self.url, data=None, watcher=False, emulator=storage is None)
        except BaseException:
            self.stop()
            raise
        self.http = requests.Session()
        self.http.headers["X-API-Key"] = self.key

    def clean(self) -> None:
        """Delete the containers made so far, so each scenario starts from the same storage."""
        while self.made:
            self.blobs.delete_container(self.made.pop())

    def stop(self) -> None:
        self.pipeline.stop()
        if self.own:
            self.clean()
            queues = QueueServiceClient.from_connection_string(self.conn, **environment_options())
            for name in (self.own, f"{self.own}-poison"):
                with contextlib.suppress(ResourceNotFoundError):
                    queues.delete_queue(name)
            with contextlib.suppress(ResourceNotFoundError):
                self.blobs.delete_container(self.own)

    def worker_pid(self) -> int:
        return next(p.proc.pid for p in self.pipeline.processes if p.name == "worker")

    def container(self, files: list[Path] = ()) -> str:
        name = str(uuid.uuid4())
        self.blobs.create_container(name)
        self.made.append(name)
        for path in files:
            upload(self.blobs, path, name, {})
        return name

    def post(self, media: str, container: str) -> str:
        response = self.http.post(f"{self.url}/analyse/{media}/ip/{container}", timeout=60)
        response.raise_for_status()
        return response.json()["job_id"]

    def wait(self, job_ids: list[str]) -> None:
        """Until every job is done, asking about one job at a time, the oldest unfinished first.

        One question in flight at a time keeps the bench's own load on the
        service small; a job found done is followed at once by the next.
        """
        pending = list(job_ids)
        while pending:
            job = self.http.get(f"{self.url}/jobs/{pending[0]}", timeout=60).json()
            if job["status"] == "failed":
                sys.exit(f"bench: job {pending[0]} failed: {job['error']}")
            if job["status"] == "succeeded":
                pending.pop(0)
            else:
                time.sleep(0.1)


class CpuMeter:
    """CPU-seconds used so far by each part of a service, read from the kernel's process accounting."""

    def __init__(self, service: Service):
        self.parts = {p.name: psutil.Process(p.proc.pid) for p in service.pipeline.processes}
        self.bench = psutil.Process()

    def read(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for name, process in self.parts.items():
            times = process.cpu_times()
            # Children still running count too; finished ones are in children_user/system.
            children = times.children_user + times.children_system + sum(
                _own_seconds(child) for child in process.children(recursive=True))
            if name == "worker":  # its children are the OpenFace processes it ran
                used["worker"], used["openface"] = times.user + times.system, children
            else:
                used[name] = times.user + times.system + children
        # The bench's own threads; raw OpenFace runs are its reaped children.
        times = self.bench.cpu_times()
        used["bench"] = times.user + times.system
        used["raw_openface"] = times.children_user + times.children_system
        return used


def _own_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def measured(meter: CpuMeter, fn) -> tuple[float, dict[str, float]]:
    """Seconds ``fn`` took, and the CPU-seconds each part used meanwhile."""
    before = meter.read()
    seconds = fn()
    after = meter.read()
    return seconds, {part: after[part] - before[part] for part in after}


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def raw(exe: Path, files: list[Path]) -> None:
    with tempfile.TemporaryDirectory() as out:
        argv = [str(exe)] + [a for f in files for a in ("-f", str(f))] + list(OUTPUT_FLAGS) + ["-out_dir", out]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one_container(service: Service, media: str, files: list[Path]) -> float:
    container = service.container(files)
    return timed(lambda: service.wait([service.post(media, container)]))


def per_upload(service: Service, files: list[Path]) -> float:
    containers = [service.container([path]) for path in files]

    def run() -> None:
        with ThreadPoolExecutor(len(containers)) as pool:
            service.wait(list(pool.map(lambda c: service.post("image", c), containers)))

    return timed(run)


def trickle(service: Service, files: list[Path]) -> float:
    container = service.container()

    def run() -> None:
        job_ids = []
        for path in files:
            upload(service.blobs, path, container, {})
            job_ids.append(service.post("image", container))
        service.wait(job_ids)

    seconds = timed(run)
    # Each image analysed exactly once: every summary names the job of the upload that brought it.
    summaries = [b for b in service.blobs.get_container_client(container).list_blobs(
        name_starts_with="processed/", include=["metadata"]) if b.name.endswith(".summary.json")]
    if len(summaries) != len(files) or len({b.metadata["job_id"] for b in summaries}) > len(files):
        sys.exit(f"bench: trickle wrote {len(summaries)} summaries for {len(files)} images")
    return seconds


def memory(frames: int, storage: str | None) -> dict:
    """The worker's peak RSS over a job whose CSV has ``frames`` rows (stand-in OpenFace)."""
    from tests.openface_standin.media import make_video  # the stand-in's helpers live with the tests

    service = Service(STANDIN, storage)
    try:
        video = make_video(service.state / "long.mp4", frames=frames)
        started = time.perf_counter()
        service.wait([service.post("video", service.container([video]))])
        status = Path(f"/proc/{service.worker_pid()}/status").read_text()
        peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return {"frames": frames, "worker_peak_mb": round(peak_kb / 1024, 1),
                "seconds": round(time.perf_counter() - started, 1)}
    finally:
        service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="a folder of face images (jpg/png)")
    parser.add_argument("--videos", type=Path, nargs="*", default=[], help="videos for the videos scenario")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also measure the worker's memory on a long CSV")
    args = parser.parse_args()
    bin_dir = Path(os.environ.get("OPENFACE_BIN_DIR", "")).resolve()
    if not os.environ.get("OPENFACE_BIN_DIR") or not (bin_dir / "FaceLandmarkImg").exists():
        sys.exit("bench: set OPENFACE_BIN_DIR to OpenFace's bin folder")
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    img_exe, vid_exe = bin_dir / "FaceLandmarkImg", bin_dir / "FeatureExtraction"
    # A secret: read from the environment, never from the command line.
    storage = os.environ.get("BENCH_STORAGE_CONNECTION_STRING") or None

    service = Service(bin_dir, storage)
    meter = CpuMeter(service)
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[dict[str, float]]] = {}
    try:
        one_container(service, "image", images[:1])  # warm-up: queues, record container, imports
        for _ in range(args.repeat):
            for name, fn in [
                ("raw_batched", lambda: timed(lambda: raw(img_exe, images))),
                ("raw_per_image", lambda: timed(lambda: [raw(img_exe, [f]) for f in images])),
                ("one_container", lambda: one_container(service, "image", images)),
                ("per_upload", lambda: per_upload(service, images)),
                ("trickle", lambda: trickle(service, images)),
            ] + ([
                ("raw_videos", lambda: timed(lambda: raw(vid_exe, args.videos))),
                ("videos", lambda: one_container(service, "video", args.videos)),
            ] if args.videos else []):
                if name == "raw_per_image" and name in times:
                    continue  # the old design's cost, measured once: it takes minutes
                seconds, used = measured(meter, fn)
                times.setdefault(name, []).append(seconds)
                cpu.setdefault(name, []).append(used)
                service.clean()
    finally:
        service.stop()

    median = {name: statistics.median(values) for name, values in times.items()}
    baseline = {name: "raw_videos" if name.endswith("videos") else "raw_batched" for name in median}
    cpu_median = {name: {part: statistics.median(u[part] for u in used) for part in used[0]}
                  for name, used in cpu.items()}
    cpus = os.cpu_count() or 1
    report = {
        "machine": {"cpus": cpus, "openface_processes": cpus,
                    "storage": "elsewhere (BENCH_STORAGE_CONNECTION_STRING)" if storage else "Azurite, here"},
        "images": len(images), "videos": [p.name for p in args.videos], "repeat": args.repeat,
        "median_seconds": {k: round(v, 2) for k, v in median.items()},
        "ratio": {k: round(v / median[baseline[k]], 2) for k, v in median.items()},
        "all_seconds": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
        "cpu_seconds": {k: {part: round(v, 2) for part, v in parts.items() if v >= 0.005}
                        for k, parts in cpu_median.items()},
        # Every part's CPU spread perfectly over every core, against raw: no schedule beats it here.
        "cpu_floor": {k: round(sum(parts.values()) / cpus / median[baseline[k]], 2)
                      for k, parts in cpu_median.items() if not k.startswith("raw")},
    }
    if args.memory:
        report["memory"] = memory(100_000, storage)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
