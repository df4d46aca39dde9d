"""A small JSON summary of one OpenFace CSV: detection, confidence, AUs, gaze and pose.

OpenFace separates header names and values with ", "; image CSVs have one
row per face, video CSVs one row per frame and face (with ``success``).

The CSV is read in one pass keeping only running statistics, so memory stays
flat however long the video is (as a list of rows, an hour of video is GBs).

Units are OpenFace's: gaze angles and head rotation (pose_Rx/Ry/Rz) in
radians, head translation (pose_Tx/Ty/Tz) in millimetres from the camera,
timestamps in seconds; AU intensity 0 to 5, AU presence 0 or 1.

Images: every face is listed in ``per_face`` (the first MAX_IMAGE_FACES of
them; ``per_face_truncated`` says when there were more), and the pooled
statistics cover only the faces whose confidence reaches the threshold
(None where no face does): OpenFace's false detections (confidence ~0.02)
would swamp them otherwise.

Videos: statistics use only rows with success (a lost face is written as
zeros, not measurements); the confidence threshold does not apply. ``frames``
counts distinct frame numbers, ``frames_with_face`` those with at least one
successful row. fps is the frame-number span over the timestamp span, which
is (n-1)/(last-first) for a stream without gaps and stays right when
FaceLandmarkVidMulti writes no rows for frames where it tracks nobody.
With more than one face_id the pooled statistics would mix people: they are
left empty and ``per_face`` has them per face_id instead. At most
MAX_VIDEO_FACES face_ids are tracked; successful rows of any further ones
count in ``frames_with_face`` and ``rows_untracked`` only, and ``faces``
counts tracked face_ids (``per_face_truncated`` says when some were not).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

GAZE_COLUMNS = ("gaze_angle_x", "gaze_angle_y")
POSE_COLUMNS = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")
DEFAULT_CONFIDENCE_THRESHOLD = 0.8
# Caps that keep a pathological CSV's summary (and memory) bounded.
MAX_IMAGE_FACES = 100
MAX_VIDEO_FACES = 64


class InvalidCsv(ValueError):
    """The CSV is not what OpenFace writes; the message says what is wrong."""


class RunningStats:
    """Mean, population standard deviation, min and max of numbers given one at a time."""

    __slots__ = ("_m2", "_mean", "_partials", "count", "max", "min")

    def __init__(self) -> None:
        self.count = 0
        self.min: float | None = None
        self.max: float | None = None
        self._mean = 0.0  # Welford's running mean, only used to update _m2
        self._m2 = 0.0  # sum of squared differences from the mean
        self._partials: list[float] = []  # the exact sum of all values, see _add_to_sum

    def add(self, value: float) -> None:
        self.count += 1
        # Welford's update: a plain sum of squares loses the std to cancellation
        # when the values are large and close together (pose_Tz: ~500 mm +- 1).
        delta = value - self._mean
        self._mean += delta / self.count
        self._m2 += delta * (value - self._mean)
        # Same comparisons as the built-in min() and max().
        if self.count == 1:
            self.min = self.max = value
        elif value < self.min:
            self.min = value
        elif value > self.max:
            self.max = value
        self._add_to_sum(value)

    def _add_to_sum(self, value: float) -> None:
        # Welford's mean is off by a few ulps, enough to round 7/128 = 0.0546875
        # the other way. An exact sum gives what statistics.fmean gave.
        # Shewchuk's algorithm (as in math.fsum): the partials never overlap and
        # add up to exactly the sum; they are only a few floats long.
        kept = 0
        for partial in self._partials:
            if abs(value) < abs(partial):
                value, partial = partial, value
            total = value + partial
            error = partial - (total - value)
            if error:
                self._partials[kept] = error
                kept += 1
            value = total
        self._partials[kept:] = [value]

    def as_dict(self) -> dict:
        """mean and std rounded (None if there were no values); min and max as read."""
        if not self.count:
            return {"mean": None, "std": None, "min": None, "max": None}
        return {
            "mean": _round(math.fsum(self._partials) / self.count),
            "std": _round(math.sqrt(self._m2 / self.count)),
            "min": self.min,
            "max": self.max,
        }


class ColumnStats:
    """One RunningStats per column, fed whole rows.

    An image summary keeps one for the faces that pass the threshold, a video
    summary one per face_id.
    """

    def __init__(self, columns: Iterable[str]) -> None:
        self.by_column = {name: RunningStats() for name in columns}

    def add(self, row: dict[str, float]) -> None:
        for name, stats in self.by_column.items():
            stats.add(row[name])

    def __getitem__(self, column: str) -> RunningStats:
        return self.by_column[column]


class Measures:
    """The measurement columns one CSV has, grouped as the summary reports them."""

    def __init__(self, header: list[str]) -> None:
        self.au_intensity = sorted(name for name in header if name.startswith("AU") and name.endswith("_r"))
        self.au_presence = sorted(name for name in header if name.startswith("AU") and name.endswith("_c"))
        self.gaze = [name for name in GAZE_COLUMNS if name in header]
        self.pose = [name for name in POSE_COLUMNS if name in header]

    @property
    def columns(self) -> list[str]:
        return ["confidence", *self.au_intensity, *self.au_presence, *self.gaze, *self.pose]

    def statistics(self, stats: ColumnStats) -> dict:
        """The summary's statistics keys over the rows ``stats`` was fed."""
        return {
            "mean_confidence": stats["confidence"].as_dict()["mean"],
            "au_intensity_mean": {name[:-2]: stats[name].as_dict()["mean"] for name in self.au_intensity},
            "au_presence_rate": {name[:-2]: stats[name].as_dict()["mean"] for name in self.au_presence},
            "gaze": {name: stats[name].as_dict() for name in self.gaze},
            "pose": {name: stats[name].as_dict() for name in self.pose},
        }

    def values(self, row: dict[str, float]) -> dict:
        """One row's measurements as read, grouped like ``statistics``."""
        return {
            "au_intensity": {name[:-2]: _round(row[name]) for name in self.au_intensity},
            "au_presence": {name[:-2]: _round(row[name]) for name in self.au_presence},
            "gaze": {name: _round(row[name]) for name in self.gaze},
            "pose": {name: _round(row[name]) for name in self.pose},
        }


class ChangeCounter:
    """Counts runs of equal values: distinct frames, as OpenFace writes frames in order."""

    __slots__ = ("_last", "count")

    def __init__(self) -> None:
        self.count = 0
        self._last: float | None = None

    def add(self, value: float) -> None:
        if value != self._last:
            self.count += 1
            self._last = value


class Timing:
    """fps and duration from the first and last (frame, timestamp) of a video."""

    def __init__(self) -> None:
        self.first: tuple[float, float] | None = None
        self.last: tuple[float, float] | None = None

    def add(self, frame: float, timestamp: float) -> None:
        if self.first is None:
            self.first = (frame, timestamp)
        self.last = (frame, timestamp)

    def as_dict(self) -> dict:
        fps = self._fps()
        if fps is None:
            return {"fps": None, "duration_seconds": None}
        # The last frame lasts 1/fps too: 90 frames at 30 fps are 3 s.
        duration = self.last[1] - self.first[1] + 1 / fps
        return {"fps": round(fps, 3), "duration_seconds": round(duration, 3)}

    def _fps(self) -> float | None:
        if self.first is None:
            return None
        frames, seconds = self.last[0] - self.first[0], self.last[1] - self.first[1]
        # Needs two frames and two timestamps; NaN or inf (a corrupt file) give None too.
        fps = frames / seconds if frames > 0 and seconds > 0 else math.nan
        return fps if 0 < fps < math.inf else None


class FaceStreams:
    """One ColumnStats per face_id (None when the CSV has no face_id column)."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.by_face: dict[float | None, ColumnStats] = {}
        self.truncated = False
        self.rows_untracked = 0  # successful rows of face_ids past the cap

    def add(self, face_id: float | None, row: dict[str, float], success: bool) -> None:
        stats = self.by_face.get(face_id)
        if stats is None:
            if len(self.by_face) >= MAX_VIDEO_FACES:
                self.truncated = True
                if success:
                    self.rows_untracked += 1
                return
            # Created on a face_id's first row, successful or not, so a face
            # OpenFace never locked on to still shows in per_face.
            stats = self.by_face[face_id] = ColumnStats(self.columns)
        if success:
            stats.add(row)

    @property
    def multiple(self) -> bool:
        return len(self.by_face) > 1

    def with_success(self) -> int:
        return sum(1 for stats in self.by_face.values() if stats["confidence"].count)

    def only(self) -> ColumnStats:
        """The single face_id's statistics, empty if the CSV had no rows."""
        for stats in self.by_face.values():
            return stats
        return ColumnStats(self.columns)


def read_header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return _header(csv.reader(handle, skipinitialspace=True))


def tracked(row: dict) -> bool:
    """Whether OpenFace tracked the face in this row: where it lost it, the row holds zeros, not measurements."""
    return row["success"] >= 0.5


def iter_rows(path: Path, columns: Iterable[str]) -> Iterator[dict[str, float]]:
    """Each row as {column: value} for just ``columns``, one row at a time.

    Every line's value count is checked against the header, but only the
    values asked for are converted: float() on all 714 columns of a video row
    would be most of the time spent here.
    """
    with path.open(newline="") as handle:
        reader = csv.reader(handle, skipinitialspace=True)
        header = _header(reader)
        position = {name: index for index, name in enumerate(header)}
        wanted = [(name, position[name]) for name in columns]
        # Numbered by record, as the line numbers in our error messages always were.
        for number, values in enumerate(reader, start=2):
            if not values:
                continue
            if len(values) != len(header):
                raise InvalidCsv(f"line {number} has {len(values)} values, header has {len(header)}")
            try:
                row = {name: float(values[index]) for name, index in wanted}
            except ValueError as exc:
                raise InvalidCsv(f"line {number}: {exc}") from None
            yield row


def summarise(path: Path, is_video: bool, confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD) -> dict:
    """The summary of one CSV; ``confidence_threshold`` picks the image faces pooled."""
    header = read_header(path)
    # Checked before reading the rows: no point reading an hour of frames first.
    if "confidence" not in header:
        raise InvalidCsv("CSV has no 'confidence' column")
    if is_video and "success" not in header:
        raise InvalidCsv("video CSV has no 'success' column")
    measures = Measures(header)
    if is_video:
        return _summarise_video(path, header, measures)
    return _summarise_image(path, header, measures, confidence_threshold)


def _summarise_image(path: Path, header: list[str], measures: Measures, threshold: float) -> dict:
    passing = ColumnStats(measures.columns)
    per_face = []
    faces = 0
    extra = ["face"] if "face" in header else []
    for row in iter_rows(path, measures.columns + extra):
        passes = row["confidence"] >= threshold
        if passes:
            passing.add(row)
        if len(per_face) < MAX_IMAGE_FACES:
            number = _as_id(row["face"]) if "face" in row else faces
            face = {"face": number, "confidence": _round(row["confidence"]), "passes": passes}
            per_face.append({**face, **measures.values(row)})
        faces += 1
    return {
        "faces": faces,
        "faces_passing": passing["confidence"].count,
        "confidence_threshold": threshold,
        **measures.statistics(passing),
        "per_face": per_face,
        "per_face_truncated": faces > len(per_face),
    }


def _summarise_video(path: Path, header: list[str], measures: Measures) -> dict:
    extra = [name for name in ("frame", "timestamp", "face_id") if name in header]
    frames, frames_with_face = ChangeCounter(), ChangeCounter()
    timing = Timing()
    streams = FaceStreams(measures.columns)
    for number, row in enumerate(iter_rows(path, [*measures.columns, "success", *extra]), start=1):
        frame = row.get("frame", number)  # without a frame column, a row is a frame
        frames.add(frame)
        if "timestamp" in row:
            timing.add(frame, row["timestamp"])
        success = tracked(row)
        if success:
            frames_with_face.add(frame)
        streams.add(row.get("face_id"), row, success)

    summary = {
        "frames": frames.count,
        "frames_with_face": frames_with_face.count,
        "success_rate": _round(frames_with_face.count / frames.count) if frames.count else 0.0,
        "faces": streams.with_success() if "face_id" in header else None,
        **timing.as_dict(),
    }
    if not streams.multiple:
        return {**summary, **measures.statistics(streams.only())}
    return {
        **summary,
        # Pooled over several people these would describe nobody.
        "mean_confidence": None,
        "au_intensity_mean": {},
        "au_presence_rate": {},
        "gaze": {},
        "pose": {},
        "per_face": [
            {"face_id": _as_id(face_id), "frames_with_face": stats["confidence"].count, **measures.statistics(stats)}
            for face_id, stats in sorted(streams.by_face.items())
        ],
        "per_face_truncated": streams.truncated,
        "rows_untracked": streams.rows_untracked,
    }


def has_face(summary: dict, is_video: bool) -> bool:
    return (summary["frames_with_face"] if is_video else summary["faces"]) > 0


def _as_id(value: float) -> int | float:
    """Face numbers are read as floats; 0.0 reads better as 0 in JSON."""
    return int(value) if value.is_integer() else value


def _header(reader) -> list[str]:
    try:
        return [name.strip() for name in next(reader)]
    except StopIteration:
        raise InvalidCsv("CSV is empty") from None


def _round(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None
