import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.summary import InvalidCsv, RunningStats, has_face, summarise

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "openface_standin" / "templates"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "openface-reference"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/openface-reference not present")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "out.csv"
    path.write_text(text)
    return path


def test_video_summary_counts_only_tracked_frames(tmp_path):
    csv = write(tmp_path, (
        "frame, face_id, timestamp, confidence, success, gaze_angle_x, gaze_angle_y, pose_Rx, AU01_r, AU01_c\n"
        "1, 0, 0.000, 0.98, 1, 0.2, 0.1, 0.05, 1.5, 1\n"
        "2, 0, 0.033, 0.02, 0, 0.0, 0.0, 0.00, 0.0, 0\n"
        "3, 0, 0.067, 0.90, 1, 0.4, 0.3, 0.15, 0.5, 0\n"
    ))
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
    assert has_face(summary, is_video=True)


def test_video_without_a_tracked_frame_has_no_face(tmp_path):
    csv = write(tmp_path, "frame, face_id, timestamp, confidence, success\n1, 0, 0.000, 0.01, 0\n")
    summary = summarise(csv, is_video=True)
    assert summary["frames_with_face"] == 0 and summary["mean_confidence"] is None
    assert not has_face(summary, is_video=True)


@pytest.mark.parametrize("text,problem", [
    ("", "empty"),
    ("face, confidence\n0, 0.9, 7\n", "line 2 has 3 values"),
    ("face, confidence\n0, high\n", "line 2"),
    ("face, certainty\n0, 0.9\n", "confidence"),
])
def test_malformed_csv_is_reported(tmp_path, text, problem):
    with pytest.raises(InvalidCsv, match=problem):
        summarise(write(tmp_path, text), is_video=False)


@needs_reference
def test_real_image_csv_with_three_faces():
    summary = summarise(REFERENCE / "img_sample2" / "sample2.csv", is_video=False)
    assert summary["faces"] == 3
    assert 0 < summary["mean_confidence"] <= 1
    assert len(summary["au_intensity_mean"]) == 17 and len(summary["au_presence_rate"]) == 18
    assert set(summary["pose"]) == {"pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"}


@needs_reference
def test_real_video_csv():
    summary = summarise(REFERENCE / "vid_default" / "default.csv", is_video=True)
    assert summary["frames"] == 288
    assert summary["faces"] == 1
    assert 0.9 < summary["success_rate"] <= 1


def test_summary_matches_a_plain_computation_over_all_rows(tmp_path):
    rng = random.Random(20240611)
    columns = ["frame", "face_id", "timestamp", "confidence", "success",
               "gaze_angle_x", "gaze_angle_y", "pose_Tz", "pose_Rx", "AU01_r", "AU12_r", "AU01_c"]
    # 160 frames, every 5th lost: 128 tracked, 7 of them with AU01 present.
    # 7/128 = 0.0546875 sits on a rounding tie: a mean a few ulps off, as
    # Welford's running mean can be, may round it the other way.
    present = set(rng.sample([f for f in range(1, 161) if f % 5], 7))
    lines, tracked = [", ".join(columns)], []
    for frame in range(1, 161):
        if frame % 5 == 0:
            lines.append(f"{frame}, 0, {(frame - 1) / 30:.3f}, " + ", ".join(["0"] * 9))
            continue
        values = [f"{rng.uniform(0.8, 1.0):.2f}", "1", f"{rng.gauss(0.1, 0.2):.3f}", f"{rng.gauss(0, 0.1):.3f}",
                  f"{rng.gauss(500, 1):.1f}", f"{rng.gauss(0, 0.05):.3f}", f"{rng.uniform(0, 5):.2f}",
                  f"{rng.uniform(0, 5):.2f}", "1" if frame in present else "0"]
        lines.append(f"{frame}, {frame % 2}, {(frame - 1) / 30:.3f}, " + ", ".join(values))
        tracked.append(dict(zip(columns[3:], map(float, values))))
    summary = summarise(write(tmp_path, "\n".join(lines) + "\n"), is_video=True)

    def mean(name):
        return round(statistics.fmean(row[name] for row in tracked), 6)

    assert (summary["frames"], summary["frames_with_face"], summary["faces"]) == (160, 128, 2)
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


def write_video_csv(path: Path, frames: int, lose_every: int) -> None:
    """frames rows with the real 714-column header; every lose_every-th frame has no face."""
    header = (TEMPLATES / "video_header.txt").read_text().rstrip("\n")
    template = (TEMPLATES / "video_row.txt").read_text().rstrip("\n").split(", ")
    # After frame, face_id and timestamp: a real tracked frame's values, or
    # zeros (confidence and success included) as OpenFace writes a lost frame.
    found = ", ".join(template[3:])
    lost = ", ".join(["0"] * len(template[3:]))
    with path.open("w") as out:
        out.write(header + "\n")
        for start in range(1, frames + 1, 5_000):
            out.write("".join(
                f"{frame}, 0, {(frame - 1) / 30:.3f}, {lost if frame % lose_every == 0 else found}\n"
                for frame in range(start, min(start + 5_000, frames + 1))
            ))


MEASURE = """
import json, resource, sys
from pathlib import Path
from analysis.summary import summarise
summary = summarise(Path(sys.argv[1]), is_video=True)
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **summary}))
"""
# On Linux a child's ru_maxrss includes the RSS of the process it was forked
# from (the high-water mark survives exec), so started straight from pytest
# the figure would include pytest's own memory. A small relay keeps it out.
RELAY = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB only on Linux")
def test_memory_stays_flat_for_a_long_video(tmp_path):
    frames, lose_every = 100_000, 7
    csv = tmp_path / "long.csv"
    write_video_csv(csv, frames, lose_every)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", RELAY, sys.executable, "-c", MEASURE, str(csv)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    csv.unlink()  # over 400 MB; pytest keeps the last few tmp_paths
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    tracked = frames - frames // lose_every
    assert (result["frames"], result["frames_with_face"]) == (frames, tracked)
    assert result["success_rate"] == round(tracked / frames, 6)
    assert result["mean_confidence"] == 0.98
    # Reading all rows into memory first, as summary.py once did, peaked at 4.7 GB.
    assert result["peak_mb"] < 150
