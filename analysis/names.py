"""Validation of every name that reaches us from outside, and the names we derive.

Blob names never become local file names; they only become other blob names,
under ``processed/``, by the rules in ``output_names``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from media_rules import PROCESSED_PREFIX, Media, MediaType, upload_container_problem
from media_rules import parse_media_type as _media_type_or_none

JOB_MANIFEST_PREFIX = PROCESSED_PREFIX + "_jobs/"
OPTIONS_PREFIX = PROCESSED_PREFIX + "_options/"
# Folders of processed/ that hold our own names; a blob named like them would collide.
_RESERVED_FOLDERS = ("_jobs", "_options")

_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")
_JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
# Control characters and backslashes make names that tools display or split
# differently; "." and ".." segments may be collapsed by HTTP stacks.
_BAD_BLOB_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


# The seed pipeline's upload containers: one lower-case UUID per upload (UPLOAD_CONTAINER_PATTERN).
UUID_CONTAINER_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class InvalidName(ValueError):
    """A name from outside does not follow the rules; the message says which."""


class ContainerNotAllowed(InvalidName):
    """A well-formed container name that is not an upload container: the service's own, or Azure's."""


def parse_media(value: str) -> Media:
    try:
        return Media(value.lower())
    except ValueError:
        raise InvalidName(f"media must be 'image' or 'video', not {value!r}") from None


def parse_media_type(value: str) -> MediaType:
    media_type = _media_type_or_none(value)
    if media_type is None:
        raise InvalidName(f"media_type must be 'ip'/'posed' or 'iw'/'wild', not {value!r}")
    return media_type


def parse_container_name(value: str) -> str:
    """Azure container rules: 3-63 chars, lower-case letters, digits, single hyphens."""
    if not _CONTAINER_RE.match(value):
        raise InvalidName(
            "container name must be 3-63 lower-case letters, digits or single "
            f"hyphens, starting and ending with a letter or digit; got {value[:80]!r}"
        )
    return value


class UploadContainers:
    """Which containers a caller may name: never the service's own or Azure's, and, with a
    pattern, only those that match it. Checked before any storage call."""

    def __init__(self, own: frozenset[str], pattern: re.Pattern | None = None):
        self.own = own
        self.pattern = pattern

    def check(self, value: str) -> str:
        """The container name, or InvalidName (malformed) / ContainerNotAllowed (not an upload container)."""
        name = parse_container_name(value)
        problem = upload_container_problem(name, self.own, self.pattern)
        if problem:
            raise ContainerNotAllowed(problem)
        return name

    def allows(self, name: str) -> bool:
        try:
            self.check(name)
        except InvalidName:
            return False
        return True


def is_valid_queue_name(value: str) -> bool:
    # Queue names follow the same rules as container names.
    return bool(_CONTAINER_RE.match(value))


def is_valid_job_id(value: str) -> bool:
    return bool(_JOB_ID_RE.match(value))


def blob_name_problem(blob_name: str) -> str | None:
    """Why a blob name cannot be analysed safely, or None when it can."""
    first = blob_name.split("/", 1)[0]
    if first in _RESERVED_FOLDERS:
        return f"blob names starting with {first}/ are reserved for the results of jobs and options"
    return path_problem(blob_name)


def path_problem(blob_name: str) -> str | None:
    """Why a blob name cannot be used as a relative path (or to derive other names), or None."""
    if _BAD_BLOB_CHARS.search(blob_name):
        return "blob name contains control characters or backslashes"
    parts = blob_name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "blob name has an empty, '.' or '..' path segment"
    if len(blob_name) > 900:
        return "blob name is too long to derive output names from"
    return None


def blob_stem(blob_name: str) -> str:
    """``clips/a.b.mp4`` -> ``clips/a.b``: the name without its last extension."""
    path = PurePosixPath(blob_name)
    return str(path.with_suffix("")) if path.suffix else blob_name


def output_stems(blob_names: list[str]) -> dict[str, str]:
    """Map each blob to the stem its outputs use under ``processed/``.

    Two blobs with one stem (``face.jpg`` and ``face.png``) would overwrite
    each other's CSV, so both then keep their extension in the stem.
    """
    stems = {name: blob_stem(name) for name in blob_names}
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {name: (stem if counts[stem] == 1 else name) for name, stem in stems.items()}


def output_names(stem: str, options_tag: str | None = None) -> dict[str, str]:
    """Every result blob a media may get; options other than the defaults have a folder of their own."""
    base = (PROCESSED_PREFIX if options_tag is None else f"{OPTIONS_PREFIX}{options_tag}/") + stem
    return {
        "csv": base + ".csv",
        "details": base + "_of_details.txt",
        "hog": base + ".hog",
        "aligned": base + "_aligned.zip",
        "tracked_image": base + "_tracked.jpg",
        "tracked_video": base + "_tracked.avi",
        "plot": base + ".png",
        "summary": base + ".summary.json",
    }


def job_manifest_name(job_id: str) -> str:
    return f"{JOB_MANIFEST_PREFIX}{job_id}.json"


def job_table_name(job_id: str) -> str:
    """All of an image job's CSV rows in one table."""
    return f"{JOB_MANIFEST_PREFIX}{job_id}.csv"
