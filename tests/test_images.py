"""The images, built for real and run: web, worker and watcher from the service image against Azurite.

``bin/build-images --offline --openface-stage=standin`` builds the base image
(Debian's runtime libraries, Python, the test stand-in where OpenFace goes,
openface-sandbox) and the service image on it. The processes then run from
the service image as uid 10001, with the host's network, as a deployment
runs them. With buildah they run in one working container, with docker in
a container each (``--read-only``, the image's own user).

Where there is internet, ``IMAGES_OPENFACE_STAGE=build`` builds real OpenFace
instead, and ``IMAGES_TEST_MEDIA`` names a folder with a real face image and
video (.github/workflows/images.yml).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from harness import API_KEY, ROOT, free_port, unique_names
from openface_standin.media import make_face_image, make_video
from tools.local_run import create_storage

pytestmark = [pytest.mark.images, pytest.mark.timeout(1800)]

STAGE = os.environ.get("IMAGES_OPENFACE_STAGE", "standin")
SERVICE_IMAGE = "openface-blob-service:standin" if STAGE == "standin" else "openface-blob-service:latest"
USER = "10001:10001"


def _docker_engine() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def builder() -> str:
    if _docker_engine():
        return "docker"
    if shutil.which("buildah"):
        return "buildah"
    pytest.skip("no image builder here: neither a docker engine nor buildah (Debian: apt-get install buildah)")


@pytest.fixture(scope="module")
def image() -> str:
    """Both images, built by bin/build-images exactly as a user builds them."""
    tool = builder()
    argv = [str(ROOT / "bin/build-images"), "--builder", tool, f"--openface-stage={STAGE}"]
    argv += [f"--build-arg={item}" for item in os.environ.get("IMAGES_BUILD_ARGS", "").split()]
    done = subprocess.run(
        argv + (["--offline"] if STAGE == "standin" else []), capture_output=True, text=True, timeout=7200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{SERVICE_IMAGE}: built in" in done.stdout
    return SERVICE_IMAGE


class Runtime:
    """Processes from one image: docker containers, or buildah runs in one working container."""

    def __init__(self, tool: str, image: str, log_dir: Path):
        self.tool, self.image, self.log_dir = tool, image, log_dir
        self.env = dict(os.environ)
        self.running: dict[str, subprocess.Popen] = {}
        self.container = None
        if tool == "buildah":
            self.container = self._run(["buildah", "from", "--pull=never", image]).strip()

    def _run(self, argv: list[str], check: bool = True) -> str:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=600)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv[:3]} exited {done.returncode}: {done.stderr[-2000:]}")
        return done.stdout

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        settings = [item for key, value in env.items() for item in ("--env", f"{key}={value}")]
        if self.tool == "docker":
            command = [
                "docker",
                "run",
                "--name",
                f"{name}-{uuid.uuid4().hex[:8]}",
                "--network",
                "host",
                "--read-only",
                "--tmpfs",
                "/tmp:exec,mode=1777",
                "--rm",
                *settings,
                self.image,
                *argv,
            ]
        else:
            command = [
                "buildah",
                "run",
                "--isolation",
                "chroot",
                "--user",
                USER,
                *settings,
                self.container,
                "--",
                *argv,
            ]
        log = (self.log_dir / f"{name}.log").open("wb")
        self.running[name] = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def check_running(self) -> None:
        for name, proc in self.running.items():
            assert proc.poll() is None, f"{name} exited {proc.returncode}: {self.log(name)[-3000:]}"

    def execute(self, argv: list[str], beside: str = "web", env: dict[str, str] | None = None):
        """A command beside a running process (in its container, with ``env``), as the image's user."""
        settings = [item for key, value in (env or {}).items() for item in ("--env", f"{key}={value}")]
        if self.tool == "docker":
            return subprocess.run(
                ["docker", "exec", *settings, self._container_of(beside), *argv],
                capture_output=True,
                text=True,
                timeout=60,
            )
        return subprocess.run(
            ["buildah", "run", "--isolation", "chroot", "--user", USER, *settings, self.container, "--", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def _container_of(self, name: str) -> str:
        return self.running[name].args[self.running[name].args.index("--name") + 1]

    def terminate(self, name: str, timeout: float = 60) -> int:
        """SIGTERM to the process itself, as an orchestrator stops it; its exit code."""
        proc = self.running[name]
        if self.tool == "docker":
            subprocess.run(["docker", "kill", "--signal", "TERM", self._container_of(name)], capture_output=True)
        else:
            os.kill(_innermost(proc.pid), signal.SIGTERM)  # buildah run would kill it, not pass SIGTERM on
        return proc.wait(timeout)

    def healthcheck(self) -> list[str]:
        """The image's HEALTHCHECK command."""
        inspect = (
            ["docker", "image", "inspect", self.image]
            if self.tool == "docker"
            else ["buildah", "inspect", "--type", "image", self.image]
        )
        config = json.loads(self._run(inspect))
        config = config[0]["Config"] if self.tool == "docker" else config["Docker"]["config"]
        test = config["Healthcheck"]["Test"]
        assert test[0] == "CMD", test
        return test[1:]

    def close(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                # buildah run's processes would outlive it: kill them first, innermost last to go.
                for pid in reversed(_descendants(proc.pid)) if self.tool == "buildah" else []:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.kill()
                proc.wait()
        if self.container:
            self._run(["buildah", "rm", self.container], check=False)


def _children(pid: int) -> list[int]:
    """Every thread's children: buildah, written in Go, starts processes from any of its threads."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _descendants(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        children = _children(todo.pop())
        pids += children
        todo += children
    return pids


def _innermost(pid: int) -> int:
    """The process buildah run started in the container: the child of buildah-chroot-exec."""
    for child in _descendants(pid):
        parent = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if Path(f"/proc/{parent}/cmdline").read_bytes().startswith(b"buildah-chroot-exec"):
            return child
    raise AssertionError(f"no process runs under buildah run {pid}")


def _wait(what: str, done, runtime: Runtime, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runtime.check_running()
        value = done()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout} s; worker: {runtime.log('worker')[-3000:]}")


def _media(tmp_path: Path) -> tuple[Path, Path]:
    given = os.environ.get("IMAGES_TEST_MEDIA")
    if given:
        folder = Path(given)
        return next(folder.glob("*.jpg")), next(p for p in folder.iterdir() if p.suffix in (".wmv", ".mp4", ".avi"))
    return make_face_image(tmp_path / "face.jpg"), make_video(tmp_path / "clip.mp4", frames=12)


def test_the_pipeline_runs_from_the_image(image, azurite, tmp_path):
    tool = builder()
    runtime = Runtime(tool, image, tmp_path)
    names = unique_names()
    port = free_port()
    storage = {
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "LOG_LEVEL": "INFO",
        "JOB_QUEUE_NAME": names["job_queue_name"],
        "JOB_RECORDS_CONTAINER": names["job_records_container"],
    }
    create_storage(storage)  # as the deployment does
    url = f"http://127.0.0.1:{port}"
    try:
        runtime.start(
            "web",
            ["bin/web"],
            {**storage, "API_KEYS": API_KEY, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "1"},
        )
        runtime.start(
            "worker",
            ["bin/worker"],
            {**storage, "QUEUE_VISIBILITY_SECONDS": "30", "WORKER_SHUTDOWN_GRACE_SECONDS": "5"},
        )
        runtime.start(
            "watcher",
            ["bin/watcher"],
            {**storage, "SERVICE_URL": url, "SERVICE_API_KEY": API_KEY, "WATCH_INTERVAL_SECONDS": "1"},
        )
        _wait("the web answers /readyz", lambda: _ok(f"{url}/readyz"), runtime, timeout=120)

        # The code is read-only to the service's user; its temporary folder is not.
        assert runtime.execute(["sh", "-c", "touch /app/written"]).returncode != 0
        assert runtime.execute(["sh", "-c", "touch /tmp/written && rm /tmp/written"]).returncode == 0
        assert runtime.execute(["id", "-u"]).stdout.strip() == "10001"

        # An image and a video, each uploaded to a container of its own; the watcher starts their jobs.
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        containers = []
        for path in _media(tmp_path):
            container = blobs.create_container(str(uuid.uuid4()))
            container.upload_blob(path.name, path.read_bytes())
            containers.append(container)
        headers = {"X-API-Key": API_KEY}
        for container in containers:
            jobs = _wait(
                f"a finished job in {container.container_name}",
                lambda: _finished(url, container.container_name, headers),
                runtime,
            )
            assert [job["status"] for job in jobs] == ["succeeded"], jobs
            # On the image's resident engines, as uid 10002 through openface-sandbox.
            assert {r.get("analysed_by") for r in jobs[0]["results"]} == {"engine"}, jobs
            processed = [blob.name for blob in container.list_blobs(name_starts_with="processed/")]
            assert any(name.endswith(".summary.json") for name in processed), processed
            assert any(name.startswith("processed/_jobs/") for name in processed), processed

        # The image's own HEALTHCHECK passes against the running web.
        check = runtime.execute(runtime.healthcheck(), env={"PORT": str(port)})
        assert check.returncode == 0, check.stderr

        # SIGTERM stops each process cleanly.
        for name, said in (("watcher", "stopping"), ("worker", "worker stopped"), ("web", "Shutting down")):
            assert runtime.terminate(name) == 0, runtime.log(name)[-3000:]
            assert said in runtime.log(name), runtime.log(name)[-3000:]
        assert "SandboxError" not in runtime.log("worker") and "Traceback" not in runtime.log("worker")
    finally:
        runtime.close()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _finished(url: str, container: str, headers: dict) -> list[dict] | None:
    response = requests.get(f"{url}/jobs", params={"container": container}, headers=headers, timeout=10)
    jobs = response.json().get("jobs", []) if response.ok else []
    return jobs if jobs and all(job["status"] in ("succeeded", "failed") for job in jobs) else None
