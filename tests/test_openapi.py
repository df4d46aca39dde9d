"""The OpenAPI document: it names exactly the routes there are, and the running service keeps to it."""

import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from analysis.web.openapi import document

METHODS = {"get", "post", "put", "patch", "delete"}


def test_every_rule_is_documented_and_every_documented_path_is_a_rule(app):
    rules = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document()["paths"].items() for method in item if method in METHODS}
    assert rules == documented


def test_the_document_is_served_without_a_key(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.json["openapi"] == "3.1.0"
    assert response.json["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    operations = [op for item in response.json["paths"].values() for name, op in item.items() if name in METHODS]
    assert all(op["responses"] for op in operations)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_running_service_keeps_to_its_document(live_service, mode):
    """Generated requests, valid and not, against gunicorn on Azurite: no server error, every answer as documented.

    A fixed number of examples per operation keeps the run bounded.
    """
    schema = schemathesis.openapi.from_url(f"{live_service.url}/openapi.json")
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = {
        f"{method.upper()} {path}" for path, item in document()["paths"].items() for method in item if method in METHODS
    }
    # Loaded from its own URL, schemathesis leaves that URL out.
    assert {operation.label for operation in operations} == documented - {"GET /openapi.json"}

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not list(operation.iter_parameters()):
            continue  # nothing to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def keeps_to_the_document(case):
            headers = {"X-API-Key": live_service.api_key}
            if _multi_faces_of_an_image(case):
                # A rule the document can only state in words: faces=multi is for videos.
                # A negative case may also carry headers of its own that are refused first.
                refusals = {400} if mode is GenerationMode.POSITIVE else {400, 401}
                assert case.call(headers=headers, session=session).status_code in refusals
                return
            case.call_and_validate(headers=headers, session=session)

        keeps_to_the_document()


def _multi_faces_of_an_image(case) -> bool:
    media = str((case.path_parameters or {}).get("media", "")).lower()
    return media == "image" and str((case.query or {}).get("faces", "")).lower() == "multi"
