"""The runner against the stand-in, which reproduces OpenFace's exit codes and files."""

import json
import os
import signal
import threading
import time

import pytest

from analysis.config import missing_executables
from analysis.openface.results import MediaFile, OpenFaceCancelled, Outcome, TimeLimits
from analysis.openface.runner import OpenFaceRunner
from analysis.openface.sandbox import Sandbox
from analysis.openface.schedule import split
from analysis.options import OUTPUT_FLAGS
from harness import STANDIN_BIN_DIR, STANDIN_KNOBS
from media_rules import Media
from openface_standin.media import make_corrupt_video, make_face_image, make_flat_image, make_video


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    return tmp_path / "in", tmp_path / "out"


@pytest.fixture
def runs(monkeypatch, tmp_path):
    """Each stand-in invocation, as the argv it got."""
    log = tmp_path / "invocations.jsonl"
    monkeypatch.setenv("OPENFACE_STANDIN_LOG", str(log))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def runner(base_seconds=60, seconds_per_mb=0, processes=1):
    return OpenFaceRunner(
        STANDIN_BIN_DIR, TimeLimits(base_seconds, seconds_per_mb), processes, Sandbox.create(None, STANDIN_KNOBS)
    )


def test_binaries_are_found():
    assert missing_executables(STANDIN_BIN_DIR) == []


def test_all_images_go_through_one_run(dirs, runs):
    in_dir, out_dir = dirs
    files = [MediaFile(f"m{i}", make_face_image(in_dir / f"m{i}.jpg", faces=i + 1)) for i in range(3)]
    results = runner().run(Media.IMAGE, files, out_dir, [*OUTPUT_FLAGS, "-wild"])
    assert [r.outcome for r in results] == [Outcome.ANALYSED] * 3
    assert [r.csv.name for r in results] == ["m0.csv", "m1.csv", "m2.csv"]
    assert len(results[2].csv.read_text().splitlines()) == 4  # header and three faces
    (run,) = runs()
    assert run["args"].count("-f") == 3 and "-wild" in run["args"]


def test_no_face_image_has_details_but_no_csv(dirs):
    in_dir, out_dir = dirs
    (result,) = runner().run(Media.IMAGE, [MediaFile("m0", make_flat_image(in_dir / "m0.png"))], out_dir, [])
    assert result.outcome is Outcome.NO_FACE and result.csv is None and result.details.is_file()


def test_unreadable_image_is_isolated_and_the_rest_analysed(dirs, runs):
    in_dir, out_dir = dirs
    files = [
        MediaFile("m0", make_face_image(in_dir / "m0.jpg")),
        MediaFile("m1", in_dir / "m1.jpg"),
        MediaFile("m2", make_face_image(in_dir / "m2.jpg")),
        MediaFile("m3", in_dir / "m3.png"),
    ]
    files[1].path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    files[3].path.write_bytes(b"")
    results = runner().run(Media.IMAGE, files, out_dir, [])
    assert [r.outcome for r in results] == [Outcome.ANALYSED, Outcome.UNREADABLE, Outcome.ANALYSED, Outcome.UNREADABLE]
    assert "could not open the image" in results[1].reason
    assert len(runs()) == 2  # stopped at m1; the rerun of m2, m3 stopped at m3, the last


def test_unreadable_video_does_not_hide_the_others(dirs):
    in_dir, out_dir = dirs
    files = [
        MediaFile("m0", make_corrupt_video(in_dir / "m0.mp4")),
        MediaFile("m1", make_video(in_dir / "m1.mp4", frames=5)),
        MediaFile("m2", make_video(in_dir / "m2.mp4", frames=3, faces=0)),
    ]
    results = runner().run(Media.VIDEO, files, out_dir, list(OUTPUT_FLAGS))
    assert [r.outcome for r in results] == [Outcome.UNREADABLE, Outcome.ANALYSED, Outcome.ANALYSED]
    assert len(results[1].csv.read_text().splitlines()) == 6
    # Only the CSV and details: the selection flags skip HOG, aligned faces and video.
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("console")) == [
        "m1.csv",
        "m1_of_details.txt",
        "m2.csv",
        "m2_of_details.txt",
    ]


def test_crash_is_reported_per_file_with_the_log_tail(dirs, monkeypatch):
    in_dir, out_dir = dirs
    monkeypatch.setenv("OPENFACE_STANDIN_EXIT", "3")
    files = [MediaFile(f"m{i}", make_face_image(in_dir / f"m{i}.jpg")) for i in range(2)]
    results = runner().run(Media.IMAGE, files, out_dir, [])
    assert [r.outcome for r in results] == [Outcome.CRASHED, Outcome.CRASHED]
    assert results[0].reason.startswith("OpenFace exited with code 3: ") and "simulated failure" in results[0].reason


def test_killed_by_signal_is_a_crash(dirs, monkeypatch):
    in_dir, out_dir = dirs
    monkeypatch.setenv("OPENFACE_STANDIN_EXIT", "-11")
    (result,) = runner().run(Media.VIDEO, [MediaFile("m0", make_video(in_dir / "m0.mp4", frames=2))], out_dir, [])
    assert result.outcome is Outcome.CRASHED and "code -11" in result.reason


def test_what_was_finished_before_a_crash_stands(dirs, runs):
    """Killed while on the second video: the first is complete, the second and third are not."""
    in_dir, out_dir = dirs
    files = [
        MediaFile("m0", make_video(in_dir / "m0.mp4", frames=3)),
        MediaFile("m1", make_video(in_dir / "m1.mp4", frames=3, seconds=30)),
        MediaFile("m2", make_video(in_dir / "m2.mp4", frames=3)),
    ]
    killer = threading.Thread(target=kill_when_started, args=(runs, out_dir / "m1_of_details.txt"))
    killer.start()
    results = runner().run(Media.VIDEO, files, out_dir, list(OUTPUT_FLAGS))
    killer.join()
    assert [r.outcome for r in results] == [Outcome.ANALYSED, Outcome.CRASHED, Outcome.CRASHED]
    assert "code -9" in results[1].reason


def kill_when_started(runs, details):
    """SIGKILL the stand-in (its pid is in its invocation log) once ``details`` exists."""
    deadline = time.monotonic() + 30
    while not (details.exists() and runs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(runs()[-1]["pid"], signal.SIGKILL)


@pytest.mark.parametrize(
    "media,sizes,processes,shares",
    [
        (Media.IMAGE, [10] * 3, 2, 1),  # too few images to pay for a second model load
        (Media.IMAGE, [10] * 8, 2, 2),
        (Media.IMAGE, [10] * 30, 4, 4),
        (Media.IMAGE, [10] * 30, 1, 1),
        (Media.VIDEO, [10, 1000], 2, 2),  # each video in its own process
        (Media.VIDEO, [10, 20, 1000], 2, 2),
    ],
)
def test_split_shares_work_where_a_process_pays(tmp_path, media, sizes, processes, shares):
    files = []
    for index, size in enumerate(sizes):
        path = tmp_path / f"m{index}"
        path.write_bytes(bytes(size))
        files.append(MediaFile(f"m{index}", path))
    result = split(media, files, processes)
    assert len(result) == shares
    assert sorted(f.key for share in result for f in share) == sorted(f.key for f in files)
    if media is Media.VIDEO and len(sizes) == 3:
        assert [f.key for f in max(result, key=len)] == ["m0", "m1"]  # the large one alone, the rest in order


def test_parallel_processes_cover_every_file(dirs, runs):
    in_dir, out_dir = dirs
    files = [MediaFile(f"m{i}", make_face_image(in_dir / f"m{i}.jpg", faces=1 + i % 2)) for i in range(9)]
    results = runner(processes=2).run(Media.IMAGE, files, out_dir, [])
    assert [r.key for r in results] == [f.key for f in files]
    assert all(r.outcome is Outcome.ANALYSED for r in results)
    assert sorted(run["args"].count("-f") for run in runs()) == [4, 5]


def test_a_media_over_its_time_limit_fails_alone(dirs, runs):
    in_dir, out_dir = dirs
    files = [
        MediaFile("m0", make_video(in_dir / "m0.mp4", frames=3)),
        MediaFile("m1", make_video(in_dir / "m1.mp4", frames=3, seconds=60)),
        MediaFile("m2", make_video(in_dir / "m2.mp4", frames=4)),
    ]
    started = time.monotonic()
    results = runner(base_seconds=2).run(Media.VIDEO, files, out_dir, list(OUTPUT_FLAGS))
    assert time.monotonic() - started < 30  # the stuck stand-in was killed, not waited for
    assert [r.outcome for r in results] == [Outcome.ANALYSED, Outcome.FAILED, Outcome.ANALYSED]
    assert "within 2 s" in results[1].reason and "OPENFACE_TIMEOUT_SECONDS" in results[1].reason
    assert len(results[2].csv.read_text().splitlines()) == 5
    assert [run["args"].count("-f") for run in runs()] == [3, 1]  # the rest ran again without m1


def test_time_limit_scales_with_the_media_size(tmp_path):
    small, large = tmp_path / "small.mp4", tmp_path / "large.mp4"
    small.write_bytes(bytes(1000))
    large.write_bytes(bytes(3_000_000))
    limits = TimeLimits(base_seconds=10, seconds_per_mb=5)
    assert limits.for_file(MediaFile("s", small)) == pytest.approx(10.005)
    assert limits.for_file(MediaFile("l", large)) == pytest.approx(25)


def test_time_limit_has_a_cap_and_ends_with_the_jobs_time(tmp_path):
    huge = tmp_path / "huge.mp4"
    huge.write_bytes(bytes(3_000_000))
    capped = TimeLimits(base_seconds=10, seconds_per_mb=5, max_seconds=12)
    assert capped.for_file(MediaFile("h", huge)) == 12
    soon = MediaFile("h", huge, deadline=time.monotonic() + 3)
    assert 2 < capped.for_file(soon) <= 3
    assert capped.for_file(MediaFile("h", huge, deadline=time.monotonic() - 1)) == 0


def test_cancel_stops_the_run(dirs, monkeypatch):
    in_dir, out_dir = dirs
    monkeypatch.setenv("OPENFACE_STANDIN_SLEEP", "60")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(OpenFaceCancelled):
        runner().run(Media.IMAGE, [MediaFile("m0", make_face_image(in_dir / "m0.jpg"))], out_dir, [], cancel)


def test_each_result_is_handed_on_as_soon_as_it_is_final(dirs):
    """m0 is handed on while OpenFace still works on m1 (it has not reached m2); each result once."""
    in_dir, out_dir = dirs
    files = [
        MediaFile("m0", make_face_image(in_dir / "m0.jpg")),
        MediaFile("m1", make_face_image(in_dir / "m1.jpg", seconds=3)),
        MediaFile("m2", make_face_image(in_dir / "m2.jpg")),
    ]
    handed_on = []

    def on_result(result):
        handed_on.append((result.key, (out_dir / "m2_of_details.txt").exists()))

    results = runner().run(Media.IMAGE, files, out_dir, [], on_result=on_result)
    assert [r.outcome for r in results] == [Outcome.ANALYSED] * 3
    assert sorted(key for key, _ in handed_on) == ["m0", "m1", "m2"]
    assert ("m0", False) in handed_on  # before OpenFace had started on m2
