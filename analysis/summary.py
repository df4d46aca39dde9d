"""A small JSON summary of one OpenFace CSV: detection, confidence, AUs, gaze and pose.

OpenFace separates header names and values with ", "; image CSVs have one
row per face, video CSVs one row per frame (with ``success`` per frame).

The CSV is read in one pass keeping only running statistics, so memory stays
flat however long the video is (as a list of rows, an hour of video is GBs).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

GAZE_COLUMNS = ("gaze_angle_x", "gaze_angle_y")
POSE_COLUMNS = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")


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

    The summary keeps one of these for all tracked rows; statistics per face
    would keep one per face (image) or per face_id (video).
    """

    def __init__(self, columns: Iterable[str]) -> None:
        self.by_column = {name: RunningStats() for name in columns}

    def add(self, row: dict[str, float]) -> None:
        for name, stats in self.by_column.items():
            stats.add(row[name])

    def __getitem__(self, column: str) -> RunningStats:
        return self.by_column[column]


def read_header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return _header(csv.reader(handle, skipinitialspace=True))


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


def summarise(path: Path, is_video: bool) -> dict:
    header = read_header(path)
    # Checked before reading the rows: no point reading an hour of frames first.
    if "confidence" not in header:
        raise InvalidCsv("CSV has no 'confidence' column")
    if is_video and "success" not in header:
        raise InvalidCsv("video CSV has no 'success' column")
    au_intensity = sorted(name for name in header if name.startswith("AU") and name.endswith("_r"))
    au_presence = sorted(name for name in header if name.startswith("AU") and name.endswith("_c"))
    gaze = [name for name in GAZE_COLUMNS if name in header]
    pose = [name for name in POSE_COLUMNS if name in header]
    stats = ColumnStats(["confidence", *au_intensity, *au_presence, *gaze, *pose])
    count_faces = is_video and "face_id" in header

    columns = list(stats.by_column)
    if is_video:
        columns.append("success")
    if count_faces:
        columns.append("face_id")
    rows = 0
    face_ids = set()  # distinct faces, not rows, so it stays small
    for row in iter_rows(path, columns):
        rows += 1
        # A frame where OpenFace lost the face has zeros, not measurements.
        if is_video and row["success"] < 0.5:
            continue
        if count_faces:
            face_ids.add(row["face_id"])
        stats.add(row)

    tracked = stats["confidence"].count
    if is_video:
        counts = {
            "frames": rows,
            "frames_with_face": tracked,
            "success_rate": _round(tracked / rows) if rows else 0.0,
            "faces": len(face_ids) if count_faces else None,
        }
    else:
        counts = {"faces": rows}
    return {
        **counts,
        "mean_confidence": stats["confidence"].as_dict()["mean"],
        "au_intensity_mean": {name[:-2]: stats[name].as_dict()["mean"] for name in au_intensity},
        "au_presence_rate": {name[:-2]: stats[name].as_dict()["mean"] for name in au_presence},
        "gaze": {name: stats[name].as_dict() for name in gaze},
        "pose": {name: stats[name].as_dict() for name in pose},
    }


def has_face(summary: dict, is_video: bool) -> bool:
    return (summary["frames_with_face"] if is_video else summary["faces"]) > 0


def _header(reader) -> list[str]:
    try:
        return [name.strip() for name in next(reader)]
    except StopIteration:
        raise InvalidCsv("CSV is empty") from None


def _round(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None
