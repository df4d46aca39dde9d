"""Prometheus metrics of the real web processes and worker, read as Prometheus reads them."""

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from analysis.web.metrics import request_labels
from harness import free_port
from openface_standin.media import make_face_image


def samples(text: str) -> dict[tuple, float]:
    """``{(sample name, sorted labels): value}`` of a scrape."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(port: int) -> dict[tuple, float]:
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return samples(response.text)


def test_web_metrics_count_every_process_on_an_internal_port(service_factory, container, tmp_path):
    port = free_port()
    service = service_factory(WEB_CONCURRENCY="2", WEB_METRICS_PORT=str(port))
    container.upload_blob("face.jpg", make_face_image(tmp_path / "f.jpg").read_bytes())
    before = scrape(port)
    for _ in range(10):  # spread over both gunicorn processes
        requests.get(f"{service.url}/healthz", timeout=10)
    assert service.analyse("image", "ip", container.container_name).status_code == 202
    requests.get(f"{service.url}/jobs/" + "0" * 32, timeout=10)  # no key: 401
    # The public port serves no metrics.
    assert requests.get(f"{service.url}/metrics", timeout=10).status_code == 404

    found = {key: value - before.get(key, 0) for key, value in scrape(port).items()}
    assert found[("openface_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))] == 10
    analyse = (("method", "POST"), ("route", "/analyse/<media>/<media_type>/<name>"), ("status", "202"))
    assert found[("openface_http_requests_total", analyse)] == 1
    assert (
        found[("openface_http_requests_total", (("method", "GET"), ("route", "/jobs/<job_id>"), ("status", "401")))]
        == 1
    )
    assert found[("openface_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert found[("openface_http_request_seconds_count", (("method", "GET"), ("route", "/healthz")))] == 10


def test_a_made_up_method_or_path_adds_no_series(service_factory):
    port = free_port()
    service = service_factory(WEB_METRICS_PORT=str(port))
    requests.get(f"{service.url}/healthz", timeout=10)
    before = set(scrape(port))
    for method in ("FOOBARBAZ", "FOOBARBAZ2", "GET"):
        for path in ("/healthz", "/no/such/path/1", "/no/such/path/2"):
            requests.request(method, f"{service.url}{path}", timeout=10)
    new = {labels for name, labels in set(scrape(port)) - before}
    methods = {dict(labels).get("method") for labels in new}
    routes = {dict(labels).get("route") for labels in new}
    assert methods <= {"GET", "other"} and routes <= {"/healthz", "unmatched"}, new
    assert not any("FOOBARBAZ" in str(labels) or "/no/such" in str(labels) for labels in new)


def test_labels_come_from_fixed_sets():
    assert request_labels("FOOBARBAZ", None, 405) == ("other", "unmatched", "405")
    assert request_labels("POST", "/jobs", 799) == ("POST", "/jobs", "other")


@pytest.mark.parametrize("engine", ["resident", "cli"])
def test_worker_metrics_after_a_job(service_factory, container, tmp_path, engine):
    port = free_port()
    service = service_factory(METRICS_PORT=str(port), OPENFACE_ENGINE=engine)
    container.upload_blob("face.jpg", make_face_image(tmp_path / "f.jpg").read_bytes())
    container.upload_blob("grey.png", b"")  # named as an image, empty: unreadable
    job = service.wait_for_job(service.analyse("image", "ip", container.container_name).json()["job_id"])
    assert job["status"] == "succeeded"

    deadline = time.monotonic() + 10
    while True:  # the worker counts a job just after its record says it is done
        found = scrape(port)
        if found.get(("openface_jobs_finished_total", (("status", "succeeded"),))) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert found[("openface_jobs_finished_total", (("status", "succeeded"),))] == 1
    assert found[("openface_media_total", (("outcome", "analysed"),))] == 1
    assert found[("openface_media_total", (("outcome", "unreadable"),))] == 1
    if engine == "cli":  # one process for the job's two images
        assert found[("openface_run_seconds_count", (("executable", "FaceLandmarkImg"),))] == 1
    else:  # one request for the readable image; the empty one never reaches OpenFace
        assert found[("openface_engine_request_seconds_count", (("mode", "image"),))] == 1
        assert found[("openface_engine_starts_total", ())] == 2  # OPENFACE_PROCESSES: one per core here
    assert found[("openface_batch_jobs_count", ())] == 1
    assert found[("openface_jobs_in_flight", ())] == 0
    assert found[("openface_queue_messages", ())] == 0
