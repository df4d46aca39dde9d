"""Azure Blob Storage: listing an upload container, fetching media, writing results."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobPrefix, BlobServiceClient, ContentSettings, ExponentialRetry, StorageErrorCode
from azure.storage.queue import ExponentialRetry as QueueRetry
from azure.storage.queue import QueueServiceClient

from analysis.config import Settings
from media_rules import is_processed

log = logging.getLogger(__name__)


class ContainerNotFound(LookupError):
    pass


class BlobChanged(RuntimeError):
    """The blob's ETag is no longer the one the job was created for."""


@dataclass(frozen=True)
class BlobInput:
    """One blob as the job saw it when it was created."""

    name: str
    etag: str
    size: int
    content_type: str | None

    def to_dict(self) -> dict:
        return asdict(self)


class Listing(NamedTuple):
    """An upload container as a job sees it when it is made."""

    inputs: list[BlobInput]
    has_results: bool  # something is under processed/


def _credential():
    # Imported here: only deployments without a connection string need it.
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


_PROXY_SETTINGS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
_CA_BUNDLE_SETTINGS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def environment_options() -> dict:
    """Storage client options that read the environment once, rather than on every call.

    Trusting the environment costs requests a walk through it on every call,
    about a fifth of a storage call's CPU. Without proxy settings, all it
    would find there is a CA bundle, which is passed here instead.
    """
    if any(name.lower() in _PROXY_SETTINGS for name in os.environ):
        return {}
    bundle = next((os.environ[name] for name in _CA_BUNDLE_SETTINGS if os.environ.get(name)), None)
    return {"use_env_settings": False, **({"connection_verify": bundle} if bundle else {})}


def _client_options(settings: Settings, retry_class) -> dict:
    retry = retry_class(initial_backoff=1, increment_base=2, retry_total=settings.storage_retry_total)
    return {"retry_policy": retry, "connection_timeout": 10, **environment_options()}


def blob_service_client(settings: Settings) -> BlobServiceClient:
    options = _client_options(settings, ExponentialRetry)
    if settings.azure_storage_connection_string:
        return BlobServiceClient.from_connection_string(settings.azure_storage_connection_string, **options)
    return BlobServiceClient(settings.azure_storage_account_url, credential=_credential(), **options)


def queue_service_client(settings: Settings) -> QueueServiceClient:
    options = _client_options(settings, QueueRetry)
    if settings.azure_storage_connection_string:
        return QueueServiceClient.from_connection_string(settings.azure_storage_connection_string, **options)
    # The account URL names the blob endpoint; the queue endpoint differs only in host.
    url = settings.azure_storage_account_url.replace(".blob.", ".queue.", 1)
    return QueueServiceClient(url, credential=_credential(), **options)


def _plain_etag(etag: str) -> str:
    return etag.strip('"')


def first_line(exc: Exception) -> str:
    """Storage errors carry the whole response; one line says enough."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def metadata_value(text: str) -> str:
    """Blob metadata must be ASCII; blob names may not be."""
    return quote(text, safe="/._-:, ")


class MediaStore:
    def __init__(self, service: BlobServiceClient):
        self.service = service

    def list_inputs(self, container: str) -> Listing:
        """Every blob outside ``processed/``, in name order, and whether ``processed/`` holds anything.

        Listed folder by folder, so the outputs under ``processed/`` (several
        per media analysed) are never listed: they would cost more than the uploads.
        """
        client = self.service.get_container_client(container)
        blobs: list[BlobInput] = []
        has_results = False
        folders = [""]
        try:
            while folders:
                for item in client.walk_blobs(name_starts_with=folders.pop() or None, delimiter="/"):
                    if isinstance(item, BlobPrefix):
                        if is_processed(item.name):
                            has_results = True
                        else:
                            folders.append(item.name)
                        continue
                    blobs.append(
                        BlobInput(item.name, _plain_etag(item.etag), item.size, item.content_settings.content_type)
                    )
        except ResourceNotFoundError:
            raise ContainerNotFound(container) from None
        return Listing(sorted(blobs, key=lambda b: b.name), has_results)

    def read_head(self, container: str, blob: BlobInput, length: int) -> bytes:
        if blob.size == 0:
            return b""
        return self._download(container, blob, offset=0, length=min(length, blob.size)).readall()

    def download(self, container: str, blob: BlobInput, dest: Path) -> int:
        """Copy the blob's pinned version to ``dest``; returns the bytes read."""
        with dest.open("wb") as handle:
            return self._download(container, blob).readinto(handle)

    def download_result(self, container: str, name: str, dest: Path) -> int:
        """Copy one of our result blobs (any version) to ``dest``; ContainerNotFound or BlobChanged if gone."""
        client = self.service.get_blob_client(container, name)
        try:
            with dest.open("wb") as handle:
                return client.download_blob().readinto(handle)
        except ResourceNotFoundError as exc:
            if exc.error_code == StorageErrorCode.CONTAINER_NOT_FOUND:
                raise ContainerNotFound(container) from None
            raise BlobChanged(name) from None

    def _download(self, container: str, blob: BlobInput, **kwargs):
        client = self.service.get_blob_client(container, blob.name)
        try:
            # Pinning the ETag means we analyse exactly the version the job names.
            return client.download_blob(etag=f'"{blob.etag}"', match_condition=MatchConditions.IfNotModified, **kwargs)
        except ResourceModifiedError:
            raise BlobChanged(blob.name) from None
        except ResourceNotFoundError as exc:
            if exc.error_code == StorageErrorCode.CONTAINER_NOT_FOUND:
                raise ContainerNotFound(container) from None
            raise BlobChanged(blob.name) from None

    def upload_file(self, container: str, name: str, path: Path, metadata: dict, content_type: str) -> int:
        """Returns the bytes written, as every upload does."""
        with path.open("rb") as handle:
            self._upload(container, name, handle, metadata, content_type)
        return path.stat().st_size

    def upload_bytes(self, container: str, name: str, data: bytes, metadata: dict, content_type: str) -> int:
        self._upload(container, name, data, metadata, content_type)
        return len(data)

    def upload_json(
        self, container: str, name: str, document: dict, metadata: dict, if_etag: str | None | bool = False
    ) -> int:
        """``if_etag``: write only over that version (None: only where there is none), else BlobChanged."""
        body = json.dumps(document, indent=2, sort_keys=True).encode()
        self._upload(container, name, body, metadata, "application/json", if_etag)
        return len(body)

    def _upload(
        self, container: str, name: str, data, metadata: dict, content_type: str, if_etag: str | None | bool = False
    ) -> None:
        client = self.service.get_blob_client(container, name)
        if if_etag is False:
            condition = {"overwrite": True}
        elif if_etag is None:
            condition = {"overwrite": False}  # If-None-Match: *
        else:
            condition = {"overwrite": True, "etag": f'"{if_etag}"', "match_condition": MatchConditions.IfNotModified}
        try:
            client.upload_blob(
                data, metadata=metadata, content_settings=ContentSettings(content_type=content_type), **condition
            )
        except (ResourceModifiedError, ResourceExistsError):
            raise BlobChanged(name) from None
        except ResourceNotFoundError:
            raise ContainerNotFound(container) from None

    def state_of(self, container: str, name: str) -> tuple[dict[str, str] | None, str | None]:
        """A blob's metadata and ETag; (None, None) when there is no such blob."""
        try:
            properties = self.service.get_blob_client(container, name).get_blob_properties()
        except ResourceNotFoundError as exc:
            if exc.error_code == StorageErrorCode.CONTAINER_NOT_FOUND:
                raise ContainerNotFound(container) from None
            return None, None
        return properties.metadata or {}, _plain_etag(properties.etag)

    def current_etag(self, container: str, name: str) -> str | None:
        """The blob's ETag now; None when it was deleted."""
        return self.state_of(container, name)[1]

    def metadata_of(self, container: str, name: str) -> dict[str, str] | None:
        """One blob's metadata; None when there is no such blob."""
        return self.state_of(container, name)[0]

    def metadata_under(self, container: str, prefix: str) -> dict[str, dict[str, str]]:
        """Every blob under ``prefix`` with its metadata, in one listing."""
        client = self.service.get_container_client(container)
        try:
            return {b.name: b.metadata or {} for b in client.list_blobs(name_starts_with=prefix, include=["metadata"])}
        except ResourceNotFoundError:
            raise ContainerNotFound(container) from None
