"""Shared fixtures: a real Azurite, the Flask app and client, and real service processes.

Nothing here mocks storage: every test talks to Azurite started from
node_modules on free ports. OpenFace is replaced by the stand-in executables
in ``tests/openface_standin`` (see its README); tests marked ``real_openface``
use the real binaries from ``OPENFACE_BIN_DIR`` instead.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from analysis.backends import Backends
from analysis.config import load_settings
from analysis.queue import AzureJobQueue
from analysis.web.app import create_app
from harness import (
    API_KEY,
    OTHER_KEY,
    STANDIN_BIN_DIR,
    STANDIN_KNOBS,
    Azurite,
    ServiceProcesses,
    free_port,
    unique_names,
)


@pytest.fixture(scope="session", autouse=True)
def python_on_path():
    """The stand-in starts with ``#!/usr/bin/env python3``: make that this venv's Python."""
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def azurite():
    server = Azurite(free_port(), free_port(), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def blob_service(azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def container(blob_service):
    """A fresh upload container named by a UUID, as the pipeline names them."""
    client = blob_service.create_container(str(uuid.uuid4()))
    yield client
    try:
        client.delete_container()
    except Exception:
        pass


@pytest.fixture
def settings(azurite):
    return load_settings(
        azure_storage_connection_string=azurite.connection_string,
        openface_bin_dir=STANDIN_BIN_DIR,
        openface_env_passthrough=STANDIN_KNOBS,
        api_keys=f"{OTHER_KEY},{API_KEY}",
        queue_visibility_seconds=10,
        worker_poll_seconds=0.2,
        **unique_names(),
    )


@pytest.fixture
def queue(azurite, settings):
    """The job queue (and its poison queue) of this test's settings."""
    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    queue = AzureJobQueue(service, settings.job_queue_name, settings.poison_queue_name)
    queue.ensure()
    return queue


@pytest.fixture
def offline_app():
    """The app over storage that is not there: what needs no storage must work without it."""
    from tools.azurite import connection_string

    closed = free_port()
    return create_app(
        load_settings(
            azure_storage_connection_string=connection_string(closed, closed, closed),
            openface_bin_dir=STANDIN_BIN_DIR,
            api_keys=API_KEY,
            storage_retry_total=0,
            **unique_names(),
        )
    )


@pytest.fixture
def app(settings):
    Backends(settings).ensure()  # as a deployment does; the app itself creates nothing
    return create_app(settings)


@pytest.fixture
def client(app):
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = API_KEY
    return client


@pytest.fixture
def service_factory(azurite, tmp_path_factory):
    """Start (or prepare) a web + worker pair: ``service_factory(port=None, start=True, **env)``."""
    started: list[ServiceProcesses] = []

    def make(port: int | None = None, start: bool = True, **env: str) -> ServiceProcesses:
        service = ServiceProcesses(
            azurite, port or free_port(), env_overrides=env, log_dir=tmp_path_factory.mktemp("service")
        )
        started.append(service)
        return service.start() if start else service

    yield make
    for service in started:
        service.stop()


@pytest.fixture(scope="session")
def live_service(azurite, tmp_path_factory):
    """One web + worker pair shared by the full-flow tests."""
    service = ServiceProcesses(azurite, free_port(), log_dir=tmp_path_factory.mktemp("live"))
    service.start()
    yield service
    service.stop()


# Tests that start real service processes (or build images, or run real OpenFace): `bin/test --fast` leaves them out.
SLOW_FIXTURES = {"service_factory", "live_service"}
SLOW_MARKERS = {"real_openface", "images"}


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="set OPENFACE_BIN_DIR to a real OpenFace install to run")
    for item in items:
        if (
            SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
            or SLOW_MARKERS & set(item.keywords)
            or item.module.__name__ == "test_local_run"
        ):
            item.add_marker(pytest.mark.slow)
        if "real_openface" in item.keywords and not os.environ.get("OPENFACE_BIN_DIR"):
            item.add_marker(skip)
