"""bin/analyse against the real service (gunicorn and a worker with the OpenFace stand-in) on Azurite."""

from __future__ import annotations

import re
import subprocess

import pytest

from harness import ROOT, free_port, process_env
from openface_standin.media import make_face_image, make_flat_image, make_video

ANALYSE = ROOT / "bin" / "analyse"


def analyse(service, cwd, *args, **env) -> subprocess.CompletedProcess:
    settings = dict(
        SERVICE_URL=service.url,
        SERVICE_API_KEY=service.api_key,
        AZURE_STORAGE_CONNECTION_STRING=service.connection_string,
    )
    return subprocess.run(
        [str(ANALYSE), *map(str, args)],
        env=process_env(**{**settings, **env}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def service(service_factory):
    return service_factory()


def test_options_reach_the_job_and_a_videos_percent_is_shown_while_it_runs(service, tmp_path):
    make_video(tmp_path / "slow.mp4", frames=40, faces=2, seconds=10)
    done = analyse(
        service, tmp_path, "analyse", "slow.mp4", "--faces", "multi", "--outputs", "hog", "--download", "out"
    )
    assert done.returncode == 0, done.stderr
    percents = [int(p) for p in re.findall(r"slow\.mp4 (\d+)%", done.stderr)]
    assert percents and all(0 <= p < 100 for p in percents), done.stderr
    assert "0/1 media done" in done.stderr
    assert (tmp_path / "out" / "_options" / "multi-hog" / "slow.hog").is_file()


def test_analyse_uploads_waits_and_downloads(service, tmp_path):
    make_face_image(tmp_path / "face.jpg")
    make_flat_image(tmp_path / "grey.png")
    done = analyse(service, tmp_path, "analyse", "face.jpg", "grey.png", "--download", "out")
    assert done.returncode == 0, done.stderr
    assert re.search(r"face\.jpg\s+\S\s+analysed", done.stdout) and re.search(r"grey\.png\s+\S\s+no_face", done.stdout)
    assert "succeeded" in done.stderr  # the job's states, as they came
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_jobs",
        "face.csv",
        "face.summary.json",
        "face_of_details.txt",
        "grey.summary.json",
        "grey_of_details.txt",
    ]


def test_submit_then_wait_then_download(service, tmp_path):
    make_video(tmp_path / "clip.mp4", frames=5)
    submitted = analyse(service, tmp_path, "submit", "clip.mp4", "--wild")
    assert submitted.returncode == 0, submitted.stderr
    container, job_id = re.fullmatch(r"container (\S+): job (\w+) queued\n", submitted.stdout).groups()
    assert service.job(job_id)["media"] == "video" and service.job(job_id)["media_type"] == "wild"

    waited = analyse(service, tmp_path, "wait", job_id)
    assert waited.returncode == 0 and re.search(r"clip\.mp4\s+\S\s+analysed", waited.stdout), waited.stderr
    fetched = analyse(service, tmp_path, "download", container, "results")
    assert fetched.returncode == 0 and (tmp_path / "results" / "_options" / "wild" / "clip.csv").is_file()


def test_a_failed_media_makes_the_exit_code_1(service_factory, tmp_path):
    service = service_factory(OPENFACE_TIMEOUT_SECONDS="1", OPENFACE_TIMEOUT_SECONDS_PER_MB="0")
    make_face_image(tmp_path / "slow.jpg", seconds=30)
    done = analyse(service, tmp_path, "analyse", "slow.jpg")
    assert done.returncode == 1
    assert re.search(r"slow\.jpg\s+\S\s+failed", done.stdout)


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["analyse", "face.jpg"], {"SERVICE_API_KEY": "not-the-key"}, "refused the API key (401)"),
        (["wait", "0" * 32], {"SERVICE_URL": None}, "no service answers at http://127.0.0.1:"),
        (["submit", "missing.jpg"], {}, "no such file: missing.jpg"),
        (["submit", "face.jpg", "clip.mp4"], {}, "the files are images and videos"),
        (["submit", "face.jpg", "--container", "Not_A_Name"], {}, "container name must be"),
        (["wait", "0" * 32], {}, "HTTP 404: no job with id"),
    ],
)
def test_errors_are_one_line_and_exit_2(service, tmp_path, args, env, message):
    make_face_image(tmp_path / "face.jpg")
    make_video(tmp_path / "clip.mp4", frames=2)
    if "SERVICE_URL" in env:
        env = {"SERVICE_URL": f"http://127.0.0.1:{free_port()}"}
    done = analyse(service, tmp_path, *args, **env)
    assert done.returncode == 2
    assert done.stderr.startswith("analyse: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
