"""Deciding what a blob holds from its first bytes, not from its name."""

from __future__ import annotations

from pathlib import PurePosixPath

import filetype

from analysis.names import Media

# Enough bytes for every signature ``filetype`` knows.
SNIFF_BYTES = 8192

# Formats OpenFace reads through OpenCV, by the extension we give the local copy.
IMAGE_EXTENSIONS = {"jpg", "png", "bmp", "tif", "webp"}
VIDEO_EXTENSIONS = {"mp4", "mov", "avi", "wmv", "mkv", "webm", "mpg", "flv", "m4v"}

_CLAIMED_IMAGE = {"jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp"}
_CLAIMED_VIDEO = VIDEO_EXTENSIONS | {"asf", "mpeg", "3gp"}


def sniff(head: bytes) -> tuple[Media | None, str | None]:
    """Return (kind, extension) for the bytes, or (None, None) if not media we read."""
    kind = filetype.guess(head)
    if kind is None:
        return None, None
    ext = {"jpeg": "jpg", "tiff": "tif", "asf": "wmv", "mpeg": "mpg"}.get(kind.extension, kind.extension)
    if kind.mime.startswith("image/") and ext in IMAGE_EXTENSIONS:
        return Media.IMAGE, ext
    if kind.mime.startswith("video/") and ext in VIDEO_EXTENSIONS:
        return Media.VIDEO, ext
    if ext == "wmv":  # filetype reports ASF as application/vnd.ms-asf
        return Media.VIDEO, ext
    return None, None


def claimed_kind(blob_name: str, content_type: str | None) -> Media | None:
    """What the uploader says the blob is: its content type, else its extension."""
    if content_type:
        if content_type.startswith("image/"):
            return Media.IMAGE
        if content_type.startswith("video/"):
            return Media.VIDEO
    ext = PurePosixPath(blob_name).suffix.lower().lstrip(".")
    if ext in _CLAIMED_IMAGE:
        return Media.IMAGE
    if ext in _CLAIMED_VIDEO:
        return Media.VIDEO
    return None
