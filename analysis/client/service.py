"""A client of the service and its storage: upload media, follow jobs, fetch results.

For people and scripts outside the service (bin/local-run uses it); nothing
on the service's own path imports it. Every failure is a ``ClientError`` with
one line that says what to do.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path, PurePosixPath

import requests
from azure.storage.blob import BlobServiceClient, ContentSettings

from analysis.job import JobStatus
from analysis.names import PROCESSED_PREFIX, path_problem

FINAL_STATES = frozenset(status.value for status in JobStatus if status.is_final)


class ClientError(RuntimeError):
    """Something the caller can fix; the message says what."""


class ServiceClient:
    """The service's HTTP API with one key."""

    def __init__(self, url: str, api_key: str, timeout: float = 30):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers.update({"X-API-Key": api_key, "Accept": "application/json"})

    def analyse(self, media: str, media_type: str, container: str, options: dict[str, str] | None = None) -> dict:
        """``options``: the query parameters ``faces`` and ``outputs``, when asked for."""
        return self._call("POST", f"/analyse/{media}/{media_type}/{container}", params=options or None)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/jobs/{job_id}")

    def jobs(self, container: str) -> list[dict]:
        """The container's jobs, newest first."""
        return self._call("GET", "/jobs", params={"container": container})["jobs"]

    def _call(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self.http.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.ConnectionError:
            raise ClientError(f"no service answers at {self.url}; is it running?") from None
        except requests.Timeout:
            raise ClientError(f"the service at {self.url} did not answer within {self.timeout:g} s") from None
        if response.status_code == 401:
            raise ClientError(f"the service at {self.url} refused the API key (401)")
        try:
            body = response.json()
        except ValueError:
            raise ClientError(f"{method} {path}: HTTP {response.status_code}, not JSON") from None
        if response.status_code >= 400:
            raise ClientError(f"{method} {path}: HTTP {response.status_code}: {body.get('message', body)}")
        return body


def content_type_of(path: Path) -> str | None:
    return mimetypes.guess_type(path.name)[0]


def upload(blobs: BlobServiceClient, path: Path, container: str, metadata: dict[str, str]) -> str:
    """Upload one file under its own name, with its content type; returns the blob name."""
    content_type = content_type_of(path)
    with path.open("rb") as handle:
        blobs.get_blob_client(container, path.name).upload_blob(
            handle,
            overwrite=True,
            metadata=metadata,
            content_settings=ContentSettings(content_type=content_type) if content_type else None,
        )
    return path.name


def download_results(blobs: BlobServiceClient, container: str, dest: Path) -> list[Path]:
    """Copy the container's ``processed/`` into ``dest``, keeping its folders; returns the files."""
    written = []
    for blob in blobs.get_container_client(container).list_blobs(name_starts_with=PROCESSED_PREFIX):
        relative = blob.name[len(PROCESSED_PREFIX) :]
        if path_problem(relative):
            continue  # nothing outside dest, whatever a blob is called
        target = dest.joinpath(*PurePosixPath(relative).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        with partial.open("wb") as handle:
            blobs.get_blob_client(container, blob.name).download_blob().readinto(handle)
        os.replace(partial, target)
        written.append(target)
    return written
