"""Latency and throughput of the service against raw OpenFace, measured in one run.

Every service scenario runs the whole path (Azurite, gunicorn, a worker) and
is reported as a ratio to raw OpenFace over the same media, timed in the same
run. Each runs twice: on resident engines (``OPENFACE_ENGINE=resident``) and
on OpenFace's executables (``cli``), side by side.

- ``raw_one``: one FaceLandmarkImg process over one image;
- ``raw_batched``: one FaceLandmarkImg process over all the images;
- ``raw_per_image``: one process per image (the per-file design of old);
- ``lone``: one image in one container, POST to ``succeeded`` (against ``raw_one``);
- ``one_container``: the images in one container, one POST;
- ``per_upload``: one container per image, all POSTs at once;
- ``trickle``: the images uploaded one by one into one container, a POST
  after each upload, as the trigger does (timed from the first upload);
  ``trickle_tail`` is the same run from the last upload (against ``raw_one``);
- ``videos``: the videos in one container, one POST, against one raw
  FeatureExtraction process over them;
- ``memory`` (with ``--memory``): the worker's peak memory while it handles a
  100,000-frame video. The CSV comes from the OpenFace stand-in in tests/,
  so this is the worker's own cost, not OpenFace's.
The worker's and its engines' memory together is sampled throughout
(``engine_rss_peak_mb``).

    OPENFACE_BIN_DIR=/path/to/OpenFace/bin .venv/bin/python -m bench.run \\
        --images FACES_DIR --videos clip1.wmv clip2.avi --repeat 5 --memory

The engine is built against the OpenFace of OPENFACE_BIN_DIR (its prefix is
the folder above, or OPENFACE_PREFIX), or taken from ``--engine``.

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
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from analysis.client.service import upload
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
        self.pipeline = Pipeline(
            {
                **os.environ,
                "AZURE_STORAGE_CONNECTION_STRING": self.conn,
                "API_KEYS": self.key,
                "HOST": "127.0.0.1",
                "PORT": str(ports["web"]),
                "OPENFACE_BIN_DIR": str(bin_dir),
                "PYTHON": sys.executable,
                "LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                **names,
                **env,
            },
            state=self.state,
        )
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

    def wait(self, job_ids: list[str], poll: float = 0.1) -> None:
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
                time.sleep(poll)


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
            children = (
                times.children_user
                + times.children_system
                + sum(_own_seconds(child) for child in process.children(recursive=True))
            )
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


def one_container(service: Service, media: str, files: list[Path], poll: float = 0.1) -> float:
    container = service.container(files)
    return timed(lambda: service.wait([service.post(media, container)], poll))


def per_upload(service: Service, files: list[Path]) -> float:
    containers = [service.container([path]) for path in files]

    def run() -> None:
        with ThreadPoolExecutor(len(containers)) as pool:
            service.wait(list(pool.map(lambda c: service.post("image", c), containers)))

    return timed(run)


def trickle(service: Service, files: list[Path]) -> dict[str, float]:
    """From the first upload (``trickle``) and from the last (``trickle_tail``) until every job is done."""
    container = service.container()
    started = time.perf_counter()
    job_ids = []
    for number, path in enumerate(files):
        if number == len(files) - 1:
            last = time.perf_counter()
        upload(service.blobs, path, container, {})
        job_ids.append(service.post("image", container))
    service.wait(job_ids, LONE_POLL)
    ended = time.perf_counter()
    seconds = {"trickle": ended - started, "trickle_tail": ended - last}
    # Each image analysed exactly once: every summary names the job of the upload that brought it.
    summaries = [
        b
        for b in service.blobs.get_container_client(container).list_blobs(
            name_starts_with="processed/", include=["metadata"]
        )
        if b.name.endswith(".summary.json")
    ]
    if len(summaries) != len(files) or len({b.metadata["job_id"] for b in summaries}) > len(files):
        sys.exit(f"bench: trickle wrote {len(summaries)} summaries for {len(files)} images")
    return seconds


def memory(frames: int, storage: str | None) -> dict:
    """The worker's peak RSS over a job whose CSV has ``frames`` rows (stand-in OpenFace)."""
    from tests.openface_standin.media import make_video  # the stand-in's helpers live with the tests

    service = Service(STANDIN, storage, OPENFACE_ENGINE="cli")
    try:
        video = make_video(service.state / "long.mp4", frames=frames)
        started = time.perf_counter()
        service.wait([service.post("video", service.container([video]))])
        status = Path(f"/proc/{service.worker_pid()}/status").read_text()
        peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return {
            "frames": frames,
            "worker_peak_mb": round(peak_kb / 1024, 1),
            "seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        service.stop()


class RssSampler:
    """The peak of the worker's memory and its children's (the engines, or OpenFace's processes), summed."""

    def __init__(self, pid: int, every: float = 0.05):
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            total = 0
            for process in [self.process, *self.process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def with_engine(bin_dir: Path, engine: Path, folder: Path) -> Path:
    """OpenFace's folder as it is, plus the engine: what the base image's /opt/openface/bin holds."""
    for entry in bin_dir.iterdir():
        (folder / entry.name).symlink_to(entry)
    (folder / "openface-engine").unlink(missing_ok=True)
    (folder / "openface-engine").symlink_to(engine)
    return folder


# What each scenario is compared with, and the target it has on the engine.
BASELINE = {"lone": "raw_one", "trickle_tail": "raw_one", "videos": "raw_videos"}
TARGETS = {"lone": 0.35, "trickle_tail": 0.4, "per_upload": 0.6, "one_container": 0.5, "videos": 1.0}


def run_paths(
    paths: dict[str, dict[str, str]],
    bin_dirs: dict[str, Path],
    images: list[Path],
    videos: list[Path],
    repeat: int,
    lone_repeat: int,
    storage: str | None,
) -> tuple[dict, dict, dict]:
    """Every service scenario on each path (engine, cli), raw OpenFace between them, all in this run."""
    img_exe, vid_exe = bin_dirs["cli"] / "FaceLandmarkImg", bin_dirs["cli"] / "FeatureExtraction"
    times: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, list[dict[str, float]]]] = {}
    rss: dict[str, float] = {}
    raw_times = times.setdefault("raw", {})
    raw_cpu = cpu.setdefault("raw", {})

    def raw_round(names: tuple[str, ...]) -> None:
        """Raw OpenFace, timed between the service's scenarios: the same machine, the same minute."""
        for name, files, exe in [("raw_one", images[:1], img_exe), ("raw_batched", images, img_exe)] + (
            [("raw_videos", videos, vid_exe)] if videos else []
        ):
            if name not in names:
                continue
            before = psutil.Process().cpu_times()
            raw_times.setdefault(name, []).append(timed(lambda: raw(exe, files)))
            after = psutil.Process().cpu_times()
            raw_cpu.setdefault(name, []).append(
                {
                    "raw_openface": after.children_user
                    + after.children_system
                    - before.children_user
                    - before.children_system
                }
            )

    for path, env in paths.items():
        service = Service(bin_dirs[path], storage, **env)
        meter = CpuMeter(service)
        sampler = RssSampler(service.worker_pid())
        mine, used_by = times.setdefault(path, {}), cpu.setdefault(path, {})

        def record(name: str, fn) -> None:
            seconds, used = measured(meter, fn)
            for key, value in seconds.items() if isinstance(seconds, dict) else [(name, seconds)]:
                mine.setdefault(key, []).append(value)
                used_by.setdefault(key, []).append(used)
            service.clean()

        try:
            one_container(service, "image", images[:1])  # warm-up: queues, record container, imports
            for _ in range(lone_repeat):
                raw_round(("raw_one",))
                record("lone", lambda: one_container(service, "image", images[:1], poll=LONE_POLL))
            for _ in range(repeat):
                raw_round(("raw_batched", "raw_videos"))
                for name, fn in [
                    ("one_container", lambda: one_container(service, "image", images)),
                    ("per_upload", lambda: per_upload(service, images)),
                    ("trickle", lambda: trickle(service, images)),
                ] + ([("videos", lambda: one_container(service, "video", videos))] if videos else []):
                    record(name, fn)
        finally:
            rss[path] = sampler.stop()
            service.stop()
    return times, cpu, rss


# A lone job is a fraction of a second: the bench asks about it more often, to measure it, not its polls.
LONE_POLL = 0.01


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="a folder of face images (jpg/png)")
    parser.add_argument("--videos", type=Path, nargs="*", default=[], help="videos for the videos scenario")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lone-repeat", type=int, default=5)
    parser.add_argument("--engine", type=Path, help="openface-engine to use (default: built here)")
    parser.add_argument("--paths", default="engine,cli", help="which of engine, cli to run (default: both)")
    parser.add_argument("--per-image", action="store_true", help="also time one raw process per image")
    parser.add_argument("--memory", action="store_true", help="also measure the worker's memory on a long CSV")
    args = parser.parse_args()
    bin_dir = Path(os.environ.get("OPENFACE_BIN_DIR", "")).resolve()
    if not os.environ.get("OPENFACE_BIN_DIR") or not (bin_dir / "FaceLandmarkImg").exists():
        sys.exit("bench: set OPENFACE_BIN_DIR to OpenFace's bin folder")
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    # A secret: read from the environment, never from the command line.
    storage = os.environ.get("BENCH_STORAGE_CONNECTION_STRING") or None
    wanted = [path for path in args.paths.split(",") if path]
    bin_dirs = {"cli": bin_dir}
    if "engine" in wanted:
        from tools.engine_build import build

        engine = args.engine or build(Path(os.environ.get("OPENFACE_PREFIX") or bin_dir.parent))
        bin_dirs["engine"] = with_engine(bin_dir, engine.resolve(), Path(tempfile.mkdtemp(prefix="bench-bin-")))
    paths = {path: {"OPENFACE_ENGINE": "resident" if path == "engine" else "cli"} for path in wanted}
    times, cpu, rss = run_paths(paths, bin_dirs, images, args.videos, args.repeat, args.lone_repeat, storage)
    if args.per_image:
        img_exe = bin_dir / "FaceLandmarkImg"
        times["raw"]["raw_per_image"] = [timed(lambda: [raw(img_exe, [f]) for f in images])]

    raw_median = {name: statistics.median(values) for name, values in times["raw"].items()}
    cpus = os.cpu_count() or 1
    report = {
        "machine": {
            "cpus": cpus,
            "openface_processes": cpus,
            "storage": "elsewhere (BENCH_STORAGE_CONNECTION_STRING)" if storage else "Azurite, here",
        },
        "images": len(images),
        "videos": [p.name for p in args.videos],
        "repeat": args.repeat,
        "raw_seconds": {k: round(v, 3) for k, v in raw_median.items()},
        "engine_rss_peak_mb": round(rss.get("engine", 0), 1),
        "cli_rss_peak_mb": round(rss.get("cli", 0), 1),
    }
    for path in wanted:
        median = {name: statistics.median(values) for name, values in times[path].items()}
        base = {name: raw_median[BASELINE.get(name, "raw_batched")] for name in median}
        used = {
            name: {part: statistics.median(u[part] for u in runs) for part in runs[0]}
            for name, runs in cpu[path].items()
        }
        report[path] = {
            "median_seconds": {k: round(v, 3) for k, v in median.items()},
            "ratio": {k: round(v / base[k], 2) for k, v in median.items()},
            "all_seconds": {k: [round(v, 3) for v in vs] for k, vs in times[path].items()},
            "cpu_seconds": {
                k: {part: round(v, 2) for part, v in parts.items() if v >= 0.005} for k, parts in used.items()
            },
            # Every part's CPU spread perfectly over every core, against raw: no schedule beats it here.
            # trickle_tail is one upload's wait inside the trickle, so the trickle's CPU says nothing of it.
            "cpu_floor": {
                k: round(sum(parts.values()) / cpus / base[k], 2) for k, parts in used.items() if k != "trickle_tail"
            },
        }
    if "engine" in wanted:
        ratios = report["engine"]["ratio"]
        report["targets"] = {
            name: {"target": target, "engine": ratios.get(name), "met": ratios.get(name, 99) <= target}
            for name, target in TARGETS.items()
            if name in ratios
        }
        report["targets"]["engine_rss_mb"] = {
            "target": 1500,
            "engine": report["engine_rss_peak_mb"],
            "met": report["engine_rss_peak_mb"] < 1500,
        }
    if args.memory:
        report["memory"] = memory(100_000, storage)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
