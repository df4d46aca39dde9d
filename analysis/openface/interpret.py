"""What a media's OpenFace result means: its status, the files to publish, and its summary.

The CSV is summarised in one streaming pass (analysis/openface/summary.py):
a CSV without a face in any frame is ``no_face``; one we cannot read is
``failed`` rather than passed on. A video gets its plot, a bonus that never
fails the media.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from analysis.openface.outputs import zip_folder
from analysis.openface.plot import draw_video
from analysis.openface.results import FileResult, Outcome
from analysis.openface.summary import InvalidCsv, has_face, summarise
from media_rules import Media

log = logging.getLogger(__name__)

# An image's CSV is a row per face: small enough to keep at hand for other jobs' tables.
SMALL_CSV_BYTES = 1 << 20


@dataclass
class MediaOutcome:
    """What becomes of one OpenFace result: its status, the files to upload, its summary."""

    status: str
    reason: str | None = None
    files: dict[str, Path] = field(default_factory=dict)  # by output_names key
    stats: dict | None = None
    plot_error: str | None = None
    analysed_by: str | None = None  # "engine" or "cli"

    def small_csv(self, media: Media) -> bytes | None:
        """An image's CSV, when small: other jobs' tables then need not download it."""
        path = self.files.get("csv")
        if media is not Media.IMAGE or path is None or path.stat().st_size > SMALL_CSV_BYTES:
            return None
        return path.read_bytes()


def interpret(result: FileResult, media: Media, source: str, confidence_threshold: float) -> MediaOutcome:
    files = {"details": result.details} if result.details else {}
    for name, path in result.extras.items():
        if name != "aligned":
            files[name] = path
        elif any(path.iterdir()):  # OpenFace leaves an empty folder when it aligned no face
            files[name] = zip_folder(path, path.with_suffix(".zip"))
    by = result.analysed_by
    if result.outcome is not Outcome.ANALYSED:
        return MediaOutcome(result.outcome.value, result.reason, files, analysed_by=by)
    is_video = media is Media.VIDEO
    try:
        stats = summarise(result.csv, is_video, confidence_threshold=confidence_threshold)
    except InvalidCsv as exc:
        # OpenFace wrote something we cannot read: say so rather than pass it on.
        return MediaOutcome(Outcome.FAILED.value, f"OpenFace's CSV is malformed: {exc}", analysed_by=by)
    files["csv"] = result.csv
    if not has_face(stats, is_video):
        return MediaOutcome(Outcome.NO_FACE.value, "OpenFace found no face in any frame", files, stats, analysed_by=by)
    outcome = MediaOutcome(Outcome.ANALYSED.value, None, files, stats, analysed_by=by)
    if is_video:
        png = result.csv.with_suffix(".png")
        try:
            draw_video(result.csv, png, source)
            files["plot"] = png
        except Exception as exc:  # a picture is a bonus: never fail the media for it
            log.warning("could not draw the plot", extra={"blob": source, "error": repr(exc)})
            outcome.plot_error = f"{type(exc).__name__}: {exc}"[:500]
    return outcome
