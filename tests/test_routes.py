import pytest

from analysis.backends import Backends
from analysis.config import ConfigError, load_settings
from analysis.job import JobStatus
from analysis.web.app import create_app
from harness import API_KEY, OTHER_KEY, STANDIN_BIN_DIR, free_port, unique_names


def upload(container, name, data=b"\xff\xd8\xff\xe0" + b"\0" * 64):
    container.upload_blob(name, data, overwrite=True)


def test_health_is_open_and_needs_no_storage(offline_app):
    response = offline_app.test_client().get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_ready_says_when_storage_is_unreachable(offline_app):
    response = offline_app.test_client().get("/readyz")
    assert response.status_code == 503 and response.json["checks"]["storage"].startswith("unreachable")


def test_ready_checks_storage_and_binaries(app):
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"storage": "ok", "openface": "ok"}


def test_not_ready_without_binaries(azurite, tmp_path):
    app = create_app(
        load_settings(
            azure_storage_connection_string=azurite.connection_string,
            openface_bin_dir=tmp_path,
            api_keys=API_KEY,
            **unique_names(),
        )
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["openface"] == "missing FaceLandmarkImg, FeatureExtraction, FaceLandmarkVidMulti"


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}, {"X-API-Key": ""}])
def test_missing_or_wrong_key_is_401(app, container, headers):
    response = app.test_client().post(f"/analyse/image/ip/{container.container_name}", headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert app.test_client().get("/jobs/" + "0" * 32, headers=headers).status_code == 401


def test_any_configured_key_works(app, container):
    response = app.test_client().post(f"/analyse/image/ip/{container.container_name}", headers={"X-API-Key": OTHER_KEY})
    assert response.status_code == 202


@pytest.mark.parametrize(
    "path,word",
    [
        ("/analyse/audio/ip/abc-def", "media"),
        ("/analyse/image/lab/abc-def", "media_type"),
        ("/analyse/image/ip/Bad_Container", "container name"),
        ("/analyse/image/ip/a", "container name"),
        ("/analyse/image/ip/" + "a" * 64, "container name"),
        ("/analyse/video/ip/abc-def?faces=all", "faces must be 'single' or 'multi'"),
        ("/analyse/image/ip/abc-def?faces=multi", "faces=multi is for videos"),
        ("/analyse/video/ip/abc-def?outputs=hog,thermal", "outputs must be a comma list of aligned, hog, tracked"),
    ],
)
def test_bad_parameters_are_400(client, path, word):
    response = client.post(path)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request" and word in response.json["message"]


def test_missing_container_is_404(client):
    response = client.post("/analyse/video/iw/0b4f0c3e-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert response.json["error"] == "container_not_found"


def test_analyse_answers_at_once_and_is_idempotent(client, container, settings):
    upload(container, "face.jpg")
    path = f"/analyse/image/IP/{container.container_name}"
    first = client.post(path)
    assert first.status_code == 202
    body = first.json
    assert set(body) == {"job_id", "status", "status_url"} and body["status"] == "queued"
    assert first.headers["Location"] == body["status_url"] == f"/jobs/{body['job_id']}"

    again = client.post(f"/analyse/image/posed/{container.container_name}")
    assert again.status_code == 200 and again.json["job_id"] == body["job_id"]
    legacy = client.get(path)  # the older GET form reaches the same job
    assert legacy.status_code == 200 and legacy.json["job_id"] == body["job_id"]

    job = client.get(body["status_url"]).json
    assert job["status"] == "queued" and job["attempts"] == 0
    assert job["inputs"][0]["name"] == "face.jpg"
    for key in ("outputs", "error", "summary"):
        assert key in job

    # One message for one job, however often it was asked for.
    from azure.storage.queue import QueueClient

    queue = QueueClient.from_connection_string(settings.azure_storage_connection_string, settings.job_queue_name)
    assert len(list(queue.peek_messages(max_messages=32))) == 1


def test_changed_blob_or_options_give_a_new_job(client, container):
    upload(container, "face.jpg")
    first = client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"]
    wild = client.post(f"/analyse/image/iw/{container.container_name}").json["job_id"]
    upload(container, "face.jpg", b"\xff\xd8\xff\xe0" + b"\1" * 64)
    changed = client.post(f"/analyse/image/ip/{container.container_name}")
    assert changed.status_code == 202
    assert len({first, wild, changed.json["job_id"]}) == 3


def test_faces_and_outputs_are_part_of_the_jobs_identity(client, container):
    upload(container, "clip.mp4", b"\0\0\0\x18ftypmp42" + b"\0" * 64)
    name = container.container_name
    ids = {
        client.post(f"/analyse/video/ip/{name}{query}").json["job_id"]
        for query in ("", "?faces=multi", "?outputs=hog", "?outputs=hog,tracked")
    }
    assert len(ids) == 4
    # The same options in another order or case are the same job.
    again = client.post(f"/analyse/video/ip/{name}?outputs=Tracked,hog")
    assert again.status_code == 200 and again.json["job_id"] in ids
    assert client.get(again.json["status_url"]).json["extra_outputs"] == ["hog", "tracked"]


def test_processed_blobs_do_not_change_the_job(client, container):
    upload(container, "face.jpg")
    first = client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"]
    upload(container, "processed/face.csv", b"face, confidence\n")
    assert client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"] == first


def test_a_job_records_whether_its_container_held_results(client, container):
    jobs = client.application.extensions["backends"].jobs
    upload(container, "face.jpg")
    path = f"/analyse/image/ip/{container.container_name}"
    job_id = client.post(path).json["job_id"]
    assert jobs.get(job_id).results_before is False
    assert "results_before" not in client.get(f"/jobs/{job_id}").json  # the worker's business
    # Failed, then asked for again once results are there: queued anew, knowing of them.
    jobs.move(jobs.get(job_id), JobStatus.FAILED, error="given up")
    upload(container, "processed/face.csv", b"face, confidence\n")
    assert client.post(path).status_code == 202
    assert jobs.get(job_id).results_before is True


def test_unknown_job_is_404(client):
    missing = client.get("/jobs/" + "f" * 32)
    assert missing.status_code == 404 and "deleted 30 days after their last change" in missing.json["message"]
    assert client.get("/jobs/../../etc").status_code == 404


def test_asking_again_for_a_job_whose_message_was_lost_queues_it_anew(client, container, settings, queue):
    upload(container, "face.jpg", b"\xff\xd8\xff")
    path = f"/analyse/image/ip/{container.container_name}"
    job_id = client.post(path).json["job_id"]
    for delivery in queue.receive(32, visibility_seconds=30):
        queue.complete(delivery)  # lost
    assert client.post(path).status_code == 200  # queued a moment ago: its message may still be coming
    jobs = Backends(settings).jobs
    jobs.touch(jobs.get(job_id), None, queued_at="2000-01-01T00:00:00+00:00")  # queued long ago
    again = client.post(path)
    assert again.status_code == 202 and again.json["status"] == "queued"
    (delivery,) = queue.receive(32, visibility_seconds=30)
    assert delivery.job_id == job_id
    assert client.post(path).status_code == 200  # once per JOB_REQUEUE_SECONDS, however often asked


def test_storage_down_is_503_not_a_crash(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    settings = load_settings(
        azure_storage_connection_string=(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"BlobEndpoint={dead};QueueEndpoint={dead};"
        ),
        openface_bin_dir=STANDIN_BIN_DIR,
        api_keys=API_KEY,
        storage_retry_total=0,
    )
    client = create_app(settings).test_client()
    response = client.post("/analyse/image/ip/abc-def", headers={"X-API-Key": API_KEY})
    assert response.status_code == 503 and response.json["error"] == "storage_unavailable"
    assert client.get("/readyz").status_code == 503


def test_wrong_storage_account_key_is_503(azurite):
    settings = load_settings(
        azure_storage_connection_string=azurite.connection_string.replace("Eby8", "AAAA"),
        openface_bin_dir=STANDIN_BIN_DIR,
        api_keys=API_KEY,
        **unique_names(),
    )
    response = create_app(settings).test_client().post("/analyse/image/ip/abc-def", headers={"X-API-Key": API_KEY})
    assert response.status_code == 503


def test_unknown_route_and_wrong_method_answer_json_naming_the_routes(client):
    for method, path, status in [
        ("GET", "/nope", 404),
        ("GET", "/healthz/", 404),
        ("DELETE", "/jobs/" + "0" * 32, 405),
        ("PUT", "/analyse/image/ip/abc", 405),
    ]:
        response = client.open(path, method=method)
        assert response.status_code == status and response.is_json, (method, path)
        assert "GET /jobs/<job_id>" in response.json["message"] and "/analyse/<media>" in response.json["message"]
    assert "takes GET, not DELETE" in client.delete("/jobs/" + "0" * 32).json["message"]


def test_jobs_of_a_container_newest_first(client, container):
    upload(container, "a.jpg")
    first = client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"]
    second = client.post(f"/analyse/image/wild/{container.container_name}").json["job_id"]
    listed = client.get(f"/jobs?container={container.container_name}").json
    assert listed["container"] == container.container_name
    assert [job["job_id"] for job in listed["jobs"]] == [second, first]
    assert listed["jobs"][0]["status"] == "queued" and listed["jobs"][0]["media_type"] == "wild"
    assert [j["job_id"] for j in client.get(f"/jobs?container={container.container_name}&limit=1").json["jobs"]] == [
        second
    ]
    assert client.get("/jobs?container=0b4f0c3e-0000-4000-8000-000000000000").json["jobs"] == []


@pytest.mark.parametrize(
    "query,word",
    [
        ("", "container"),
        ("?container=Bad_Name", "container name"),
        ("?container=abc&limit=0", "limit"),
        ("?container=abc&limit=x", "limit"),
    ],
)
def test_jobs_listing_needs_a_valid_container_and_limit(client, query, word):
    response = client.get("/jobs" + query)
    assert response.status_code == 400 and word in response.json["message"]


@pytest.mark.parametrize(
    "path,allowed",
    [("/jobs?container=abc&limt=5", "it takes container, limit"), ("/healthz?verbose=1", "it takes none")],
)
def test_unknown_query_parameters_are_refused(client, path, allowed):
    response = client.get(path)
    assert response.status_code == 400 and allowed in response.json["message"]


def _dead_storage_app(**overrides):
    """An app whose storage nothing answers: any storage call would be a 503."""
    dead = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    settings = load_settings(
        azure_storage_connection_string=(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"BlobEndpoint={dead};QueueEndpoint={dead};"
        ),
        openface_bin_dir=STANDIN_BIN_DIR,
        api_keys=API_KEY,
        storage_retry_total=0,
        **overrides,
    )
    client = create_app(settings).test_client()
    client.environ_base["HTTP_X_API_KEY"] = API_KEY
    return client


@pytest.mark.parametrize(
    "name,status",
    [
        ("openface-jobs", 403),  # the job records
        ("azure-webjobs-hosts", 403),
        ("azure-webjobs-secrets", 403),
        ("insights-logs-auditevent", 403),
        ("insights-metrics-pt1m", 403),
        ("$logs", 400),
        ("$web", 400),
        ("$root", 400),
        ("%24logs", 400),
    ],
)
def test_containers_that_are_no_uploads_are_refused_before_any_storage_call(name, status):
    client = _dead_storage_app()
    for response in (client.post(f"/analyse/image/ip/{name}"), client.get(f"/jobs?container={name}")):
        assert response.status_code == status, (name, response.json)
        assert response.json["error"] == ("container_not_allowed" if status == 403 else "invalid_request")
        assert "storage" not in response.json["message"]


def test_upload_container_pattern_admits_only_matching_names():
    from analysis.names import UUID_CONTAINER_PATTERN

    client = _dead_storage_app(upload_container_pattern=UUID_CONTAINER_PATTERN)
    refused = client.post("/analyse/image/ip/holiday-photos")
    assert refused.status_code == 403 and "UPLOAD_CONTAINER_PATTERN" in refused.json["message"]
    # A UUID passes the check and reaches storage, which is down here.
    assert client.post("/analyse/image/ip/0b4f0c3e-0000-4000-8000-000000000000").status_code == 503


def test_a_pattern_that_is_no_regular_expression_is_named_at_start():
    with pytest.raises(ConfigError, match="UPLOAD_CONTAINER_PATTERN"):
        load_settings(
            azure_storage_connection_string="UseDevelopmentStorage=true",
            openface_bin_dir=STANDIN_BIN_DIR,
            upload_container_pattern="[0-9",
        )


def test_ready_asks_storage_at_most_every_few_seconds(settings):
    from analysis.backends import READY_CHECK_SECONDS, Backends

    now = [1000.0]
    backends = Backends(settings, clock=lambda: now[0])
    calls = []
    backends.ping = lambda: calls.append(now[0])
    assert backends.storage_check() == "ok" and backends.storage_check() == "ok"
    now[0] += READY_CHECK_SECONDS - 0.1
    backends.storage_check()
    assert len(calls) == 1
    now[0] += 0.2
    backends.storage_check()
    assert len(calls) == 2


def test_the_app_creates_no_storage(settings):
    from azure.storage.blob import BlobServiceClient

    create_app(settings)
    blobs = BlobServiceClient.from_connection_string(settings.azure_storage_connection_string)
    assert not blobs.get_container_client(settings.job_records_container).exists()
