"""gunicorn's own logs (analysis/web/weblog.py), read from the real web process started by bin/web."""

import json
import socket
import uuid

import requests

from analysis.keys import fingerprint


def _not_json_objects(text: str) -> list[str]:
    bad = []
    for line in filter(str.strip, text.splitlines()):
        try:
            fields = json.loads(line)
        except ValueError:
            fields = None
        if not (isinstance(fields, dict) and {"time", "level", "logger", "message"} <= fields.keys()):
            bad.append(line)
    return bad


def test_every_line_of_the_web_log_is_json_with_access_fields(service_factory):
    service = service_factory(start=False)
    service.create_storage()
    service.start_web()
    missing = str(uuid.uuid4())
    asked = [  # method, path, query, headers, expected status
        ("GET", "/healthz", None, {}, 200),
        ("POST", f"/analyse/image/ip/{missing}", None, {}, 401),
        ("GET", "/no/such/path", "probe=1", service.headers(), 404),
        ("POST", f"/analyse/image/ip/{missing}", None, service.headers(), 404),  # no such container
        ("GET", "/jobs", f"container={missing}&limit=5", service.headers(), 200),
    ]
    for method, path, query, headers, status in asked:
        url = f"{service.url}{path}" + (f"?{query}" if query else "")
        response = requests.request(method, url, headers=headers, timeout=10)
        assert response.status_code == status
    # Not HTTP at all: gunicorn's own "Invalid request" warning.
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP\r\n\r\n")
        sock.recv(1024)
    service.stop()  # graceful: in-flight access lines and the shutdown lines are written

    text = service.log("web", tail=10**7)
    assert _not_json_objects(text) == []
    assert service.api_key not in text
    lines = [json.loads(line) for line in filter(str.strip, text.splitlines())]
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    for method, path, query, _, status in asked:
        assert [
            line
            for line in access
            if (line["method"], line["path"], line["status"], line["query"]) == (method, path, status, query)
        ], (method, path, status, access)
    # Which key made a call, as a fingerprint: never the key itself.
    keyed = [line["key_fingerprint"] for line in access if line["path"] == "/jobs"]
    assert keyed == [fingerprint(service.api_key)] and len(keyed[0]) == 8
    assert {line["key_fingerprint"] for line in access if line["path"] == "/healthz"} == {None}
    for line in access:
        assert isinstance(line["duration_ms"], (int, float)) and line["bytes"] > 0
        assert line["remote_addr"] == "127.0.0.1" and line["user_agent"].startswith("python-requests/")
    errors = [line for line in lines if line["logger"] == "gunicorn.error"]
    assert any(line["message"].startswith("Booting worker") for line in errors)
    assert any(line["level"] == "WARNING" and line["message"].startswith("Invalid request") for line in errors)
