"""Settings, read once from the environment and checked before anything starts.

A missing or bad setting raises ``ConfigError`` whose message names the
variable, so a container that cannot start says why in its first log line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from analysis.keys import parse_api_keys
from analysis.names import UploadContainers, is_valid_queue_name
from media_rules import Media

IMAGE_EXECUTABLE = "FaceLandmarkImg"
VIDEO_EXECUTABLE = "FeatureExtraction"
MULTI_FACE_EXECUTABLE = "FaceLandmarkVidMulti"


def executable_for(media: Media) -> str:
    """The executable that analyses this kind of media, one face at a time."""
    return IMAGE_EXECUTABLE if media is Media.IMAGE else VIDEO_EXECUTABLE


def missing_executables(bin_dir: Path) -> list[str]:
    return [
        name
        for name in (IMAGE_EXECUTABLE, VIDEO_EXECUTABLE, MULTI_FACE_EXECUTABLE)
        if not os.access(bin_dir / name, os.X_OK)
    ]


# A job handed back because the worker's disk is full comes back after this.
DISK_FULL_DELAY_SECONDS = 10


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message names it."""


def retry_delay_seconds(attempt: int) -> int:
    """Seconds before a failed attempt's job is delivered again: 5, 10, 20..."""
    return 5 * 2 ** (attempt - 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Storage: a connection string (Azurite, or keys), or an account URL
    # used with DefaultAzureCredential (managed identity in Azure).
    azure_storage_connection_string: str | None = None
    azure_storage_account_url: str | None = None

    openface_bin_dir: Path
    api_keys: str = ""

    job_queue_name: str = "openface-jobs"
    job_records_container: str = "openface-jobs"
    # Upload containers must match this in full, when set (README: the UUID pattern).
    upload_container_pattern: str | None = None
    # Create the records container and the queues at start when missing: local runs
    # and tests. In Azure the deployment creates them and the apps may not.
    create_storage: bool = False
    # The openface-sandbox helper, when OpenFace runs as a user of its own (the image sets it).
    openface_sandbox: Path | None = None
    # Variables OpenFace gets besides its minimal environment (analysis/openface/sandbox.py).
    openface_env_passthrough: str = ""
    # auto: resident engines when openface-engine is in OPENFACE_BIN_DIR, else the executables.
    openface_engine: Literal["auto", "resident", "cli"] = "auto"
    # An engine is replaced after this many media, or once its memory passes this (analysis/openface/engine.py).
    engine_max_requests: int = Field(1000, ge=1)
    engine_max_rss_mb: float = Field(1500, gt=0)

    # Time OpenFace may spend on one media: this base plus an allowance per MB, up to the max;
    # and the time all of a job's media may take from its claim.
    openface_timeout_seconds: float = Field(120, gt=0)
    openface_timeout_seconds_per_mb: float = Field(30, ge=0)
    openface_timeout_max_seconds: float = Field(4 * 3600, gt=0)
    job_timeout_seconds: float = Field(6 * 3600, gt=0)
    # Address space of each OpenFace process (RLIMIT_AS); 0: no cap. Its peak is about 2 GB (multi-face video).
    openface_memory_limit_mb: int = Field(3072, ge=0)
    # Sized for a replica with 8 GiB of temporary disk: media over this are too_large, never downloaded;
    # a batch downloads only what leaves this much disk free.
    max_blob_bytes: int = Field(1024**3, gt=0)
    disk_reserve_bytes: int = Field(1024**3, ge=0)
    # Images declaring more pixels than this are too_large (read from the header, before OpenFace).
    max_image_pixels: int = Field(50_000_000, gt=0)
    # A face whose OpenFace confidence is below this is reported, but left out of an image's pooled statistics.
    face_confidence_threshold: float = Field(0.8, ge=0, le=1)
    max_attempts: int = Field(3, ge=1)
    queue_visibility_seconds: int = Field(60, ge=10, le=7 * 24 * 3600)
    # A queued job whose message went out longer ago than this, seen while the queue is empty,
    # has lost its message and is queued again (analysis/sweep.py); workers sweep this often.
    job_requeue_seconds: float = Field(900, gt=0)
    job_sweep_seconds: float = Field(300, gt=0)
    # Job records and their markers are deleted this long after their last change (deploy/main.bicep).
    job_record_days: int = Field(30, ge=1)
    # An idle worker looks at the queue this often: a lone job waits at most this long.
    worker_poll_seconds: float = Field(0.05, gt=0)
    # A worker takes every message waiting, up to this many, and runs their jobs as one batch;
    # while more keep arriving it goes on taking them for up to this long (a lone job never waits).
    batch_max_messages: int = Field(32, ge=1, le=256)
    batch_wait_seconds: float = Field(2.0, ge=0, le=30)
    # OpenFace processes a worker runs at once (OpenFace itself uses about one core).
    openface_processes: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64)
    # After SIGTERM the current job may finish within this; then it is handed back.
    worker_shutdown_grace_seconds: float = Field(25.0, ge=0)
    # Storage SDK retries (exponential, from 1 s); its default waits minutes.
    storage_retry_total: int = Field(3, ge=0, le=10)
    log_level: str = "INFO"
    # The worker serves Prometheus metrics on this port when it is set.
    metrics_port: int | None = Field(None, ge=1, le=65535)

    @field_validator("openface_bin_dir")
    @classmethod
    def _bin_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value.resolve()

    @field_validator("job_queue_name", "job_records_container")
    @classmethod
    def _storage_name(cls, value: str) -> str:
        # Queue and container names share Azure's rules.
        if not is_valid_queue_name(value):
            raise ValueError("must be 3-63 lower-case letters, digits or single hyphens")
        return value

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, value: str) -> str:
        parse_api_keys(value)
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

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @model_validator(mode="after")
    def _one_storage_source(self) -> Settings:
        if not (self.azure_storage_connection_string or self.azure_storage_account_url):
            raise ValueError(
                "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_URL to use DefaultAzureCredential"
            )
        return self

    @model_validator(mode="after")
    def _requeue_after_every_wait(self) -> Settings:
        # A queued job's message may sleep this long on purpose; only after it may it be called lost.
        longest = max(DISK_FULL_DELAY_SECONDS, retry_delay_seconds(max(1, self.max_attempts - 1)))
        if self.job_requeue_seconds <= longest:
            raise ValueError(
                f"JOB_REQUEUE_SECONDS must be over {longest}, the longest a queued job's "
                "message waits on purpose (retry delays, a full disk)"
            )
        return self

    @property
    def api_key_list(self) -> list[str]:
        return parse_api_keys(self.api_keys)

    @property
    def upload_containers(self) -> UploadContainers:
        pattern = re.compile(self.upload_container_pattern) if self.upload_container_pattern else None
        return UploadContainers(frozenset({self.job_records_container}), pattern)

    @property
    def poison_queue_name(self) -> str:
        return f"{self.job_queue_name}-poison"


def load_settings(**overrides) -> Settings:
    """Read settings from the environment; ``overrides`` win (used by tests)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "_".join(str(part) for part in err["loc"]).upper() or "settings"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
