"""The function app's settings, and the storage client they name.

Read from app settings (environment variables) with pydantic-settings, as the
service reads its own; a missing or bad value raises TriggerSettingsError
naming the setting. The local watcher adds its own few (``WatcherSettings``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from media_rules import parse_media_type, upload_container_problem


class TriggerSettingsError(RuntimeError):
    """A setting is missing or invalid; the message names it."""


class TriggerSettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    service_url: str
    service_api_key: str = Field(min_length=1)
    # Posed or wild, for blobs without media_type metadata.
    default_media_type: str = "ip"
    # Containers that are no uploads, as the service names them: its records, and
    # (when set) every name that does not match the pattern.
    job_records_container: str = "openface-jobs"
    upload_container_pattern: str | None = None
    # Retries of one call: Event Grid waits 30 s for the function, so keep the budget under it.
    service_max_attempts: int = Field(4, ge=1)
    service_backoff_seconds: float = Field(1.0, gt=0)
    service_backoff_max_seconds: float = Field(8.0, gt=0)
    service_retry_budget_seconds: float = Field(20.0, gt=0)
    service_connect_timeout_seconds: float = Field(5.0, gt=0)
    service_read_timeout_seconds: float = Field(15.0, gt=0)

    # The media storage account, by the Functions host's own conventions for a connection
    # named MediaStorage: a connection string, or a service URI for the app's identity.
    media_storage: str | None = Field(None, validation_alias="MediaStorage")
    media_storage_uri: str | None = Field(
        None, validation_alias=AliasChoices("MediaStorage__blobServiceUri", "MediaStorage__serviceUri")
    )
    media_storage_account: str | None = Field(None, validation_alias="MediaStorage__accountName")
    media_storage_client_id: str | None = Field(None, validation_alias="MediaStorage__clientId")
    # What the service itself reads; the last resort.
    azure_storage_connection_string: str | None = None

    @field_validator("service_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("upload_container_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
            return value.strip()
        return None

    def container_problem(self, name: str) -> str | None:
        """Why uploads to this container never start an analysis (the service would refuse it), or None."""
        pattern = re.compile(self.upload_container_pattern) if self.upload_container_pattern else None
        return upload_container_problem(name, frozenset({self.job_records_container}), pattern)

    @field_validator("default_media_type")
    @classmethod
    def _media_type(cls, value: str) -> str:
        if parse_media_type(value) is None:
            raise ValueError("must be one of ip, posed, iw, wild")
        return value.strip().lower()


class WatcherSettings(TriggerSettings):
    """The local watcher's: the function's, and how it polls and redelivers."""

    watch_interval_seconds: float = Field(2.0, gt=0)
    watch_retry_seconds: float = Field(10.0, gt=0)  # first redelivery delay, doubling up to 300 s
    watch_max_deliveries: int = Field(10, ge=1)
    # The service's own keys: the watcher calls it with the first when SERVICE_API_KEY is unset.
    api_keys: str = ""

    @model_validator(mode="before")
    @classmethod
    def _key_from_api_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("service_api_key") and data.get("api_keys"):
            keys = [key.strip() for key in str(data["api_keys"]).split(",") if key.strip()]
            data = {**data, "service_api_key": keys[0] if keys else ""}
        return data


def load(kind: type[TriggerSettings] = TriggerSettings, **overrides: Any) -> TriggerSettings:
    """The settings from the environment (``overrides`` win); errors name the setting."""
    try:
        return kind(**overrides)
    except ValidationError as exc:
        problems = [f"{_setting_name(error['loc'])}: {error['msg']}" for error in exc.errors()]
        raise TriggerSettingsError("invalid settings: " + "; ".join(problems)) from None


def _setting_name(loc: tuple) -> str:
    name = str(loc[0]) if loc else "settings"
    return name if "__" in name or name == "MediaStorage" else name.upper()


def storage_client(settings: TriggerSettings):
    """A ``BlobServiceClient`` for the media account: a connection string (Azurite), or the app's identity."""
    from azure.storage.blob import BlobServiceClient

    connection = (settings.media_storage or "").strip()
    if connection:
        return BlobServiceClient.from_connection_string(connection)
    uri = settings.media_storage_uri or (
        f"https://{settings.media_storage_account}.blob.core.windows.net" if settings.media_storage_account else None
    )
    if uri:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=settings.media_storage_client_id or None)
        return BlobServiceClient(account_url=uri, credential=credential)
    fallback = (settings.azure_storage_connection_string or "").strip()
    if fallback:
        return BlobServiceClient.from_connection_string(fallback)
    raise TriggerSettingsError(
        "no storage connection: set MediaStorage__blobServiceUri (identity-based, in Azure), "
        "or MediaStorage / AZURE_STORAGE_CONNECTION_STRING (a connection string, e.g. Azurite)"
    )
