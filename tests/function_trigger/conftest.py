"""Fixtures for the function trigger tests.

The handler talks to the real service (``live_service`` or ``service_factory``
from tests/conftest.py) over HTTP, and to Azurite; helpers that build media
and runtime objects are in ``trigger_testkit.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FUNCTION_DIR = Path(__file__).resolve().parents[2] / "function_trigger"
HERE = Path(__file__).resolve().parent
for path in (FUNCTION_DIR, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from trigger_settings import TriggerSettings, storage_client  # noqa: E402  (needs the path above)
from trigger_testkit import closed_port_url, fast_client  # noqa: E402


@pytest.fixture
def trigger_client(live_service):
    """The function's client of the running test service."""
    return fast_client(live_service.url, live_service.api_key)


@pytest.fixture
def no_call_client():
    """Points at a closed port with one attempt: any service call raises ServiceCallError."""
    return fast_client(closed_port_url(), "unused", service_max_attempts=1)


@pytest.fixture(scope="session")
def media_storage(azurite):
    """The function app's storage client for Azurite, built from its ``MediaStorage`` setting."""
    return storage_client(
        TriggerSettings(service_url="http://unused", service_api_key="unused", MediaStorage=azurite.connection_string)
    )
