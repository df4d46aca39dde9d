import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.openface.summary import (
    DEFAULT_CONFIDENCE_THRESHOLD,
    MAX_IMAGE_FACES,
    MAX_VIDEO_FACES,
    InvalidCsv,
    RunningStats,
    has_face,
    summarise,
)

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "openface_standin" / "templates"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "openface-reference"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/openface-reference not present")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "out.csv"
    path.write_text(text)
    return path


def write_openface(path: Path, kind: str, rows: list[dict]) -> Path:
    """A CSV with OpenFace's real header for kind ("image" or "video"); each
    row is a real row's values with the given columns replaced."""
    header = (TEMPLATES / f"{kind}_header.txt").read_text().rstrip("\n").split(", ")
    template = dict(zip(header, (TEMPLATES / f"{kind}_row.txt").read_text().rstrip("\n").split(", ")))
    lines = [", ".join(header)]
    lines += [", ".join(str(row.get(name, template[name])) for name in header) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def image_face(face: int, confidence: float) -> dict:
    """Values that differ from face to face in every group the summary reports."""
    return {
        "face": face,
        "confidence": confidence,
        "AU01_r": 0.5 + face,
        "AU12_r": 1.25 * face,
        "AU12_c": face % 2,
        "gaze_angle_x": 0.1 * face - 0.2,
        "gaze_angle_y": 0.05 * face,
        "pose_Tx": -110.9 + 400 * face,
        "pose_Rz": 0.01 * face,
    }


# Like sample2.jpg's: one real face and two false detections, the real one in
# the middle so that CSV order is not confidence order.
THREE_FACES = [image_face(0, 0.017), image_face(1, 0.85), image_face(2, 0.017)]


def test_image_pools_only_the_faces_that_pass(tmp_path):
    summary = summarise(write_openface(tmp_path / "img.csv", "image", THREE_FACES), is_video=False)
    assert (summary["faces"], summary["faces_passing"]) == (3, 1)
    assert summary["confidence_threshold"] == DEFAULT_CONFIDENCE_THRESHOLD == 0.8
    per_face = summary["per_face"]
    assert [(face["face"], face["confidence"], face["passes"]) for face in per_face] == [
        (0, 0.017, False),
        (1, 0.85, True),
        (2, 0.017, False),
    ]
    assert summary["per_face_truncated"] is False
    # Values as read, one face each.
    assert per_face[2]["au_intensity"]["AU12"] == 2.5 and per_face[2]["au_presence"]["AU12"] == 0.0
    assert per_face[2]["gaze"] == {"gaze_angle_x": 0.0, "gaze_angle_y": 0.1}
    assert per_face[0]["pose"]["pose_Tx"] == -110.9 and per_face[2]["pose"]["pose_Tx"] == 689.1
    assert len(per_face[0]["au_intensity"]) == 17 and len(per_face[0]["au_presence"]) == 18
    # The pooled statistics are the passing face's values, nothing of the others.
    passing = per_face[1]
    assert summary["mean_confidence"] == passing["confidence"]
    assert summary["au_intensity_mean"] == passing["au_intensity"]
    assert summary["au_presence_rate"] == passing["au_presence"]
    for group in ("gaze", "pose"):
        assert summary[group] == {
            name: {"mean": value, "std": 0.0, "min": value, "max": value} for name, value in passing[group].items()
        }
    assert has_face(summary, is_video=False)


@pytest.mark.parametrize("threshold,passing", [(0.01, [0, 1, 2]), (0.5, [1]), (0.85, [1]), (0.9, [])])
def test_the_threshold_decides_which_faces_are_pooled(tmp_path, threshold, passing):
    csv = write_openface(tmp_path / "img.csv", "image", THREE_FACES)
    summary = summarise(csv, is_video=False, confidence_threshold=threshold)
    assert summary["confidence_threshold"] == threshold
    assert [face["face"] for face in summary["per_face"] if face["passes"]] == passing
    assert summary["faces_passing"] == len(passing)
    tx = [THREE_FACES[face]["pose_Tx"] for face in passing]
    assert summary["pose"]["pose_Tx"]["mean"] == (pytest.approx(statistics.fmean(tx)) if tx else None)
    if not passing:
        assert summary["mean_confidence"] is None and summary["au_intensity_mean"]["AU12"] is None
    # Faces were found either way; the threshold only says which to trust.
    assert summary["faces"] == 3 and has_face(summary, is_video=False)


def test_image_per_face_is_capped(tmp_path):
    faces = MAX_IMAGE_FACES + 5
    csv = write(tmp_path, "face, confidence\n" + "".join(f"{face}, 0.9\n" for face in range(faces)))
    summary = summarise(csv, is_video=False)
    assert (summary["faces"], summary["faces_passing"]) == (faces, faces)
    assert len(summary["per_face"]) == MAX_IMAGE_FACES and summary["per_face_truncated"] is True
    assert summary["per_face"][-1]["face"] == MAX_IMAGE_FACES - 1


def test_video_summary_counts_only_tracked_frames(tmp_path):
    csv = write(
        tmp_path,
        (
            "frame, face_id, timestamp, confidence, success, gaze_angle_x, gaze_angle_y, pose_Rx, AU01_r, AU01_c\n"
            "1, 0, 0.000, 0.98, 1, 0.2, 0.1, 0.05, 1.5, 1\n"
            "2, 0, 0.033, 0.02, 0, 0.0, 0.0, 0.00, 0.0, 0\n"
            "3, 0, 0.067, 0.90, 1, 0.4, 0.3, 0.15, 0.5, 0\n"
        ),
    )
    summary = summarise(csv, is_video=True)
    assert summary["frames"] == 3
    assert summary["frames_with_face"] == 2
    assert summary["success_rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert summary["mean_confidence"] == pytest.approx(0.94)
    assert summary["au_intensity_mean"] == {"AU01": pytest.approx(1.0)}
    assert summary["au_presence_rate"] == {"AU01": pytest.approx(0.5)}
    assert summary["gaze"]["gaze_angle_x"]["mean"] == pytest.approx(0.3)
    assert summary["gaze"]["gaze_angle_x"]["std"] == pytest.approx(0.1)
    assert summary["pose"]["pose_Rx"]["max"] == pytest.approx(0.15)
    assert summary["faces"] == 1 and "per_face" not in summary
    assert has_face(summary, is_video=True)


def test_video_without_a_tracked_frame_has_no_face(tmp_path):
    csv = write(tmp_path, "frame, face_id, timestamp, confidence, success\n1, 0, 0.000, 0.01, 0\n")
    summary = summarise(csv, is_video=True)
    assert summary["frames_with_face"] == 0 and summary["mean_confidence"] is None
    assert summary["faces"] == 0
    # One timestamp gives no frame rate.
    assert (summary["fps"], summary["duration_seconds"]) == (None, None)
    assert not has_face(summary, is_video=True)


def video_rows(frames: int, fps: float, timestamp) -> list[dict]:
    """One face in frames 1 to frames, timestamp(seconds) written as the time."""
    return [{"frame": frame, "face_id": 0, "timestamp": timestamp((frame - 1) / fps)} for frame in range(1, frames + 1)]


def milliseconds(seconds: float) -> str:
    return f"{seconds:.3f}"  # as OpenFace writes timestamps


@pytest.mark.parametrize(
    "frames,fps,timestamp,expected",
    [
        (90, 30, repr, (30.0, 3.0)),
        (50, 25, milliseconds, (25.0, 2.0)),
        # 2.967 s for 89 frame times: milliseconds cost a short video's fps its last digits.
        (90, 30, milliseconds, (29.997, 3.0)),
        (2, 10, repr, (10.0, 0.2)),
    ],
)
def test_video_timing_comes_from_the_timestamps(tmp_path, frames, fps, timestamp, expected):
    csv = write_openface(tmp_path / "vid.csv", "video", video_rows(frames, fps, timestamp))
    summary = summarise(csv, is_video=True)
    assert (summary["fps"], summary["duration_seconds"]) == expected
    assert summary["frames"] == summary["frames_with_face"] == frames


@pytest.mark.parametrize("timestamps", [(0.5, 0.5), (0.0, "inf"), (0.0, "nan"), (1.0, 0.5)])
def test_video_timing_needs_two_timestamps_in_order(tmp_path, timestamps):
    csv = write(
        tmp_path,
        "frame, timestamp, confidence, success\n"
        + "".join(f"{frame}, {timestamp}, 0.9, 1\n" for frame, timestamp in enumerate(timestamps, start=1)),
    )
    summary = summarise(csv, is_video=True)
    assert (summary["fps"], summary["duration_seconds"]) == (None, None)
    assert summary["frames"] == 2


def test_video_without_timestamps_has_no_timing(tmp_path):
    csv = write(tmp_path, "confidence, success\n0.9, 1\n0.9, 1\n0.9, 0\n")
    summary = summarise(csv, is_video=True)
    assert (summary["frames"], summary["frames_with_face"], summary["faces"]) == (3, 2, None)
    assert (summary["fps"], summary["duration_seconds"]) == (None, None)


def multi_face_rows() -> list[dict]:
    """FaceLandmarkVidMulti-like: faces 0 to 2 in frames 1-10 and 21-30,
    nobody (so no rows) in frames 11-20, face 2 lost in frames 21-30 and
    every face lost in frame 5. Rows in a frame are not in face_id order."""
    rows = []
    for frame in [*range(1, 11), *range(21, 31)]:
        for face in (2, 0, 1):
            success = frame != 5 and not (face == 2 and frame > 20)
            values = {
                "confidence": 0.9 + 0.03 * face,
                "AU12_r": face + frame % 2,
                "AU12_c": frame % 2,
                "gaze_angle_x": 0.1 * face,
                "pose_Tx": 100.0 * face + frame,
            }
            if not success:
                values = {name: 0 for name in values}
            rows.append(
                {
                    "frame": frame,
                    "face_id": face,
                    "timestamp": f"{(frame - 1) / 10:.3f}",
                    "success": int(success),
                    **values,
                }
            )
    return rows


def test_multi_face_video_has_statistics_per_face(tmp_path):
    summary = summarise(write_openface(tmp_path / "multi.csv", "video", multi_face_rows()), is_video=True)
    # Frames are distinct frame numbers, not rows; 5 had no face.
    assert (summary["frames"], summary["frames_with_face"], summary["faces"]) == (20, 19, 3)
    assert summary["success_rate"] == 0.95
    # Frame numbers 1-30 over 2.9 s: the gap does not slow the frame rate.
    assert (summary["fps"], summary["duration_seconds"]) == (10.0, 3.0)
    # Pooled over several people the statistics would describe nobody.
    assert summary["mean_confidence"] is None
    assert [summary[group] for group in ("au_intensity_mean", "au_presence_rate", "gaze", "pose")] == [{}] * 4
    assert (summary["per_face_truncated"], summary["rows_untracked"]) == (False, 0)
    per_face = summary["per_face"]
    assert [(face["face_id"], face["frames_with_face"]) for face in per_face] == [(0, 19), (1, 19), (2, 9)]
    for face, tracked in zip(per_face, (19, 19, 9)):
        number = face["face_id"]
        frames = [frame for frame in [*range(1, 11), *range(21, 31)] if frame != 5][:tracked]
        tx = [100.0 * number + frame for frame in frames]
        assert face["mean_confidence"] == pytest.approx(0.9 + 0.03 * number)
        assert face["au_intensity_mean"]["AU12"] == pytest.approx(number + statistics.fmean(f % 2 for f in frames))
        assert face["au_presence_rate"]["AU12"] == round(statistics.fmean(f % 2 for f in frames), 6)
        gaze = pytest.approx(0.1 * number)
        assert face["gaze"]["gaze_angle_x"] == {"mean": gaze, "std": 0.0, "min": gaze, "max": gaze}
        assert face["pose"]["pose_Tx"] == {
            "mean": round(statistics.fmean(tx), 6),
            "std": pytest.approx(statistics.pstdev(tx), abs=1e-6),
            "min": min(tx),
            "max": max(tx),
        }
        assert len(face["au_intensity_mean"]) == 17 and set(face["pose"]) == {
            "pose_Tx",
            "pose_Ty",
            "pose_Tz",
            "pose_Rx",
            "pose_Ry",
            "pose_Rz",
        }
    assert has_face(summary, is_video=True)


def test_video_face_ids_past_the_cap_are_counted_not_tracked(tmp_path):
    faces = MAX_VIDEO_FACES + 6
    rows = "".join(
        f"{frame}, {face}, {frame / 30:.3f}, 0.9, {int(frame == 1)}\n" for frame in (1, 2) for face in range(faces)
    )
    summary = summarise(write(tmp_path, "frame, face_id, timestamp, confidence, success\n" + rows), is_video=True)
    assert [face["face_id"] for face in summary["per_face"]] == list(range(MAX_VIDEO_FACES))
    assert (summary["per_face_truncated"], summary["rows_untracked"]) == (True, 6)
    assert (summary["frames"], summary["frames_with_face"], summary["faces"]) == (2, 1, MAX_VIDEO_FACES)


@pytest.mark.parametrize(
    "text,problem",
    [
        ("", "empty"),
        ("face, confidence\n0, 0.9, 7\n", "line 2 has 3 values"),
        ("face, confidence\n0, high\n", "line 2"),
        ("face, certainty\n0, 0.9\n", "confidence"),
    ],
)
def test_malformed_csv_is_reported(tmp_path, text, problem):
    with pytest.raises(InvalidCsv, match=problem):
        summarise(write(tmp_path, text), is_video=False)


@needs_reference
def test_real_image_csv_with_three_faces():
    summary = summarise(REFERENCE / "img_sample2" / "sample2.csv", is_video=False)
    assert (summary["faces"], summary["faces_passing"]) == (3, 1)
    assert [face["confidence"] for face in summary["per_face"]] == [0.85, 0.017, 0.017]
    # Pooled over all three, pose_Tx was -84.7 +- 778.8 mm; the real face is at -110.9.
    assert summary["mean_confidence"] == 0.85
    assert summary["pose"]["pose_Tx"]["mean"] == summary["per_face"][0]["pose"]["pose_Tx"] == -110.9
    assert len(summary["au_intensity_mean"]) == 17 and len(summary["au_presence_rate"]) == 18
    assert set(summary["pose"]) == {"pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"}


@needs_reference
def test_real_video_csv():
    summary = summarise(REFERENCE / "vid_default" / "default.csv", is_video=True)
    assert summary["frames"] == 288
    assert summary["faces"] == 1 and "per_face" not in summary
    assert 0.9 < summary["success_rate"] <= 1
    assert (summary["fps"], summary["duration_seconds"]) == (15.0, 19.2)


@needs_reference
def test_real_multi_face_video_csv():
    summary = summarise(REFERENCE / "vidmulti" / "multi_face.csv", is_video=True)
    assert (summary["frames"], summary["frames_with_face"], summary["faces"]) == (100, 100, 3)
    assert summary["fps"] == 30.0 and summary["mean_confidence"] is None
    per_face = [(face["face_id"], face["frames_with_face"]) for face in summary["per_face"]]
    assert per_face == [(0, 97), (1, 100), (2, 100)]


def test_summary_matches_a_plain_computation_over_all_rows(tmp_path):
    rng = random.Random(20240611)
    columns = [
        "frame",
        "face_id",
        "timestamp",
        "confidence",
        "success",
        "gaze_angle_x",
        "gaze_angle_y",
        "pose_Tz",
        "pose_Rx",
        "AU01_r",
        "AU12_r",
        "AU01_c",
    ]
    # 160 frames, every 5th lost: 128 tracked, 7 of them with AU01 present.
    # 7/128 = 0.0546875 sits on a rounding tie: a mean a few ulps off, as
    # Welford's running mean can be, may round it the other way.
    present = set(rng.sample([f for f in range(1, 161) if f % 5], 7))
    lines, tracked = [", ".join(columns)], []
    for frame in range(1, 161):
        if frame % 5 == 0:
            lines.append(f"{frame}, 0, {(frame - 1) / 30:.3f}, " + ", ".join(["0"] * 9))
            continue
        values = [
            f"{rng.uniform(0.8, 1.0):.2f}",
            "1",
            f"{rng.gauss(0.1, 0.2):.3f}",
            f"{rng.gauss(0, 0.1):.3f}",
            f"{rng.gauss(500, 1):.1f}",
            f"{rng.gauss(0, 0.05):.3f}",
            f"{rng.uniform(0, 5):.2f}",
            f"{rng.uniform(0, 5):.2f}",
            "1" if frame in present else "0",
        ]
        lines.append(f"{frame}, 0, {(frame - 1) / 30:.3f}, " + ", ".join(values))
        tracked.append(dict(zip(columns[3:], map(float, values))))
    summary = summarise(write(tmp_path, "\n".join(lines) + "\n"), is_video=True)

    def mean(name):
        return round(statistics.fmean(row[name] for row in tracked), 6)

    assert (summary["frames"], summary["frames_with_face"], summary["faces"]) == (160, 128, 1)
    assert summary["success_rate"] == 0.8
    assert summary["mean_confidence"] == mean("confidence")
    assert summary["au_intensity_mean"] == {"AU01": mean("AU01_r"), "AU12": mean("AU12_r")}
    assert summary["au_presence_rate"] == {"AU01": round(7 / 128, 6)} == {"AU01": mean("AU01_c")}
    for group, names in (("gaze", ["gaze_angle_x", "gaze_angle_y"]), ("pose", ["pose_Tz", "pose_Rx"])):
        assert list(summary[group]) == names
        for name in names:
            values = [row[name] for row in tracked]
            assert summary[group][name] == {
                "mean": mean(name),
                # Exact here, but a last-ulp difference could flip the 6th decimal.
                "std": pytest.approx(round(statistics.pstdev(values), 6), abs=1e-6),
                "min": min(values),
                "max": max(values),
            }


def test_running_stats_stay_accurate_for_large_close_values():
    # pose_Tz-like values: a sum of squares would lose most digits of the std.
    rng = random.Random(5)
    values = [rng.gauss(1e6, 0.5) for _ in range(20_000)]
    stats = RunningStats()
    for value in values:
        stats.add(value)
    assert stats.count == len(values)
    assert stats.as_dict()["mean"] == round(statistics.fmean(values), 6)
    assert stats.as_dict()["std"] == pytest.approx(statistics.pstdev(values), abs=1e-6)
    assert RunningStats().as_dict() == {"mean": None, "std": None, "min": None, "max": None}


def write_video_csv(path: Path, frames: int, lose_every: int, faces: int = 1) -> None:
    """frames frames of one row per face_id (0 to faces-1) with the real
    714-column header; face k has no face where (frame + k) % lose_every == 0."""
    header = (TEMPLATES / "video_header.txt").read_text().rstrip("\n")
    template = (TEMPLATES / "video_row.txt").read_text().rstrip("\n").split(", ")
    # After frame, face_id and timestamp: a real tracked frame's values, or
    # zeros (confidence and success included) as OpenFace writes a lost frame.
    found = ", ".join(template[3:])
    lost = ", ".join(["0"] * len(template[3:]))
    with path.open("w") as out:
        out.write(header + "\n")
        for start in range(1, frames + 1, 5_000):
            out.write(
                "".join(
                    f"{frame}, {face}, {(frame - 1) / 30:.3f}, {lost if (frame + face) % lose_every == 0 else found}\n"
                    for frame in range(start, min(start + 5_000, frames + 1))
                    for face in range(faces)
                )
            )


MEASURE = """
import json, resource, sys
from pathlib import Path
from analysis.openface.summary import summarise
summary = summarise(Path(sys.argv[1]), is_video=True)
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **summary}))
"""
# On Linux a child's ru_maxrss includes the RSS of the process it was forked
# from (the high-water mark survives exec), so started straight from pytest
# the figure would include pytest's own memory. A small relay keeps it out.
RELAY = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def summarise_measured(csv: Path) -> dict:
    """summarise(csv) in a fresh process, with its peak memory as peak_mb."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, "-c", RELAY, sys.executable, "-c", MEASURE, str(csv)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    csv.unlink()  # over 400 MB; pytest keeps the last few tmp_paths
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB only on Linux")
def test_memory_stays_flat_for_a_long_video(tmp_path):
    frames, lose_every = 100_000, 7
    csv = tmp_path / "long.csv"
    write_video_csv(csv, frames, lose_every)
    result = summarise_measured(csv)
    tracked = frames - frames // lose_every
    assert (result["frames"], result["frames_with_face"]) == (frames, tracked)
    assert result["success_rate"] == round(tracked / frames, 6)
    assert result["mean_confidence"] == 0.98
    assert (result["fps"], result["duration_seconds"]) == (30.0, 3333.333)
    # Reading all rows into memory first, as summary.py once did, peaked at 4.7 GB.
    assert result["peak_mb"] < 150


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB only on Linux")
def test_memory_stays_flat_for_a_long_multi_face_video(tmp_path):
    frames, lose_every, faces = 34_000, 7, 3  # 102,000 rows
    csv = tmp_path / "long_multi.csv"
    write_video_csv(csv, frames, lose_every, faces)
    result = summarise_measured(csv)
    # Never more than one of the three faces lost at once.
    assert (result["frames"], result["frames_with_face"], result["faces"]) == (frames, frames, faces)
    assert result["fps"] == 30.0 and result["mean_confidence"] is None
    tracked = [sum(1 for frame in range(1, frames + 1) if (frame + face) % lose_every) for face in range(faces)]
    per_face = [(face["face_id"], face["frames_with_face"], face["mean_confidence"]) for face in result["per_face"]]
    assert per_face == [(face, tracked[face], 0.98) for face in range(faces)]
    assert result["peak_mb"] < 150
