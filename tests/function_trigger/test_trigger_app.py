"""function_app.py as the Functions host indexes and invokes it, and the settings it reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trigger_settings
from blob_events import split_blob_url
from service_client import ServiceCallError, analyse_url
from trigger_testkit import decode_event, event_grid_payload, jpeg_bytes, upload

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_DIR = ROOT / "function_trigger"
_indexed: dict = {}


def indexed_functions(module):
    """The app's functions, indexed once as the host does (indexing twice is an error)."""
    if "functions" not in _indexed:
        _indexed["functions"] = module.app.get_functions()
    return _indexed["functions"]


@pytest.fixture
def function_app(monkeypatch, live_service):
    monkeypatch.setenv("SERVICE_URL", live_service.url)
    monkeypatch.setenv("SERVICE_API_KEY", live_service.api_key)
    monkeypatch.setenv("MediaStorage", live_service.connection_string)
    monkeypatch.delenv("DEFAULT_MEDIA_TYPE", raising=False)
    import function_app as module

    module._state.clear()  # settings are read on first use
    yield module
    module._state.clear()


def test_app_indexes_one_event_grid_function(function_app):
    functions = indexed_functions(function_app)
    assert [f.get_function_name() for f in functions] == ["on_media_uploaded"]
    bindings = json.loads(functions[0].get_function_json())["bindings"]
    assert bindings == [{"direction": "IN", "type": "eventGridTrigger", "name": "event"}]


def test_function_handles_an_upload_end_to_end(function_app, container, live_service):
    upload(container, "fa.jpg", jpeg_bytes(), content_type="image/jpeg")
    event = decode_event(event_grid_payload(container, "fa.jpg"))
    user_function = indexed_functions(function_app)[0].get_user_function()

    assert user_function(event) is None
    # The job the function started (same blobs, same options) is the one the service reports.
    again = live_service.analyse("image", "ip", container.container_name)
    assert again.status_code == 200
    assert live_service.wait_for_job(again.json()["job_id"])["status"] == "succeeded"
    assert container.get_blob_client("processed/fa.csv").exists()


def test_function_raises_when_the_service_stays_down(function_app, monkeypatch, container):
    from trigger_testkit import closed_port_url

    monkeypatch.setenv("SERVICE_URL", closed_port_url())
    monkeypatch.setenv("SERVICE_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("SERVICE_BACKOFF_SECONDS", "0.1")
    upload(container, "down.jpg", jpeg_bytes(), content_type="image/jpeg")
    event = decode_event(event_grid_payload(container, "down.jpg"))

    with pytest.raises(ServiceCallError):
        indexed_functions(function_app)[0].get_user_function()(event)


@pytest.fixture
def app_settings(monkeypatch):
    """Set app settings as the Functions host would, with none of the test run's own left over."""
    for name in list(os.environ):
        if name.upper().startswith(
            ("SERVICE_", "MEDIASTORAGE", "DEFAULT_MEDIA_TYPE", "AZURE_STORAGE_", "WATCH_", "API_KEYS")
        ):
            monkeypatch.delenv(name)

    def put(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return put


def test_settings_are_read_and_checked(app_settings):
    app_settings(
        SERVICE_URL="https://openface.example.net/",
        SERVICE_API_KEY="k",
        DEFAULT_MEDIA_TYPE="Wild",
        SERVICE_MAX_ATTEMPTS="6",
        SERVICE_RETRY_BUDGET_SECONDS="25",
    )
    settings = trigger_settings.load()
    assert (settings.default_media_type, settings.service_max_attempts, settings.service_retry_budget_seconds) == (
        "wild",
        6,
        25.0,
    )
    assert (
        analyse_url(settings.service_url, "image", "wild", "c-1")
        == "https://openface.example.net/analyse/image/wild/c-1"
    )


@pytest.mark.parametrize(
    "values, named",
    [
        ({"SERVICE_API_KEY": "k"}, "SERVICE_URL"),
        ({"SERVICE_URL": "http://x"}, "SERVICE_API_KEY"),
        ({"SERVICE_URL": "ftp://x", "SERVICE_API_KEY": "k"}, "SERVICE_URL"),
        ({"SERVICE_URL": "http://x", "SERVICE_API_KEY": "k", "DEFAULT_MEDIA_TYPE": "side"}, "DEFAULT_MEDIA_TYPE"),
        ({"SERVICE_URL": "http://x", "SERVICE_API_KEY": "k", "SERVICE_MAX_ATTEMPTS": "many"}, "SERVICE_MAX_ATTEMPTS"),
        (
            {"SERVICE_URL": "http://x", "SERVICE_API_KEY": "k", "SERVICE_BACKOFF_SECONDS": "0"},
            "SERVICE_BACKOFF_SECONDS",
        ),
    ],
)
def test_a_bad_setting_is_named(app_settings, values, named):
    app_settings(**values)
    with pytest.raises(trigger_settings.TriggerSettingsError, match=named):
        trigger_settings.load()


def test_the_watcher_reads_the_same_settings_and_its_own(app_settings):
    app_settings(SERVICE_URL="http://x", API_KEYS=" first , second", WATCH_INTERVAL_SECONDS="0.5")
    watcher = trigger_settings.load(trigger_settings.WatcherSettings)
    assert (watcher.service_api_key, watcher.watch_interval_seconds, watcher.watch_max_deliveries) == ("first", 0.5, 10)
    app_settings(WATCH_MAX_DELIVERIES="0")
    with pytest.raises(trigger_settings.TriggerSettingsError, match="WATCH_MAX_DELIVERIES"):
        trigger_settings.load(trigger_settings.WatcherSettings)


def test_storage_settings_follow_the_functions_connection_conventions(app_settings, azurite):
    app_settings(
        SERVICE_URL="http://x",
        SERVICE_API_KEY="k",
        MediaStorage=azurite.connection_string,
        AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;AccountName=other;AccountKey=a2V5",
    )
    assert trigger_settings.storage_client(trigger_settings.load()).url.startswith(azurite.blob_endpoint)
    app_settings(
        MediaStorage="",
        MediaStorage__blobServiceUri="https://media.blob.core.windows.net",
        MediaStorage__clientId="00000000-0000-0000-0000-000000000001",
    )
    identity = trigger_settings.storage_client(trigger_settings.load())
    assert identity.url.startswith("https://media.blob.core.windows.net")
    assert type(identity.credential).__name__ == "DefaultAzureCredential"
    app_settings(MediaStorage__blobServiceUri="", MediaStorage__accountName="media")
    assert trigger_settings.storage_client(trigger_settings.load()).url.startswith(
        "https://media.blob.core.windows.net"
    )
    app_settings(MediaStorage__accountName="", AZURE_STORAGE_CONNECTION_STRING="")
    with pytest.raises(trigger_settings.TriggerSettingsError, match="MediaStorage__blobServiceUri"):
        trigger_settings.storage_client(trigger_settings.load())


def test_blob_urls_of_azure_and_azurite_are_split():
    assert split_blob_url("https://acct.blob.core.windows.net/c-1/dir/a%20b.jpg") == ("c-1", "dir/a b.jpg")
    assert split_blob_url("http://127.0.0.1:10000/devstoreaccount1/c-1/x.mp4") == ("c-1", "x.mp4")
    assert split_blob_url("http://azurite:10000/devstoreaccount1/c-1/x.mp4") == ("c-1", "x.mp4")


def test_host_files_are_valid():
    host = json.loads((FUNCTION_DIR / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    settings = json.loads((FUNCTION_DIR / "local.settings.json.example").read_text())["Values"]
    assert settings["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert {"SERVICE_URL", "SERVICE_API_KEY", "MediaStorage", "AzureWebJobsStorage"} <= set(settings)


def test_packaged_app_carries_the_shared_media_rules(tmp_path):
    """What is deployed imports on its own: function_trigger/ plus media_rules.py, nothing else of the repo."""
    dest = tmp_path / "function_app"
    subprocess.run([str(ROOT / "bin" / "package-function"), str(dest)], check=True, capture_output=True)
    assert (dest / "media_rules.py").read_text() == (ROOT / "media_rules.py").read_text()
    # The Functions build installs requirements.txt: the lock, so every package is checked by its hash.
    assert (dest / "requirements.txt").read_text() == (FUNCTION_DIR / "requirements.lock").read_text()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = (
        "import function_app, media_rules, trigger; "
        "assert trigger.judge is media_rules.judge; "
        "print([f.get_function_name() for f in function_app.app.get_functions()])"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=dest, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['on_media_uploaded']"
