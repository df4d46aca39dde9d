"""Jobs from the route through the worker to result blobs, one outcome per test.

The worker runs in this process (``run(burst=True)``) so each test can set
its own limits; ``test_full_flow.py`` runs it as a real separate process.
"""

import io
import json
import tempfile
import threading
import time
import zipfile

import pytest
from azure.storage.queue import QueueClient

from analysis.backends import Backends
from analysis.job import JobStore
from analysis.names import job_manifest_name, job_table_name
from analysis.openface.runner import OpenFaceRunner
from analysis.storage import MediaStore
from analysis.worker.batch import Batch
from analysis.worker.loop import Worker
from openface_standin.media import (
    make_corrupt_video,
    make_face_image,
    make_flat_image,
    make_png_header,
    make_video,
)


@pytest.fixture
def work_dir(tmp_path, monkeypatch):
    """The worker's temp root, to check nothing is left behind."""
    root = tmp_path / "worker-tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    assert list(root.iterdir()) == [], "the job left temp files behind"


@pytest.fixture
def run_job(client, settings, work_dir):
    """POST the analysis, then let a worker process the queue until it is empty."""

    def run(container, media="image", media_type="ip", query=None, **overrides):
        response = client.post(f"/analyse/{media}/{media_type}/{container.container_name}", query_string=query)
        assert response.status_code == 202, response.json
        job_settings = settings.model_copy(update=overrides)
        worker = Worker(job_settings, Backends(job_settings), OpenFaceRunner.from_settings(job_settings))
        worker.run(burst=True)
        return client.get(response.json["status_url"]).json

    return run


def upload_file(container, name, path, **kwargs):
    with open(path, "rb") as handle:
        container.upload_blob(name, handle, overwrite=True, **kwargs)


def read_json(container, name):
    return json.loads(container.download_blob(name).readall())


def test_images_are_analysed_together_with_outputs_and_metadata(run_job, container, tmp_path, monkeypatch):
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("OPENFACE_STANDIN_LOG", str(log))
    upload_file(container, "face.jpg", make_face_image(tmp_path / "a.jpg"))
    upload_file(container, "group/three faces.png", make_face_image(tmp_path / "b.png", faces=3))
    job = run_job(container, media_type="wild")

    assert job["status"] == "succeeded" and job["error"] is None and job["attempts"] == 1
    assert len(log.read_text().splitlines()) == 1  # one OpenFace run for the whole job
    assert "-wild" in json.loads(log.read_text())["args"]
    names = {b.name for b in container.list_blobs(name_starts_with="processed/")}
    wild = "processed/_options/wild/"  # results of options other than the defaults have a folder of their own
    assert {
        wild + "face.csv",
        wild + "face_of_details.txt",
        wild + "face.summary.json",
        wild + "group/three faces.csv",
        wild + "group/three faces.summary.json",
        job_manifest_name(job["job_id"]),
        job_table_name(job["job_id"]),
    } <= names
    assert set(job["outputs"]) == names

    csv = container.download_blob(wild + "group/three faces.csv").readall().decode()
    assert csv.startswith("face, confidence, gaze_0_x, ")
    assert len(csv.splitlines()) == 4
    summary = read_json(container, wild + "group/three faces.summary.json")
    assert summary["status"] == "analysed" and summary["summary"]["faces"] == 3
    assert summary["source_blob"] == "group/three faces.png" and summary["media_type"] == "iw"
    metadata = container.get_blob_client(wild + "face.csv").get_blob_properties().metadata
    source_etag = container.get_blob_client("face.jpg").get_blob_properties().etag.strip('"')
    assert metadata["job_id"] == job["job_id"] and metadata["source_etag"] == source_etag
    assert "-wild" in metadata["openface_options"] and metadata["media_type"] == "wild"
    assert metadata["faces"] == "single" and metadata["extra_outputs"] == ""
    details = container.download_blob(wild + "face_of_details.txt").readall().decode()
    assert details.startswith(f"Input:face.jpg\nInput full path:{container.container_name}/face.jpg\n")
    assert f"Output csv:{wild}face.csv" in details and "openface-job-" not in details

    # One table of every face of the job: the per-image CSVs, each row led by its source blob.
    table = container.download_blob(job_table_name(job["job_id"])).readall().decode().splitlines()
    assert table[0] == "source_blob, " + csv.splitlines()[0]
    face_rows = container.download_blob(wild + "face.csv").readall().decode().splitlines()[1:]
    assert table[1:] == [f"face.jpg, {row}" for row in face_rows] + [
        f"group/three faces.png, {row}" for row in csv.splitlines()[1:]
    ]
    manifest = read_json(container, job_manifest_name(job["job_id"]))
    assert manifest["status"] == "succeeded" and manifest["summary"]["by_status"] == {"analysed": 2}


def test_video_job(run_job, container, tmp_path):
    upload_file(container, "clip.mp4", make_video(tmp_path / "c.mp4", frames=12))
    upload_file(container, "face.jpg", make_face_image(tmp_path / "a.jpg"))  # not this job's kind
    job = run_job(container, media="video")
    assert job["status"] == "succeeded"
    summary = read_json(container, "processed/clip.summary.json")["summary"]
    assert summary["frames"] == 12 and summary["success_rate"] == 1.0
    assert len(container.download_blob("processed/clip.csv").readall().splitlines()) == 13
    skipped = [r for r in job["results"] if r["status"] == "skipped"]
    reason = "not video content (its content is an image; image jobs analyse it)"
    assert skipped == [{"blob": "face.jpg", "status": "skipped", "reason": reason, "outputs": []}]


def test_image_without_a_face(run_job, container, tmp_path):
    upload_file(container, "grey.png", make_flat_image(tmp_path / "g.png"))
    job = run_job(container)
    assert job["status"] == "succeeded"
    summary = read_json(container, "processed/grey.summary.json")
    assert summary["status"] == "no_face" and summary["reason"] == "OpenFace found no face"
    names = {b.name for b in container.list_blobs(name_starts_with="processed/grey")}
    assert names == {"processed/grey_of_details.txt", "processed/grey.summary.json"}


def test_video_without_a_face(run_job, container, tmp_path):
    upload_file(container, "empty-room.mp4", make_video(tmp_path / "v.mp4", frames=4, faces=0))
    run_job(container, media="video")
    summary = read_json(container, "processed/empty-room.summary.json")
    assert summary["status"] == "no_face" and summary["summary"]["frames"] == 4


def test_video_openface_cannot_open(run_job, container, tmp_path):
    upload_file(container, "broken.mp4", make_corrupt_video(tmp_path / "b.mp4"))
    upload_file(container, "good.mp4", make_video(tmp_path / "g.mp4", frames=3))
    job = run_job(container, media="video")
    assert job["status"] == "succeeded"
    broken = read_json(container, "processed/broken.summary.json")
    assert broken["status"] == "unreadable" and "could not open the video" in broken["reason"]
    assert read_json(container, "processed/good.summary.json")["status"] == "analysed"
    assert not container.get_blob_client("processed/broken.csv").exists()


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("empty.jpg", b"", "the file is empty"),
        ("notes.jpg", b"just some text, named like a picture", "not an image format"),
    ],
)
def test_empty_or_non_media_file_named_as_media(run_job, container, name, data, reason):
    container.upload_blob(name, data)
    job = run_job(container)
    summary = read_json(container, f"processed/{name.rsplit('.', 1)[0]}.summary.json")
    assert summary["status"] == "unreadable" and reason in summary["reason"]
    assert job["status"] == "succeeded"


@pytest.mark.parametrize("setup", ["empty", "only_other_files"])
def test_container_without_media_fails_with_a_result_blob(run_job, container, setup):
    if setup == "only_other_files":
        container.upload_blob("readme.txt", b"hello")
        container.upload_blob("processed/old.csv", b"face, confidence\n")
    job = run_job(container)
    assert job["status"] == "failed" and "no image found" in job["error"]
    manifest = read_json(container, job_manifest_name(job["job_id"]))
    assert manifest["status"] == "failed" and manifest["error"] == job["error"]


def test_file_over_the_size_limit_is_not_downloaded(run_job, container, tmp_path):
    upload_file(container, "big.jpg", make_face_image(tmp_path / "big.jpg", size=(640, 480)))
    upload_file(container, "small.jpg", make_face_image(tmp_path / "small.jpg", size=(32, 24)))
    limit = container.get_blob_client("small.jpg").get_blob_properties().size
    job = run_job(container, max_blob_bytes=limit)
    assert read_json(container, "processed/big.summary.json")["status"] == "too_large"
    assert "MAX_BLOB_BYTES" in read_json(container, "processed/big.summary.json")["reason"]
    assert read_json(container, "processed/small.summary.json")["status"] == "analysed"
    assert job["summary"]["by_status"] == {"too_large": 1, "analysed": 1}


def test_a_small_media_is_read_once_and_a_large_one_judged_by_its_head(run_job, container, tmp_path, monkeypatch):
    upload_file(container, "small.jpg", make_face_image(tmp_path / "small.jpg", size=(32, 24)))
    upload_file(container, "clip.mp4", make_video(tmp_path / "clip.mp4", frames=3))
    heads, downloads = [], []
    real_head, real_download = MediaStore.read_head, MediaStore.download
    monkeypatch.setattr(
        MediaStore, "read_head", lambda self, c, blob, n: heads.append(blob.name) or real_head(self, c, blob, n)
    )
    monkeypatch.setattr(
        MediaStore,
        "download",
        lambda self, c, blob, dest: downloads.append(blob.name) or real_download(self, c, blob, dest),
    )
    assert run_job(container)["summary"]["by_status"] == {"analysed": 1, "skipped": 1}
    assert (heads, sorted(downloads)) == ([], ["clip.mp4", "small.jpg"])  # the video is judged too: not an image
    heads.clear(), downloads.clear()
    monkeypatch.setattr("analysis.worker.batch.READ_WHOLE_BYTES", 100)  # both over it now
    assert run_job(container, media="video")["summary"]["by_status"] == {"analysed": 1, "skipped": 1}
    assert (sorted(heads), downloads) == (["clip.mp4", "small.jpg"], ["clip.mp4"])


def test_a_first_delivery_claims_its_job_without_reading_the_record(
    client, container, settings, tmp_path, monkeypatch, work_dir
):
    upload_file(container, "face.jpg", make_face_image(tmp_path / "face.jpg"))
    job_id = client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"]
    reads = []
    real_get = JobStore.get
    monkeypatch.setattr(JobStore, "get", lambda self, wanted: reads.append(wanted) or real_get(self, wanted))
    Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings)).run(burst=True)
    assert reads == []
    done = client.get(f"/jobs/{job_id}").json
    assert done["status"] == "succeeded"
    # A later delivery reads the record: the one it carries is out of date, and the job is done.
    reads.clear()
    queue = Backends(settings).queue
    queue.enqueue(job_id, {"record": {**done, "status": "queued"}, "etag": "0x0"})
    queue.release(*queue.receive(1, visibility_seconds=30))  # its first delivery came to nothing
    Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings)).run(burst=True)
    assert reads == [job_id] and client.get(f"/jobs/{job_id}").json["attempts"] == 1


def test_a_job_whose_results_could_not_be_published_is_tried_again(run_job, container, tmp_path, monkeypatch):
    upload_file(container, "face.jpg", make_face_image(tmp_path / "face.jpg"))
    monkeypatch.setattr("analysis.worker.lifecycle.retry_delay_seconds", lambda attempt: 0)
    real_publish, calls = Batch._publish, []

    def fail_once(self, *args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug while publishing")
        return real_publish(self, *args)

    monkeypatch.setattr(Batch, "_publish", fail_once)
    job = run_job(container)
    assert job["status"] == "succeeded" and job["attempts"] == 2 and len(calls) == 2


def test_odd_blob_names(run_job, container, tmp_path):
    face = make_face_image(tmp_path / "f.jpg")
    safe = ["ünïcødé näme.jpg", "with;semicolon&$(echo).jpg", "a.b.c.jpg", "deep/er/path/x.jpg"]
    unsafe = ["a//b.jpg", "tab\there.jpg"]  # storage accepts these; we do not
    for name in safe + unsafe:
        upload_file(container, name, face)
    job = run_job(container)
    by_blob = {r["blob"]: r["status"] for r in job["results"]}
    assert by_blob == {**{name: "analysed" for name in safe}, **{name: "skipped" for name in unsafe}}
    assert container.get_blob_client("processed/with;semicolon&$(echo).csv").exists()
    assert container.get_blob_client("processed/deep/er/path/x.csv").exists()
    metadata = container.get_blob_client("processed/ünïcødé näme.csv").get_blob_properties().metadata
    assert metadata["source_blob"] == "%C3%BCn%C3%AFc%C3%B8d%C3%A9 n%C3%A4me.jpg"


def test_a_media_over_its_time_limit_fails_and_the_others_are_analysed(run_job, container, tmp_path):
    upload_file(container, "slow.jpg", make_face_image(tmp_path / "s.jpg", seconds=60))
    upload_file(container, "quick.jpg", make_face_image(tmp_path / "q.jpg"))
    job = run_job(container, openface_timeout_seconds=2, openface_timeout_seconds_per_mb=0)
    assert job["status"] == "succeeded" and job["attempts"] == 1  # not retried: it would overrun again
    assert job["summary"]["by_status"] == {"analysed": 1, "failed": 1}
    summary = read_json(container, "processed/slow.summary.json")
    assert summary["status"] == "failed" and "within 2 s" in summary["reason"]
    assert read_json(container, "processed/quick.summary.json")["status"] == "analysed"


def test_crash_is_retried_then_poisoned(run_job, container, tmp_path, monkeypatch, settings):
    monkeypatch.setenv("OPENFACE_STANDIN_EXIT", "139")
    upload_file(container, "face.jpg", make_face_image(tmp_path / "f.jpg"))
    # Each retry is delayed by the queue; zero visibility lets this test run them at once.
    monkeypatch.setattr("analysis.worker.lifecycle.retry_delay_seconds", lambda attempt: 0)
    job = run_job(container, max_attempts=2)
    assert job["status"] == "failed" and job["attempts"] == 2
    assert job["error"].startswith("gave up after 2 attempts: OpenFace exited with code 139")
    assert read_json(container, "processed/face.summary.json")["status"] == "failed"
    poison = QueueClient.from_connection_string(settings.azure_storage_connection_string, settings.poison_queue_name)
    (message,) = poison.receive_messages()
    assert json.loads(message.content)["job_id"] == job["job_id"]


def test_crash_then_success_on_retry(run_job, container, tmp_path, monkeypatch):
    upload_file(container, "face.jpg", make_face_image(tmp_path / "f.jpg"))
    calls = []
    real_run = OpenFaceRunner.run

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            monkeypatch.setenv("OPENFACE_STANDIN_EXIT", "1")
        else:
            monkeypatch.delenv("OPENFACE_STANDIN_EXIT")
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(OpenFaceRunner, "run", flaky)
    monkeypatch.setattr("analysis.worker.lifecycle.retry_delay_seconds", lambda attempt: 0)
    job = run_job(container)
    assert job["status"] == "succeeded" and job["attempts"] == 2 and len(calls) == 2


def test_duplicate_message_does_no_work_twice(run_job, container, tmp_path, settings, monkeypatch):
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("OPENFACE_STANDIN_LOG", str(log))
    upload_file(container, "face.jpg", make_face_image(tmp_path / "f.jpg"))
    job = run_job(container)
    Backends(settings).queue.enqueue(job["job_id"])  # the queue delivers at least once
    Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings)).run(burst=True)
    assert len(log.read_text().splitlines()) == 1


def test_container_deleted_before_the_worker_ran(client, container, settings, tmp_path, work_dir):
    upload_file(container, "face.jpg", make_face_image(tmp_path / "f.jpg"))
    job_id = client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"]
    container.delete_container()
    Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings)).run(burst=True)
    job = client.get(f"/jobs/{job_id}").json
    assert job["status"] == "failed" and "no longer exists" in job["error"]


def test_heartbeat_keeps_a_long_job_invisible(client, container, settings, tmp_path, monkeypatch, work_dir):
    """A job that outlives the visibility timeout is still done once, by one worker."""
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("OPENFACE_STANDIN_LOG", str(log))
    monkeypatch.setenv("OPENFACE_STANDIN_SLEEP", "14")  # longer than the 10 s visibility
    upload_file(container, "face.jpg", make_face_image(tmp_path / "f.jpg"))
    job_id = client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"]
    first = Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings))
    thread = threading.Thread(target=first.run, kwargs={"burst": True})
    thread.start()
    second = Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings))
    second_thread = threading.Thread(target=second.run)
    second_thread.start()
    thread.join(60)
    second.request_stop()
    second_thread.join(60)
    assert client.get(f"/jobs/{job_id}").json["status"] == "succeeded"
    assert len(log.read_text().splitlines()) == 1


def test_shutdown_hands_the_job_back(client, container, settings, tmp_path, monkeypatch, work_dir):
    monkeypatch.setenv("OPENFACE_STANDIN_SLEEP", "60")
    upload_file(container, "face.jpg", make_face_image(tmp_path / "f.jpg"))
    job_id = client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"]
    worker = Worker(
        settings.model_copy(update={"worker_shutdown_grace_seconds": 1}),
        Backends(settings),
        OpenFaceRunner.from_settings(settings),
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = threading.Event()
    while client.get(f"/jobs/{job_id}").json["status"] != "running" and not deadline.wait(0.1):
        pass
    worker.request_stop()
    thread.join(30)
    assert not thread.is_alive()
    job = client.get(f"/jobs/{job_id}").json
    # A hand-back is no failure: it spends no attempt, however often a rollout hands a job back.
    assert job["status"] == "queued" and "handed back" in job["error"] and job["attempts"] == 0
    # The message is visible again at once, for the next worker.
    monkeypatch.delenv("OPENFACE_STANDIN_SLEEP")
    Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings)).run(burst=True)
    job = client.get(f"/jobs/{job_id}").json
    assert job["status"] == "succeeded" and job["attempts"] == 1


def test_overlapping_jobs_analyse_each_blob_version_once(run_job, container, tmp_path, monkeypatch):
    """Each upload starts a job over the whole container; earlier results are reused."""
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("OPENFACE_STANDIN_LOG", str(log))
    upload_file(container, "first.jpg", make_face_image(tmp_path / "a.jpg"))
    run_job(container)
    upload_file(container, "second.jpg", make_face_image(tmp_path / "b.jpg"))
    job = run_job(container)
    by_blob = {r["blob"]: r for r in job["results"]}
    assert by_blob["first.jpg"]["status"] == "analysed"
    assert by_blob["first.jpg"]["reason"].startswith("already analysed by job ")
    assert "processed/first.csv" in job["outputs"]
    runs = [json.loads(line)["args"] for line in log.read_text().splitlines()]
    assert [run.count("-f") for run in runs] == [1, 1]  # the second run had only second.jpg
    # A new version of a blob is analysed again.
    upload_file(container, "first.jpg", make_face_image(tmp_path / "c.jpg", faces=2))
    run_job(container)
    assert json.loads(container.download_blob("processed/first.summary.json").readall())["summary"]["faces"] == 2


def test_only_a_container_that_held_results_is_searched_for_them(run_job, container, tmp_path, monkeypatch):
    looks = []
    listing, one = MediaStore.metadata_under, MediaStore.metadata_of
    monkeypatch.setattr(
        MediaStore, "metadata_under", lambda self, c, prefix: looks.append(c) or listing(self, c, prefix)
    )
    monkeypatch.setattr(MediaStore, "metadata_of", lambda self, c, name: looks.append(c) or one(self, c, name))
    upload_file(container, "first.jpg", make_face_image(tmp_path / "a.jpg"))
    assert run_job(container)["status"] == "succeeded"
    assert looks == []  # a container of one upload: there was nothing to find
    upload_file(container, "second.jpg", make_face_image(tmp_path / "b.jpg"))
    job = run_job(container)
    assert looks and set(looks) == {container.container_name}
    assert {r["blob"]: r["reason"] is None for r in job["results"]} == {"first.jpg": False, "second.jpg": True}


def test_a_video_job_does_not_reuse_image_results(run_job, container, tmp_path):
    upload_file(container, "face.jpg", make_face_image(tmp_path / "a.jpg"))
    run_job(container)
    upload_file(container, "clip.mp4", make_video(tmp_path / "c.mp4", frames=2))
    job = run_job(container, media="video")
    assert {r["blob"]: r["status"] for r in job["results"]} == {"face.jpg": "skipped", "clip.mp4": "analysed"}


def test_several_faces_and_every_extra_output_of_a_video(run_job, container, tmp_path, monkeypatch):
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("OPENFACE_STANDIN_LOG", str(log))
    upload_file(container, "crowd.mp4", make_video(tmp_path / "c.mp4", frames=10, faces=3))
    job = run_job(container, media="video", query={"faces": "multi", "outputs": "tracked,aligned,hog"})

    assert job["status"] == "succeeded" and job["faces"] == "multi"
    assert job["extra_outputs"] == ["aligned", "hog", "tracked"]
    run = json.loads(log.read_text())
    assert run["exe"] == "FaceLandmarkVidMulti"
    assert {"-simalign", "-hogalign", "-tracked"} <= set(run["args"])
    folder = "processed/_options/multi-aligned-hog-tracked/"
    names = {b.name for b in container.list_blobs(name_starts_with="processed/")}
    expected = {
        folder + name
        for name in (
            "crowd.csv",
            "crowd_of_details.txt",
            "crowd.hog",
            "crowd_aligned.zip",
            "crowd_tracked.avi",
            "crowd.png",
            "crowd.summary.json",
        )
    }
    assert expected | {job_manifest_name(job["job_id"])} == names
    for name in expected:
        metadata = container.get_blob_client(name).get_blob_properties().metadata
        assert metadata["faces"] == "multi" and metadata["extra_outputs"] == "aligned,hog,tracked", name
    with zipfile.ZipFile(io.BytesIO(container.download_blob(folder + "crowd_aligned.zip").readall())) as aligned:
        assert len(aligned.namelist()) == 30 and aligned.namelist()[0].startswith("frame_det_00_")
    assert container.download_blob(folder + "crowd.png").readall().startswith(b"\x89PNG")
    summary = read_json(container, folder + "crowd.summary.json")
    assert summary["plot_error"] is None
    assert summary["summary"]["faces"] == 3 and [f["face_id"] for f in summary["summary"]["per_face"]] == [0, 1, 2]
    assert summary["summary"]["frames"] == 10 and summary["summary"]["fps"] == pytest.approx(30, abs=0.1)


def test_a_plot_that_cannot_be_drawn_does_not_fail_the_video(run_job, container, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no canvas today")

    monkeypatch.setattr("analysis.openface.interpret.draw_video", broken)
    upload_file(container, "clip.mp4", make_video(tmp_path / "c.mp4", frames=5))
    job = run_job(container, media="video")
    assert job["status"] == "succeeded" and job["results"][0]["status"] == "analysed"
    summary = read_json(container, "processed/clip.summary.json")
    assert summary["plot_error"] == "RuntimeError: no canvas today"
    assert "processed/clip.png" not in {b.name for b in container.list_blobs(name_starts_with="processed/")}


def test_results_for_other_options_do_not_overwrite_the_defaults(run_job, container, tmp_path):
    upload_file(container, "clip.mp4", make_video(tmp_path / "c.mp4", frames=5))
    posed = run_job(container, media="video")
    before = container.download_blob("processed/clip.summary.json").readall()
    wild = run_job(container, media="video", media_type="iw")
    assert posed["job_id"] != wild["job_id"] and wild["results"][0]["status"] == "analysed"
    assert container.download_blob("processed/clip.summary.json").readall() == before
    assert read_json(container, "processed/_options/wild/clip.summary.json")["job_id"] == wild["job_id"]


def test_a_tracked_image_is_written_for_images_and_faces_multi_is_refused(run_job, client, container, tmp_path):
    upload_file(container, "face.jpg", make_face_image(tmp_path / "a.jpg"))
    refused = client.post(f"/analyse/image/ip/{container.container_name}?faces=multi")
    assert refused.status_code == 400 and "FaceLandmarkImg already finds every face" in refused.json["message"]
    job = run_job(container, query={"outputs": "tracked"})
    assert job["status"] == "succeeded"
    tracked = container.download_blob("processed/_options/tracked/face_tracked.jpg").readall()
    assert tracked.startswith(b"\xff\xd8\xff")


def test_a_running_video_shows_its_progress(service_factory, container, tmp_path):
    """The stand-in spends its seconds across the frames, printing its percent as OpenFace does."""
    service = service_factory()
    upload_file(container, "slow.mp4", make_video(tmp_path / "s.mp4", frames=50, seconds=12))
    upload_file(container, "quick.mp4", make_video(tmp_path / "q.mp4", frames=5))
    job_id = service.analyse("video", "ip", container.container_name).json()["job_id"]
    seen = []
    while (job := service.job(job_id))["status"] not in ("succeeded", "failed"):
        if job.get("progress"):
            seen.append(job["progress"])
        time.sleep(0.5)
    assert job["status"] == "succeeded" and job["progress"] is None  # progress lives while the job runs
    assert all(p["media_total"] == 2 for p in seen), seen
    assert any(0 <= p["percent"].get("slow.mp4", 100) < 100 for p in seen), seen
    assert [p["media_done"] for p in seen] == sorted(p["media_done"] for p in seen)


def test_giving_up_keeps_every_answer_already_published(run_job, container, tmp_path, monkeypatch):
    upload_file(container, "good.jpg", make_face_image(tmp_path / "g.jpg"))
    assert run_job(container)["status"] == "succeeded"
    answer = container.download_blob("processed/good.summary.json").readall()
    upload_file(container, "poison.jpg", make_face_image(tmp_path / "p.jpg", crash=True))
    job = run_job(container, max_attempts=1)  # the second job lists both; OpenFace dies on the new one
    assert job["status"] == "failed" and job["error"].startswith("gave up after 1 attempt:")
    assert container.download_blob("processed/good.summary.json").readall() == answer  # byte for byte
    assert read_json(container, "processed/poison.summary.json")["status"] == "failed"
    results = {r["blob"]: r for r in job["results"]}
    assert results["good.jpg"]["status"] == "analysed" and "kept" in results["good.jpg"]["reason"]


def test_an_image_declaring_huge_dimensions_is_too_large_before_openface(run_job, container, tmp_path, monkeypatch):
    import resource

    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("OPENFACE_STANDIN_LOG", str(log))
    upload_file(container, "huge.png", make_png_header(tmp_path / "huge.png", 30000, 30000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    job = run_job(container)
    (result,) = job["results"]
    assert result["status"] == "too_large" and "30000×30000 pixels" in result["reason"]
    assert "MAX_IMAGE_PIXELS" in result["reason"]
    assert not log.exists()  # OpenFace never saw it
    # Nothing was decoded: 900 million pixels would take 2.7 GB.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024


def test_an_openface_run_over_its_memory_cap_fails_that_media_only(run_job, container, tmp_path, monkeypatch):
    upload_file(container, "a-hungry.jpg", make_face_image(tmp_path / "h.jpg", memory_mb=4000))
    upload_file(container, "b-fine.jpg", make_face_image(tmp_path / "f.jpg"))
    job = run_job(container, openface_memory_limit_mb=1500, openface_processes=1)
    results = {r["blob"]: r for r in job["results"]}
    assert results["a-hungry.jpg"]["status"] == "failed"
    assert "ran out of memory" in results["a-hungry.jpg"]["reason"]
    assert "OPENFACE_MEMORY_LIMIT_MB" in results["a-hungry.jpg"]["reason"]
    assert results["b-fine.jpg"]["status"] == "analysed"
    assert job["attempts"] == 1  # not a crash to retry: the media's own outcome


def test_without_room_on_the_disk_jobs_wait_and_none_is_lost(
    client, settings, blob_service, tmp_path, monkeypatch, work_dir, caplog
):
    """Downloads take the room the disk has left, less the reserve; what does not fit comes back later."""
    from analysis.worker.disk import DiskBudget

    monkeypatch.setattr("analysis.worker.lifecycle.DISK_FULL_DELAY_SECONDS", 1)
    containers = []
    for number in range(4):
        made = blob_service.create_container(f"disk-{number}-{time.time_ns()}")
        containers.append(made)
        upload_file(made, "face.jpg", make_face_image(tmp_path / f"{number}.jpg", size=(640, 480)))
    size = max(made.get_blob_client("face.jpg").get_blob_properties().size for made in containers)
    job_ids = [client.post(f"/analyse/image/ip/{made.container_name}").json["job_id"] for made in containers]

    reserve = 100 * 1024 * 1024

    def usage(folder):
        """A disk that the worker's own files fill, with room for 1.5 images beyond the reserve."""
        used = sum(path.stat().st_size for path in work_dir.rglob("*") if path.is_file())
        return 10 * reserve, used, reserve + int(1.5 * size) - used

    try:
        deadline = time.monotonic() + 90
        while any(client.get(f"/jobs/{job_id}").json["status"] != "succeeded" for job_id in job_ids):
            assert time.monotonic() < deadline, [client.get(f"/jobs/{j}").json for j in job_ids]
            worker = Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings))
            worker.handler.disk = DiskBudget(reserve, folder=lambda: work_dir, usage=usage)
            worker.run(burst=True)
            time.sleep(0.5)
        assert "job handed back: no room on the worker's disk" in caplog.text
        for job_id in job_ids:
            assert client.get(f"/jobs/{job_id}").json["attempts"] == 1  # waiting spent nothing
    finally:
        for made in containers:
            made.delete_container()


def test_a_download_the_disk_refuses_hands_the_job_back(run_job, client, container, settings, tmp_path, monkeypatch):
    """A write error on the worker's disk (here the file-size limit) is not the job's fault."""
    import resource
    import signal

    monkeypatch.setattr("analysis.worker.lifecycle.DISK_FULL_DELAY_SECONDS", 1)
    upload_file(container, "face.jpg", make_face_image(tmp_path / "f.jpg", size=(640, 480)))
    size = container.get_blob_client("face.jpg").get_blob_properties().size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, hard))
    try:
        job = run_job(container)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert job["status"] == "queued" and job["attempts"] == 0, job
    assert "handed back" in job["error"] and "disk" in job["error"]
    deadline = time.monotonic() + 30  # it comes back after DISK_FULL_DELAY_SECONDS
    while (job := client.get(f"/jobs/{job['job_id']}").json)["status"] != "succeeded":
        assert time.monotonic() < deadline, job
        Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings)).run(burst=True)
        time.sleep(0.5)
    assert job["attempts"] == 1


def test_a_worker_whose_job_was_taken_over_cannot_settle_it(client, container, settings, tmp_path, queue):
    from analysis.job import JobStatus
    from analysis.worker.lease import Lease
    from analysis.worker.publish import JobReport

    upload_file(container, "face.jpg", make_face_image(tmp_path / "f.jpg"))
    job_id = client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"]
    lifecycle = Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings)).handler.lifecycle
    (delivery,) = queue.receive(1, visibility_seconds=30)
    with Lease(queue, [], 30) as lease:
        claim = lifecycle.claim(delivery, lease)
        jobs = Backends(settings).jobs
        jobs.claim(jobs.get(job_id), "another-worker", attempts=2)  # its lease lapsed; another took the job
        lifecycle.settle(claim, lease, JobReport(JobStatus.SUCCEEDED), shared=False)
    record = client.get(f"/jobs/{job_id}").json
    assert record["status"] == "running" and record["attempts"] == 2
    assert jobs.get(job_id).holder == "another-worker"


def test_a_queued_job_whose_message_was_lost_is_found_and_done(client, container, settings, tmp_path, queue, work_dir):
    from analysis.sweep import Sweeper

    upload_file(container, "face.jpg", make_face_image(tmp_path / "f.jpg"))
    job_id = client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"]
    for delivery in queue.receive(32, visibility_seconds=30):  # the message is lost
        queue.complete(delivery)
    sweeping = settings.model_copy(update={"job_sweep_seconds": 0.2})
    worker = Worker(sweeping, Backends(sweeping), OpenFaceRunner.from_settings(sweeping))
    # The sweep's clock runs an hour ahead, so the job has waited longer than JOB_REQUEUE_SECONDS.
    worker.sweeper = Sweeper(
        worker.backends.jobs,
        worker.backends.queue,
        sweeping.job_requeue_seconds,
        sweeping.queue_visibility_seconds,
        clock=lambda: time.time() + 3600,
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{job_id}").json["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        worker.request_stop()
        thread.join(30)
