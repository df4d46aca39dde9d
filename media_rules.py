"""What counts as an upload and as media, of which kind: the rules the service and the function app share.

Both deployables import this one module (the function app gets a copy when
it is packaged: bin/package-function), so an upload is judged the same way
where it is announced and where it is analysed. Standard library and
``filetype`` only.

A blob is judged by its first bytes first; its name and content type only
say what the uploader *claims*. A blob that claims to be media but is not
(empty, truncated, another format) still gets analysed as the claimed kind,
so the job can answer ``unreadable`` instead of staying silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath

import filetype

# Our own outputs live under this prefix in every upload container; they are
# never analysed, and never start an analysis.
PROCESSED_PREFIX = "processed/"

# Enough bytes for every signature ``filetype`` knows.
SNIFF_BYTES = 8192

# Containers Azure and its services keep for themselves ($logs, $web, $root, the
# change feed; the Functions host's azure-webjobs-*; diagnostic settings' insights-*).
RESERVED_CONTAINER_PREFIXES = ("$", "azure-webjobs-", "insights-logs-", "insights-metrics-")


class Media(str, Enum):
    IMAGE = "image"
    VIDEO = "video"


class MediaType(str, Enum):
    """Capture type: posed (lab) or in-the-wild. ``WILD`` adds OpenFace's ``-wild``."""

    POSED = "ip"
    WILD = "iw"


MEDIA_TYPE_ALIASES = {
    "ip": MediaType.POSED,
    "posed": MediaType.POSED,
    "iw": MediaType.WILD,
    "wild": MediaType.WILD,
}


class Faces(str, Enum):
    """How many faces to follow in a video: ``single`` (FeatureExtraction) or ``multi`` (FaceLandmarkVidMulti)."""

    SINGLE = "single"
    MULTI = "multi"


# OpenFace's optional outputs, by the name a caller asks for them with.
EXTRA_OUTPUTS = ("aligned", "hog", "tracked")

# Formats OpenFace reads (through OpenCV), by the extension we give the local copy.
READABLE_EXTENSIONS = {
    Media.IMAGE: frozenset({"jpg", "png", "bmp", "tif", "webp"}),
    Media.VIDEO: frozenset({"mp4", "m4v", "mov", "avi", "wmv", "mkv", "webm", "mpg", "flv", "3gp"}),
}
# Extensions an uploader uses for each kind. Wider than what OpenFace reads:
# a .gif named as an image gets an answer saying it cannot be read.
CLAIMED_EXTENSIONS = {
    Media.IMAGE: frozenset({"jpg", "jpeg", "jpe", "png", "bmp", "tif", "tiff", "webp", "gif"}),
    Media.VIDEO: READABLE_EXTENSIONS[Media.VIDEO] | {"mpeg", "asf"},
}
# filetype's names for formats we know under another extension.
_SNIFFED_ALIASES = {"jpeg": "jpg", "tiff": "tif", "apng": "png", "asf": "wmv", "mpeg": "mpg"}


@dataclass(frozen=True)
class Verdict:
    """What a blob is to us.

    ``kind`` is the kind to analyse it as (None: not media, leave it alone).
    ``extension`` is set when its bytes are a format OpenFace reads; when it is
    None the blob only claims to be media and its analysis ends ``unreadable``.
    """

    kind: Media | None
    extension: str | None = None

    @property
    def readable(self) -> bool:
        return self.extension is not None


def parse_media_type(value: str) -> MediaType | None:
    """``ip``/``posed``/``iw``/``wild`` in any case; None for anything else."""
    return MEDIA_TYPE_ALIASES.get(value.strip().lower())


def parse_faces(value: str) -> Faces | None:
    """``single`` or ``multi`` in any case; None for anything else."""
    try:
        return Faces(value.strip().lower())
    except ValueError:
        return None


def parse_extra_outputs(value: str) -> tuple[str, ...] | None:
    """A comma list of EXTRA_OUTPUTS, as a sorted tuple without repeats; None if any is unknown."""
    wanted = {part.strip().lower() for part in value.split(",") if part.strip()}
    if not wanted <= set(EXTRA_OUTPUTS):
        return None
    return tuple(sorted(wanted))


def upload_container_problem(name: str, own: frozenset[str] = frozenset(), pattern=None) -> str | None:
    """Why a container is not an upload container a caller may name, or None when it is.

    ``own``: the service's own containers (job records...). ``pattern``: a
    compiled regular expression every upload container's name must match in full.
    """
    if name in own:
        return f"container '{name}' is the service's own, not an upload container"
    if name.startswith(RESERVED_CONTAINER_PREFIXES):
        return f"container '{name}' is one Azure keeps for itself, not an upload container"
    if pattern is not None and not pattern.fullmatch(name):
        return f"container '{name}' does not match UPLOAD_CONTAINER_PATTERN ({pattern.pattern})"
    return None


def is_processed(blob_name: str) -> bool:
    return blob_name.startswith(PROCESSED_PREFIX)


def sniff(head: bytes) -> tuple[Media | None, str | None]:
    """(kind, extension) of the bytes, or (None, None) if not a format OpenFace reads."""
    guess = filetype.guess(head)
    if guess is None:
        return None, None
    extension = _SNIFFED_ALIASES.get(guess.extension, guess.extension)
    for kind, extensions in READABLE_EXTENSIONS.items():
        if extension in extensions:
            return kind, extension
    return None, None


def claimed_kind(blob_name: str, content_type: str | None) -> Media | None:
    """What the uploader says the blob is: its content type, else its extension."""
    essence = (content_type or "").split(";", 1)[0].strip().lower()
    if essence.startswith("image/"):
        return Media.IMAGE
    if essence.startswith("video/"):
        return Media.VIDEO
    extension = PurePosixPath(blob_name).suffix.lower().lstrip(".")
    for kind, extensions in CLAIMED_EXTENSIONS.items():
        if extension in extensions:
            return kind
    return None


def judge(blob_name: str, content_type: str | None, head: bytes) -> Verdict:
    """The content decides; the name and content type count only when the content says nothing."""
    kind, extension = sniff(head)
    if kind is not None:
        return Verdict(kind, extension)
    return Verdict(claimed_kind(blob_name, content_type))
