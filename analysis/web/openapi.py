"""The API's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Written once, here beside the routes: the paths by hand, the response
schemas generated from the pydantic models below. Two tests keep it true:
tests/test_openapi.py checks that every Flask rule is documented and every
documented path is a rule, and fuzzes the running service with schemathesis
against this document.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from analysis.job import JobStatus

# Path parameters, as the routes accept them (any case for the two enums).
MEDIA_PATTERN = "^([iI][mM][aA][gG][eE]|[vV][iI][dD][eE][oO])$"
MEDIA_TYPE_PATTERN = "^([iI][pP]|[pP][oO][sS][eE][dD]|[iI][wW]|[wW][iI][lL][dD])$"
OUTPUTS_PATTERN = "^(aligned|hog|tracked)(,(aligned|hog|tracked))*$"
CONTAINER_PATTERN = "^[a-z0-9]+(-[a-z0-9]+)*$"
JOB_ID_PATTERN = "^[0-9a-f]{32}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(_Strict):
    error: str
    message: str


class JobRef(_Strict):
    job_id: str
    status: JobStatus
    status_url: str


class Input(_Strict):
    name: str
    etag: str
    size: int


class MediaResult(_Strict):
    blob: str
    status: str
    reason: str | None
    outputs: list[str]
    analysed_by: Literal["engine", "cli"] | None = Field(
        None, description="which of OpenFace's paths analysed it in this job: a resident engine or the executables"
    )


class JobSummary(_Strict):
    media: int
    by_status: dict[str, int]


class Progress(_Strict):
    media_total: int
    media_done: int
    percent: dict[str, int]


class Job(_Strict):
    job_id: str
    container: str
    media: Literal["image", "video"]
    media_type: Literal["posed", "wild"]
    faces: Literal["single", "multi"]
    extra_outputs: list[Literal["aligned", "hog", "tracked"]]
    options: list[str]
    inputs: list[Input]
    status: JobStatus
    attempts: int
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    outputs: list[str]
    results: list[MediaResult]
    summary: JobSummary | None
    error: str | None
    progress: Progress | None


class JobList(_Strict):
    container: str
    jobs: list[Job]


class Health(_Strict):
    status: Literal["ok"]


class Ready(_Strict):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]


MODELS = (Error, JobRef, Job, JobList, Health, Ready)


def query_parameters(document: dict, rule: str, method: str) -> set[str]:
    """The query parameters the document gives a Flask rule (``/jobs/<job_id>``) and method."""
    operation = document["paths"].get(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule), {}).get(method.lower(), {})
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}


def _json(model: type[BaseModel]) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


def _answer(description: str, model: type[BaseModel]) -> dict:
    return {"description": description, "content": _json(model)}


_ERRORS = {
    "400": _answer("a parameter breaks the rules; the message says which", Error),
    "401": _answer("missing or wrong X-API-Key", Error),
    "503": _answer("storage could not be reached; try again shortly", Error),
}
_PUBLIC: list = []  # no key needed


def _analyse(deprecated: bool) -> dict:
    return {
        "summary": "Start the analysis of every image or video in an upload container",
        "description": "Answers at once; the worker does the analysis. The same container, blob versions and "
        "options give the same job; a failed job is queued again by asking again.",
        "deprecated": deprecated,
        "parameters": [
            _parameter(
                "faces",
                "query",
                {"type": "string", "enum": ["single", "multi"], "default": "single"},
                "`multi` follows every face of a video (FaceLandmarkVidMulti); with `image` it is a 400",
                required=False,
            ),
            _parameter(
                "outputs",
                "query",
                {"type": "string", "pattern": OUTPUTS_PATTERN},
                "OpenFace outputs besides the CSV, a comma list of `aligned` (aligned faces, one zip), "
                "`hog` and `tracked` (the image or video with landmarks drawn)",
                required=False,
            ),
        ],
        "responses": {
            "202": _answer("a new job, queued", JobRef),
            "200": _answer("the job for these blob versions and options already exists", JobRef),
            "404": _answer("no such container", Error),
            **_ERRORS,
        },
    }


def _parameter(name: str, where: str, schema: dict, description: str, required: bool = True) -> dict:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


def document() -> dict:
    schemas = {}
    for model in MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    analyse_parameters = [
        _parameter("media", "path", {"type": "string", "pattern": MEDIA_PATTERN}, "`image` or `video`, any case"),
        _parameter(
            "media_type",
            "path",
            {"type": "string", "pattern": MEDIA_TYPE_PATTERN},
            "`ip`/`posed` or `iw`/`wild` (in-the-wild adds OpenFace's -wild), any case",
        ),
        _parameter(
            "name",
            "path",
            {"type": "string", "minLength": 3, "maxLength": 63, "pattern": CONTAINER_PATTERN},
            "the upload container",
        ),
    ]
    job_id = _parameter("job_id", "path", {"type": "string", "pattern": JOB_ID_PATTERN}, "a job id")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OpenFace on Azure Blob Storage",
            "version": "1",
            "description": "Runs OpenFace over the media of an upload container and writes the results "
            "back under processed/. See README.md, 'Outputs', for the result blobs.",
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/analyse/{media}/{media_type}/{name}": {
                "parameters": analyse_parameters,
                "post": {"operationId": "analyse", **_analyse(deprecated=False)},
                "get": {"operationId": "analyse_get", **_analyse(deprecated=True)},
            },
            "/jobs/{job_id}": {
                "get": {
                    "operationId": "job",
                    "summary": "A job's state, results and outputs",
                    "parameters": [job_id],
                    "responses": {"200": _answer("the job", Job), "404": _answer("no such job", Error), **_ERRORS},
                },
            },
            "/jobs": {
                "get": {
                    "operationId": "jobs_for_container",
                    "summary": "An upload container's jobs, newest first",
                    "parameters": [
                        _parameter("container", "query", analyse_parameters[2]["schema"], "the upload container"),
                        _parameter(
                            "limit",
                            "query",
                            {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                            "at most this many jobs",
                            required=False,
                        ),
                    ],
                    "responses": {"200": _answer("the jobs", JobList), **_ERRORS},
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness",
                    "security": _PUBLIC,
                    "responses": {"200": _answer("the process answers", Health)},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: storage reachable, OpenFace present",
                    "security": _PUBLIC,
                    "responses": {"200": _answer("ready", Ready), "503": _answer("not ready", Ready)},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": _PUBLIC,
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
