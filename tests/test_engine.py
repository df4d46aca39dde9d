"""Resident engines (analysis/openface/engine.py) in the worker, with the stand-in engine: faults made on demand.

The stand-in ``openface-engine`` speaks the engine's protocol over the
stand-in executables and logs each start ("ready") and each request to
OPENFACE_STANDIN_LOG. The real engine is checked against real OpenFace in
tests/test_real_openface.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from analysis.openface.engine import Engine, EngineError, EnginePool, Reply, judge
from analysis.openface.results import MediaFile, Outcome, TimeLimits
from analysis.openface.sandbox import Sandbox
from harness import ROOT, STANDIN_BIN_DIR, STANDIN_KNOBS
from media_rules import Media
from openface_standin.media import make_corrupt_video, make_face_image, make_video, standin_env


def events(log: Path, kind: str | None = None) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [line for line in lines if line.get("exe") == "openface-engine" and (kind is None or line["event"] == kind)]


def cli_runs(log: Path) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [line for line in lines if line.get("exe") != "openface-engine"]


def wait_until(what: str, done, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = done()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


def submit(service, container, name: str, path: Path) -> str:
    container.upload_blob(name, path.read_bytes(), overwrite=True)
    response = service.analyse("image" if path.suffix == ".jpg" else "video", "ip", container.container_name)
    assert response.status_code in (200, 202), response.text
    return response.json()["job_id"]


@pytest.fixture
def engine_log(tmp_path) -> Path:
    return tmp_path / "openface.jsonl"


def test_one_engine_serves_many_jobs(service_factory, blob_service, engine_log, tmp_path):
    service = service_factory(OPENFACE_PROCESSES="1", OPENFACE_STANDIN_LOG=str(engine_log))
    jobs = []
    for i in range(3):
        container = blob_service.create_container(f"engine-many-{i}-{time.time_ns()}")
        jobs.append(submit(service, container, "face.jpg", make_face_image(tmp_path / f"{i}.jpg")))
        job = service.wait_for_job(jobs[-1])
        assert job["status"] == "succeeded"
        assert [(r["status"], r["analysed_by"]) for r in job["results"]] == [("analysed", "engine")]
    assert len(events(engine_log, "ready")) == 1  # the models loaded once, for all three
    assert len(events(engine_log, "request")) == 3 and cli_runs(engine_log) == []


def test_a_killed_engine_is_replaced_and_its_media_retried(service_factory, container, engine_log, tmp_path):
    service = service_factory(
        OPENFACE_PROCESSES="1", OPENFACE_STANDIN_LOG=str(engine_log), OPENFACE_STANDIN_ENGINE_SLEEP="5"
    )
    job_id = submit(service, container, "face.jpg", make_face_image(tmp_path / "f.jpg"))
    (request,) = wait_until("the engine has the media in hand", lambda: events(engine_log, "request"))
    os.kill(request["pid"], signal.SIGKILL)
    job = service.wait_for_job(job_id, timeout=60)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    assert job["results"][0]["status"] == "analysed"
    assert len(events(engine_log, "ready")) == 2  # a fresh engine took the dead one's place
    assert "engine died with a media in hand" in service.log("worker")


def test_an_overrun_is_stopped_and_marked_and_the_rest_go_on(service_factory, container, engine_log, tmp_path):
    service = service_factory(
        OPENFACE_PROCESSES="1",
        OPENFACE_STANDIN_LOG=str(engine_log),
        OPENFACE_TIMEOUT_SECONDS="1",
        OPENFACE_TIMEOUT_SECONDS_PER_MB="0",
    )
    container.upload_blob("slow.jpg", make_face_image(tmp_path / "s.jpg", seconds=60).read_bytes())
    container.upload_blob("quick.jpg", make_face_image(tmp_path / "q.jpg").read_bytes())
    job_id = service.analyse("image", "ip", container.container_name).json()["job_id"]
    job = service.wait_for_job(job_id, timeout=60)
    outcomes = {r["blob"]: (r["status"], r["reason"] or "") for r in job["results"]}
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert outcomes["quick.jpg"][0] == "analysed"
    assert outcomes["slow.jpg"][0] == "failed" and "within 1 s" in outcomes["slow.jpg"][1]
    assert len(events(engine_log, "ready")) == 2  # the one that overran was killed and replaced


def test_a_media_over_the_memory_cap_fails_alone_and_its_engine_is_replaced(
    service_factory, container, engine_log, tmp_path
):
    service = service_factory(
        OPENFACE_PROCESSES="1", OPENFACE_STANDIN_LOG=str(engine_log), OPENFACE_MEMORY_LIMIT_MB="1500"
    )
    container.upload_blob("hungry.jpg", make_face_image(tmp_path / "h.jpg", memory_mb=4000).read_bytes())
    container.upload_blob("quick.jpg", make_face_image(tmp_path / "q.jpg").read_bytes())
    job = service.wait_for_job(service.analyse("image", "ip", container.container_name).json()["job_id"])
    outcomes = {r["blob"]: (r["status"], r["reason"] or "") for r in job["results"]}
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert outcomes["hungry.jpg"][0] == "failed" and "ran out of memory" in outcomes["hungry.jpg"][1]
    assert outcomes["quick.jpg"][0] == "analysed"
    assert len(events(engine_log, "ready")) == 2  # what it held may be half-made: a fresh one took over


def test_a_poison_file_costs_only_its_own_job(service_factory, blob_service, engine_log, tmp_path):
    service = service_factory(OPENFACE_STANDIN_LOG=str(engine_log), MAX_ATTEMPTS="2")
    poison = blob_service.create_container(f"engine-poison-{time.time_ns()}")
    healthy = blob_service.create_container(f"engine-healthy-{time.time_ns()}")
    poisoned = submit(service, poison, "crash.jpg", make_face_image(tmp_path / "c.jpg", crash=True))
    fine = submit(service, healthy, "face.jpg", make_face_image(tmp_path / "f.jpg"))
    assert service.wait_for_job(fine)["attempts"] == 1
    failed = service.wait_for_job(poisoned, timeout=90)
    assert failed["status"] == "failed" and "engine exited" in failed["error"], failed
    assert service.job(fine)["status"] == "succeeded"


def test_an_engine_is_replaced_after_its_requests(service_factory, blob_service, engine_log, tmp_path):
    service = service_factory(OPENFACE_PROCESSES="1", ENGINE_MAX_REQUESTS="2", OPENFACE_STANDIN_LOG=str(engine_log))
    for i in range(3):
        container = blob_service.create_container(f"engine-cycle-{i}-{time.time_ns()}")
        job_id = submit(service, container, "face.jpg", make_face_image(tmp_path / f"{i}.jpg"))
        assert service.wait_for_job(job_id)["status"] == "succeeded"
    ready = events(engine_log, "ready")
    assert len(ready) == 2 and ready[0]["pid"] != ready[1]["pid"]


@pytest.fixture
def cli_only_bin(tmp_path) -> Path:
    """A user's own OpenFace: the executables and no engine."""
    folder = tmp_path / "openface-bin"
    folder.mkdir()
    for name in ("FaceLandmarkImg", "FeatureExtraction", "FaceLandmarkVidMulti"):
        (folder / name).symlink_to(STANDIN_BIN_DIR / name)
    return folder


def test_a_cli_only_install_still_works(service_factory, container, cli_only_bin, engine_log, tmp_path):
    service = service_factory(OPENFACE_BIN_DIR=str(cli_only_bin), OPENFACE_STANDIN_LOG=str(engine_log))
    job = service.wait_for_job(submit(service, container, "face.jpg", make_face_image(tmp_path / "f.jpg")))
    assert [(r["status"], r["analysed_by"]) for r in job["results"]] == [("analysed", "cli")]
    assert [run["exe"] for run in cli_runs(engine_log)] == ["FaceLandmarkImg"] and events(engine_log) == []
    assert "OpenFace runs as its executables" in service.log("worker")


def test_the_executables_when_asked_even_with_an_engine(service_factory, container, engine_log, tmp_path):
    service = service_factory(OPENFACE_ENGINE="cli", OPENFACE_STANDIN_LOG=str(engine_log))
    job = service.wait_for_job(submit(service, container, "face.jpg", make_face_image(tmp_path / "f.jpg")))
    assert job["results"][0]["analysed_by"] == "cli" and events(engine_log) == []


def test_resident_without_an_engine_refuses_to_start(service_factory, cli_only_bin):
    service = service_factory(OPENFACE_BIN_DIR=str(cli_only_bin), OPENFACE_ENGINE="resident", start=False)
    worker = service.start_worker()
    assert worker.wait(30) == 2
    assert "openface-engine" in service.log("worker")


def test_an_engine_that_cannot_start_leaves_the_work_to_the_executables(service_factory, container, tmp_path):
    service = service_factory(OPENFACE_STANDIN_EXIT="1")  # the stand-ins fail before their models are in
    worker_log = lambda: service.log("worker")  # noqa: E731
    wait_until("the worker falls back", lambda: "OpenFace runs as its executables" in worker_log())
    assert "the resident engine could not start" in worker_log()


# -- the engine process itself ---------------------------------------------


@pytest.fixture
def launcher():
    with ThreadPoolExecutor(1) as pool:
        yield pool


def standin_engine(tmp_path, launcher) -> Engine:
    engine = Engine(
        STANDIN_BIN_DIR / "openface-engine", STANDIN_BIN_DIR, Sandbox.create(None, STANDIN_KNOBS), tmp_path, 1, launcher
    )
    engine.start()
    return engine


def test_bad_requests_are_replies_and_chatter_never_breaks_one(tmp_path, launcher, monkeypatch):
    monkeypatch.setenv("PATH", standin_env()["PATH"])
    engine = standin_engine(tmp_path, launcher)
    out = tmp_path / "out"
    out.mkdir()
    face = make_face_image(tmp_path / "face.jpg")
    try:
        bad = [
            {"id": "a", "mode": "audio", "input": str(face), "out_dir": str(out)},
            {"id": "b", "mode": "image", "input": "relative.jpg", "out_dir": str(out)},
            {"id": "c", "mode": "image", "input": str(face), "out_dir": str(out), "flags": ["-verbose"]},
            {"id": "d", "mode": "image", "input": str(face), "out_dir": str(tmp_path / "missing")},
        ]
        for request in bad:
            assert engine.analyse(request, 10, lambda percent: None).status == "error", request
        good = engine.analyse(
            {"id": "e", "mode": "image", "input": str(face), "out_dir": str(out), "flags": ["-2Dfp"]},
            10,
            lambda percent: None,
        )
        assert good.status == "ok" and good.outputs == ["face.csv", "face_of_details.txt"]
        corrupt = make_corrupt_video(tmp_path / "bad.mp4")
        unreadable = engine.analyse(
            {"id": "f", "mode": "video", "input": str(corrupt), "out_dir": str(out)}, 10, lambda percent: None
        )
        assert unreadable.status == "unreadable"
        assert engine.alive() and engine.requests == 6
        # The stand-in printed to stdout on every request; it went to the console, not into a reply.
        assert "library chatter on stdout" in engine.console.read_text()
    finally:
        engine.stop()


def test_progress_comes_in_replies(tmp_path, launcher, monkeypatch):
    monkeypatch.setenv("PATH", standin_env()["PATH"])
    engine = standin_engine(tmp_path, launcher)
    out = tmp_path / "out"
    out.mkdir()
    clip = make_video(tmp_path / "clip.mp4", frames=20)
    seen: list[int] = []
    try:
        reply = engine.analyse(
            {"id": "v", "mode": "video", "input": str(clip), "out_dir": str(out), "flags": []}, 10, seen.append
        )
    finally:
        engine.stop()
    assert reply.status == "ok" and seen == list(range(0, 101, 10))


def test_an_engine_dies_with_its_worker(tmp_path):
    """The worker is killed outright: its engines do not run on for nobody."""
    log = tmp_path / "openface.jsonl"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from analysis.openface.engine import EnginePool\n"
        "from analysis.openface.runner import TimeLimits\n"
        "from analysis.openface.sandbox import Sandbox\n"
        f"pool = EnginePool(Path({str(STANDIN_BIN_DIR)!r}), TimeLimits(60, 0), 2,\n"
        f"                  Sandbox.create(None, {STANDIN_KNOBS!r}), Path({str(tmp_path)!r}))\n"
        "pool.start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**standin_env(), "OPENFACE_STANDIN_LOG": str(log), "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert worker.stdout.readline().strip() == "ready"
        pids = [event["pid"] for event in events(log, "ready")]
        assert len(pids) == 2
        worker.kill()
        worker.wait()
        for pid in pids:
            wait_until(f"engine {pid} dies with its worker", lambda: not _running(pid), timeout=10)
    finally:
        worker.kill()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_pool_runs_each_media_on_a_free_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", standin_env()["PATH"])
    log = tmp_path / "openface.jsonl"
    monkeypatch.setenv("OPENFACE_STANDIN_LOG", str(log))
    out = tmp_path / "out"
    out.mkdir()
    pool = EnginePool(STANDIN_BIN_DIR, TimeLimits(60, 0), 2, Sandbox.create(None, STANDIN_KNOBS), tmp_path)
    pool.start()
    files = [MediaFile(f"m{i:05d}", make_face_image(tmp_path / f"m{i:05d}.jpg", seconds=0.3)) for i in range(4)]
    handed = []
    try:
        results = pool.run(Media.IMAGE, files, out, ["-2Dfp"], on_result=handed.append)
    finally:
        pool.stop()
    assert [r.key for r in results] == [f.key for f in files]
    assert all(r.outcome is Outcome.ANALYSED and r.analysed_by == "engine" for r in results)
    assert sorted(r.key for r in handed) == [f.key for f in files]
    assert {event["pid"] for event in events(log, "request")} == {event["pid"] for event in events(log, "ready")}
    assert len(events(log, "ready")) == 2  # both engines took part


def test_an_engine_that_never_says_it_is_ready_is_an_error(tmp_path, launcher, monkeypatch):
    monkeypatch.setenv("PATH", standin_env()["PATH"])
    monkeypatch.setenv("OPENFACE_STANDIN_EXIT", "3")
    engine = Engine(
        STANDIN_BIN_DIR / "openface-engine", STANDIN_BIN_DIR, Sandbox.create(None, STANDIN_KNOBS), tmp_path, 1, launcher
    )
    with pytest.raises(EngineError, match="did not start"):
        engine.start()


# What an engine's answer means: judged without a process.
@pytest.mark.parametrize(
    ("answer", "outcome", "reason", "replaced"),
    [
        (TimeoutError(60), Outcome.FAILED, "time limit", True),
        (EngineError("openface-engine exited with code -9: ..."), Outcome.CRASHED, "exited with code -9", True),
        (EngineError("terminate called after throwing 'std::bad_alloc'"), Outcome.FAILED, "out of memory", True),
        (Reply("error", [], message="Insufficient memory (OpenCV)"), Outcome.FAILED, "out of memory", True),
        (Reply("error", [], message="no landmarks model"), Outcome.FAILED, "no landmarks model", False),
        (Reply("unreadable", []), Outcome.UNREADABLE, "could not open", False),
        (Reply("ok", []), Outcome.UNREADABLE, "could not open", False),  # ok, but no CSV written
    ],
)
def test_an_engine_answer_is_judged(tmp_path, answer, outcome, reason, replaced):
    item = MediaFile("m00001", tmp_path / "m00001.mp4")
    result, why_replace = judge(Media.VIDEO, item, tmp_path, 60, answer)
    assert (result.key, result.outcome, result.analysed_by) == ("m00001", outcome, "engine")
    assert reason in result.reason
    assert (why_replace is not None) == replaced


def test_an_engine_answer_with_its_csv_is_analysed(tmp_path):
    item = MediaFile("m00001", tmp_path / "m00001.jpg")
    (tmp_path / "m00001.csv").write_text("face, confidence, success\n0, 0.98, 1\n")
    result, why_replace = judge(Media.IMAGE, item, tmp_path, 60, Reply("ok", ["m00001.csv"], faces=1))
    assert result.outcome is Outcome.ANALYSED and result.csv == tmp_path / "m00001.csv"
    assert why_replace is None
