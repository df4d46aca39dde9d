"""bin/local-run, the README's first command, as a new user runs it: real processes, the stand-in for OpenFace.

Each test gets its own state folder (LOCAL_RUN_DIR) and free ports, so it
never meets a developer's own local pipeline.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from harness import STANDIN_BIN_DIR, free_port, process_env, stop_process, wait_for_port
from openface_standin.media import make_face_image
from tools import azurite
from tools.azurite import ROOT

LOCAL_RUN = ROOT / "bin" / "local-run"


@pytest.fixture
def local_env(tmp_path):
    """The environment of a user's shell: OpenFace's folder set, and nothing else of ours."""
    env = process_env(
        OPENFACE_BIN_DIR=str(STANDIN_BIN_DIR),
        LOCAL_RUN_DIR=str(tmp_path / "state"),
        AZURITE_BLOB_PORT=str(free_port()),
        AZURITE_QUEUE_PORT=str(free_port()),
        AZURITE_TABLE_PORT=str(free_port()),
        PORT=str(free_port()),
    )
    for name in ("API_KEYS", "SERVICE_URL", "SERVICE_API_KEY", "PYTHONPATH"):
        env.pop(name, None)
    return env


def local_run(env, cwd, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(LOCAL_RUN), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_the_first_command_works_every_time(local_env, tmp_path):
    (tmp_path / "photos").mkdir()
    make_face_image(tmp_path / "photos" / "face.jpg")
    for attempt in range(5):
        done = local_run(local_env, tmp_path, "--once", "photos/face.jpg")
        assert done.returncode == 0, f"attempt {attempt}: {done.stdout}\n{done.stderr}"
        container = next(
            line.split(" -> ")[1].split("/")[0]
            for line in done.stdout.splitlines()
            if line.startswith("uploaded photos/face.jpg -> ")
        )
        assert re.search(r"face\.jpg\s+\S\s+analysed", done.stdout) and "job " in done.stdout
        results = tmp_path / "results" / container
        assert f"results: {results}/" in done.stdout
        summary = json.loads((results / "face.summary.json").read_text())
        assert summary["status"] == "analysed" and summary["source_blob"] == "face.jpg"
        assert (results / "face.csv").read_text().startswith("face, confidence")
        assert list((results / "_jobs").glob("*.json"))
        # The key is made once and kept, so the one printed last time still works.
        key = (Path(local_env["LOCAL_RUN_DIR"]) / "api-key").read_text().strip()
        assert f"curl -H 'X-API-Key: {key}' " in done.stdout
    assert len(list((tmp_path / "results").iterdir())) == 5


def test_the_key_comes_from_api_keys(local_env, tmp_path):
    make_face_image(tmp_path / "face.jpg")
    own = "my-own-key-" + "0" * 32
    done = local_run({**local_env, "API_KEYS": f"{own},{'second' * 8}"}, tmp_path, "--once", "face.jpg")
    assert done.returncode == 0, done.stderr
    assert f"API key (from API_KEYS): {own}" in done.stdout
    assert f"curl -H 'X-API-Key: {own}' " in done.stdout


def test_a_second_local_run_and_a_taken_port_are_refused(local_env, tmp_path):
    first = subprocess.Popen(
        [str(LOCAL_RUN)], env=local_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert "pipeline ready" in first.stdout.readline()
        second = local_run(local_env, tmp_path, "--once", str(make_face_image(tmp_path / "f.jpg")))
        assert second.returncode == 2
        assert second.stderr.strip().startswith("local-run: another bin/local-run is running (pid ")
        assert len(second.stderr.strip().splitlines()) == 1

        # bin/analyse with no settings of its own talks to this pipeline: its port, Azurite, its key.
        make_face_image(tmp_path / "cli.jpg")
        client = subprocess.run(
            [str(ROOT / "bin" / "analyse"), "analyse", "cli.jpg", "--download", "cli"],
            env=local_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert client.returncode == 0, client.stderr
        assert (tmp_path / "cli" / "cli.csv").is_file()
    finally:
        first.terminate()
        first.wait(30)

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(local_env["PORT"])))
        squatter.listen()
        taken = local_run(local_env, tmp_path)
    assert taken.returncode == 2
    assert taken.stderr.strip() == (
        f"local-run: port {local_env['PORT']} (web) is in use; stop what uses it, or set PORT to another port"
    )


def test_a_process_that_cannot_start_is_named_with_its_reason(local_env, tmp_path):
    started = time.monotonic()
    done = local_run({**local_env, "MAX_ATTEMPTS": "0"}, tmp_path, "--once", str(make_face_image(tmp_path / "f.jpg")))
    assert done.returncode == 1
    assert done.stderr.startswith("local-run: web stopped (exit code ") and "MAX_ATTEMPTS" in done.stderr
    assert time.monotonic() - started < 60  # at once, not after a timeout

    empty = tmp_path / "no-openface"
    empty.mkdir()
    missing = local_run({**local_env, "OPENFACE_BIN_DIR": str(empty)}, tmp_path)
    assert missing.returncode == 2
    assert "has no executable FaceLandmarkImg, FeatureExtraction, FaceLandmarkVidMulti" in missing.stderr


def test_an_upload_made_while_the_pipeline_was_down_is_answered(local_env, tmp_path):
    """Azurite keeps its data between runs; an upload nobody answered yet is analysed by the next run."""
    ports = [int(local_env[name]) for name in ("AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT", "AZURITE_TABLE_PORT")]
    emulator = subprocess.Popen(
        azurite.command(*ports, location=Path(local_env["LOCAL_RUN_DIR"]) / "azurite"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(ports[0])
        container = BlobServiceClient.from_connection_string(azurite.connection_string(*ports)).create_container(
            str(uuid.uuid4())
        )
        container.upload_blob("early.png", make_face_image(tmp_path / "early.png").read_bytes())
    finally:
        stop_process(emulator)

    pipeline = subprocess.Popen(
        [str(LOCAL_RUN)], env=local_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        summary = tmp_path / "results" / container.container_name / "early.summary.json"
        deadline = time.monotonic() + 90
        while not summary.exists():
            assert pipeline.poll() is None and time.monotonic() < deadline, pipeline.stdout.read()
            time.sleep(0.5)
        assert json.loads(summary.read_text())["status"] == "analysed"
    finally:
        pipeline.terminate()
        assert pipeline.wait(30) == 0
