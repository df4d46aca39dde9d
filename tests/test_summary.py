from pathlib import Path

import pytest

from analysis.summary import InvalidCsv, has_face, summarise

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
