"""A small JSON summary of one OpenFace CSV: detection, confidence, AUs, gaze and pose.

OpenFace separates header names and values with ", "; image CSVs have one
row per face, video CSVs one row per frame (with ``success`` per frame).
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

GAZE_COLUMNS = ("gaze_angle_x", "gaze_angle_y")
POSE_COLUMNS = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")


class InvalidCsv(ValueError):
    """The CSV is not what OpenFace writes; the message says what is wrong."""


def read_rows(path: Path) -> tuple[list[str], list[dict[str, float]]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle, skipinitialspace=True)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise InvalidCsv("CSV is empty") from None
        rows = []
        for number, values in enumerate(reader, start=2):
            if not values:
                continue
            if len(values) != len(header):
                raise InvalidCsv(f"line {number} has {len(values)} values, header has {len(header)}")
            try:
                rows.append({name: float(value) for name, value in zip(header, values)})
            except ValueError as exc:
                raise InvalidCsv(f"line {number}: {exc}") from None
    if "confidence" not in header:
        raise InvalidCsv("CSV has no 'confidence' column")
    return header, rows


def summarise(path: Path, is_video: bool) -> dict:
    header, rows = read_rows(path)
    if is_video:
        if "success" not in header:
            raise InvalidCsv("video CSV has no 'success' column")
        tracked = [row for row in rows if row["success"] >= 0.5]
        counts = {
            "frames": len(rows),
            "frames_with_face": len(tracked),
            "success_rate": _round(len(tracked) / len(rows)) if rows else 0.0,
            "faces": len({row["face_id"] for row in tracked}) if "face_id" in header else None,
        }
    else:
        tracked = rows
        counts = {"faces": len(rows)}
    au_intensity = sorted(name for name in header if name.startswith("AU") and name.endswith("_r"))
    au_presence = sorted(name for name in header if name.startswith("AU") and name.endswith("_c"))
    return {
        **counts,
        "mean_confidence": _mean(tracked, "confidence"),
        "au_intensity_mean": {name[:-2]: _mean(tracked, name) for name in au_intensity},
        "au_presence_rate": {name[:-2]: _mean(tracked, name) for name in au_presence},
        "gaze": _stats(tracked, [c for c in GAZE_COLUMNS if c in header]),
        "pose": _stats(tracked, [c for c in POSE_COLUMNS if c in header]),
    }


def has_face(summary: dict, is_video: bool) -> bool:
    return (summary["frames_with_face"] if is_video else summary["faces"]) > 0


def _stats(rows: list[dict[str, float]], columns: list[str]) -> dict:
    return {
        name: {
            "mean": _mean(rows, name),
            "std": _round(statistics.pstdev(row[name] for row in rows)) if rows else None,
            "min": min((row[name] for row in rows), default=None),
            "max": max((row[name] for row in rows), default=None),
        }
        for name in columns
    }


def _mean(rows: list[dict[str, float]], column: str) -> float | None:
    return _round(statistics.fmean(row[column] for row in rows)) if rows else None


def _round(value: float) -> float:
    return round(value, 6) if math.isfinite(value) else None
