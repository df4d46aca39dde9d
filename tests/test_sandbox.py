"""What OpenFace may reach (analysis/openface/sandbox.py, engine/openface-sandbox.c): read off running processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from analysis.openface.results import MediaFile, Outcome, TimeLimits
from analysis.openface.runner import OpenFaceRunner
from analysis.openface.sandbox import Sandbox, SandboxError
from harness import ROOT, STANDIN_BIN_DIR, STANDIN_KNOBS
from media_rules import Media
from openface_standin.media import make_face_image

SECRETS = {
    "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=c2VjcmV0;BlobEndpoint=http://127.0.0.1:1/x",
    "API_KEYS": "k" * 40,
    "IDENTITY_ENDPOINT": "http://localhost:42356/msi/token",
    "IDENTITY_HEADER": "identity-header-secret",
    "MSI_SECRET": "msi-secret",
    "AZURE_CLIENT_SECRET": "client-secret",
}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _ancestors(pid: int) -> set[int]:
    found = set()
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
        found.add(pid)
    return found


def wait_for_process(needle: str, under: int | None = None, timeout: float = 30) -> int:
    """The pid of the first stand-in process whose command line holds ``needle`` (started by ``under``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if (
                    needle in cmdline
                    and "python" in cmdline
                    and "standin" in cmdline
                    and (under is None or under in _ancestors(int(entry.name)))
                ):
                    return int(entry.name)
        time.sleep(0.05)
    raise TimeoutError(f"no process with {needle!r} in its command line")


def assert_no_secret(env: dict[str, str]) -> None:
    for name, value in SECRETS.items():
        assert name not in env, name
        assert not any(value in seen for seen in env.values()), name


def test_the_environment_holds_only_what_openface_needs(monkeypatch, tmp_path):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENFACE_STANDIN_SLEEP", "1")
    env = Sandbox.create(None, "OPENFACE_STANDIN_SLEEP").environment(tmp_path)
    assert_no_secret(env)
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path) and env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["OPENFACE_STANDIN_SLEEP"] == "1"
    assert set(env) <= {
        "PATH",
        "LD_LIBRARY_PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "HOME",
        "TMPDIR",
        "OPENBLAS_NUM_THREADS",
        "OPENFACE_STANDIN_SLEEP",
    }


@pytest.mark.parametrize(
    "name", ["AZURE_STORAGE_CONNECTION_STRING", "IDENTITY_HEADER", "API_KEYS", "MY_TOKEN", "MSI_SECRET"]
)
def test_secrets_cannot_be_passed_through(name):
    with pytest.raises(SandboxError, match=name):
        Sandbox.create(None, f"OPENFACE_STANDIN_LOG,{name}")


@pytest.mark.parametrize(
    "engine,program,slow",
    [
        ("cli", "FaceLandmarkImg", "OPENFACE_STANDIN_SLEEP"),
        ("resident", "openface-engine", "OPENFACE_STANDIN_ENGINE_SLEEP"),
    ],
)
def test_a_running_openface_of_the_worker_sees_no_secret(service_factory, container, tmp_path, engine, program, slow):
    identity = {k: v for k, v in SECRETS.items() if k not in ("AZURE_STORAGE_CONNECTION_STRING", "API_KEYS")}
    service = service_factory(OPENFACE_ENGINE=engine, **{slow: "20"}, **identity)
    container.upload_blob("face.jpg", make_face_image(tmp_path / "f.jpg").read_bytes())
    assert service.analyse("image", "ip", container.container_name).status_code == 202
    worker = next(p for p in service.processes if p.name == "worker")
    env = environ_of(wait_for_process(program, under=worker.pid))
    for name in (*identity, "AZURE_STORAGE_CONNECTION_STRING", "API_KEYS"):
        assert name not in env, name
    values = " ".join(env.values())
    for secret in (*identity.values(), service.env["AZURE_STORAGE_CONNECTION_STRING"], service.api_key):
        assert secret not in values
    assert env[slow] == "20"  # passed through by name


# -- the sandbox user ------------------------------------------------------


@pytest.fixture(scope="session")
def helper(tmp_path_factory) -> Path:
    """engine/openface-sandbox.c, built here; changing user needs root (the image gives it capabilities)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build openface-sandbox")
    if os.geteuid() != 0:
        pytest.skip("openface-sandbox changes user only as root or with its capabilities (tests/test_images.py)")
    path = tmp_path_factory.mktemp("sandbox") / "openface-sandbox"
    subprocess.run(
        [compiler, "-O2", "-Wall", "-Werror", "-o", str(path), str(ROOT / "engine/openface-sandbox.c")], check=True
    )
    return path


def test_openface_runs_as_another_user_that_cannot_read_the_worker(helper, tmp_path):
    sandbox = Sandbox.create(helper)
    uid, gid = sandbox.ids
    assert uid != os.geteuid()
    # The sandbox user cannot read this process's environment.
    done = subprocess.run(
        sandbox.command(["/bin/cat", f"/proc/{os.getpid()}/environ"]),
        capture_output=True,
        env=sandbox.environment(tmp_path),
    )
    assert done.returncode != 0 and b"Permission denied" in done.stderr
    # Nor any file the worker keeps to itself.
    private = tmp_path / "private"
    private.write_text("worker only")
    private.chmod(0o600)
    done = subprocess.run(sandbox.command(["/bin/cat", str(private)]), capture_output=True)
    assert done.returncode != 0 and b"worker only" not in done.stdout


def test_openface_analyses_in_a_folder_opened_to_it(helper, monkeypatch):
    sandbox = Sandbox.create(helper, STANDIN_KNOBS)
    work = Path(tempfile.mkdtemp(prefix="openface-job-"))  # as the worker's workspace, under TMPDIR
    (work / "in").mkdir()
    (work / "out").mkdir()
    for folder in (work, work / "out"):
        sandbox.open_to(folder)
    files = [MediaFile("m00000", make_face_image(work / "in" / "m00000.jpg"))]
    monkeypatch.setenv("OPENFACE_STANDIN_SLEEP", "2")
    # The sandbox user may not enter this test's own Python (under root's home): the system's runs the stand-in.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    runner = OpenFaceRunner(STANDIN_BIN_DIR, TimeLimits(60, 0), sandbox=sandbox)
    seen = {}

    def look() -> None:
        pid = wait_for_process("FaceLandmarkImg")
        status = Path(f"/proc/{pid}/status").read_text()
        seen["uid"] = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        seen["env"] = environ_of(pid)

    import threading

    looking = threading.Thread(target=look)
    looking.start()
    (result,) = runner.run(Media.IMAGE, files, work / "out", [])
    looking.join()
    assert result.outcome is Outcome.ANALYSED and result.csv.stat().st_uid == sandbox.ids[0]
    assert seen["uid"] == str(sandbox.ids[0])
    assert_no_secret(seen["env"])
    shutil.rmtree(work)  # the worker can remove what OpenFace wrote


def test_a_helper_that_does_not_change_user_stops_the_worker(tmp_path):
    fake = tmp_path / "not-a-sandbox"
    fake.write_text('#!/bin/sh\nif [ "$1" = --ids ]; then echo \'10002 10002\'; exit 0; fi\nexec "$@"\n')
    fake.chmod(0o755)
    with pytest.raises(SandboxError, match="should run programs as uid 10002"):
        Sandbox.create(fake)
