"""The OpenFace stand-in (tests/openface_standin/) against real OpenFace output.

Comparisons with ../shared/openface-reference (real OpenFace 2.0.2 output,
next to the repository) are skipped when that folder is not there; the rest
runs on media made by openface_standin.media.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from openface_standin import media, standin
except ImportError:  # when tests/ is itself a package
    from tests.openface_standin import media, standin

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
REFERENCE = SHARED / "openface-reference"
MEDIA = (SHARED / "media").resolve()

needs_reference = pytest.mark.skipif(
    not (REFERENCE / "README.md").is_file() or not MEDIA.is_dir(),
    reason="../shared/openface-reference and ../shared/media are not available",
)

IMAGE_COLUMNS = 711
VIDEO_COLUMNS = 714


def run(exe: str, *args, cwd=None, **knobs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(media.BIN_DIR / exe), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env=media.standin_env(**knobs),
    )


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows, checking every value is separated by ', ' as OpenFace does."""
    lines = path.read_text().splitlines()
    for line in lines:
        assert line.count(",") == line.count(", "), f"a separator is not ', ' in {path.name}"
        assert line == line.strip()
    header, *rows = (line.split(", ") for line in lines)
    assert all(len(row) == len(header) for row in rows)
    return header, rows


def reference_csv(case: str, name: str) -> tuple[list[str], list[list[str]]]:
    return read_csv(REFERENCE / case / name)


def as_reference(text: str) -> str:
    """Our output with media paths written the way the reference writes them."""
    return text.replace(str(MEDIA), "<MEDIA_DIR>")


def reference_listing(case: str) -> tuple[set[str], dict[str, int]]:
    """Files written and files per aligned folder, from a case's files.txt."""
    names, aligned = set(), {}
    for line in (REFERENCE / case / "files.txt").read_text().splitlines():
        if line.startswith("/"):
            names.add(line[1:])
        elif match := re.match(r"\./(\S+): (\d+) files", line):
            aligned[match[1]] = int(match[2])
    return names, aligned


def listing(out_dir: Path) -> tuple[set[str], dict[str, int]]:
    names = set(os.listdir(out_dir))
    aligned = {n: len(os.listdir(out_dir / n)) for n in names if n.endswith("_aligned")}
    return names, aligned


def assert_numbers(rows: list[list[str]], int_columns: int) -> None:
    for row in rows:
        for value in row[:int_columns]:
            int(value)
        for value in row[int_columns:]:
            float(value)


# --------------------------------------------------------------------------
# The executables themselves


def test_launchers_are_executable_python_scripts():
    for exe in ("FaceLandmarkImg", "FeatureExtraction", "FaceLandmarkVidMulti"):
        path = media.BIN_DIR / exe
        assert os.access(path, os.X_OK)
        assert path.read_text().startswith("#!/usr/bin/env python3\n")


def test_templates_are_the_reference_first_rows():
    if not (REFERENCE / "README.md").is_file():
        pytest.skip("reference not available")
    for kind, case, name in (("image", "img_sample1", "sample1.csv"), ("video", "vid_default", "default.csv")):
        lines = (REFERENCE / case / name).read_text().splitlines()
        assert (standin.TEMPLATES / f"{kind}_header.txt").read_text() == lines[0] + "\n"
        assert (standin.TEMPLATES / f"{kind}_row.txt").read_text() == lines[1] + "\n"


def test_no_arguments_prints_usage_and_exits_0():
    result = run("FeatureExtraction")
    assert result.returncode == 0
    assert "Command-line-arguments" in result.stdout


# --------------------------------------------------------------------------
# FaceLandmarkImg


@needs_reference
@pytest.mark.parametrize("case, extra", [("img_sample1", []), ("img_wild_sample1", ["-wild"])])
def test_image_with_a_face_matches_reference(tmp_path, case, extra):
    result = run("FaceLandmarkImg", "-f", MEDIA / "sample1.jpg", *extra, "-out_dir", tmp_path)
    assert result.returncode == 0
    assert "Starting tracking" in result.stdout
    assert listing(tmp_path) == reference_listing(case)
    assert (tmp_path / "sample1_aligned" / "face_det_000000.bmp").is_file()
    assert (
        as_reference((tmp_path / "sample1_of_details.txt").read_text())
        == (REFERENCE / case / "sample1_of_details.txt").read_text()
    )
    header, rows = read_csv(tmp_path / "sample1.csv")
    ref_header, ref_rows = reference_csv(case, "sample1.csv")
    assert header == ref_header
    assert len(header) == IMAGE_COLUMNS and header[:3] == ["face", "confidence", "gaze_0_x"]
    assert len(rows) == len(ref_rows) == 1
    assert_numbers(rows, int_columns=1)


@needs_reference
def test_flat_image_has_no_face_and_no_csv(tmp_path):
    result = run("FaceLandmarkImg", "-f", MEDIA / "noface.png", "-out_dir", tmp_path)
    assert result.returncode == 0
    assert listing(tmp_path) == reference_listing("img_noface")
    assert (
        as_reference((tmp_path / "noface_of_details.txt").read_text())
        == (REFERENCE / "img_noface" / "noface_of_details.txt").read_text()
    )


@needs_reference
@pytest.mark.parametrize("name", ["corrupt.mp4", "does_not_exist.jpg"])
def test_unreadable_first_image_exits_1_writing_nothing(tmp_path, name):
    out_dir = tmp_path / "out"
    result = run("FaceLandmarkImg", "-f", MEDIA / name, "-out_dir", out_dir)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == f"Error: Could not open the image: {MEDIA / name}"
    case = "img_corrupt" if name == "corrupt.mp4" else "img_missing"
    assert (REFERENCE / case / "console.log").read_text().splitlines()[
        -1
    ] == f"Error: Could not open the image: <MEDIA_DIR>/{name}"
    assert not out_dir.exists()


def test_generated_images_give_the_faces_asked_for(tmp_path):
    paths = [
        media.make_face_image(tmp_path / "one.jpg"),
        media.make_face_image(tmp_path / "three.png", faces=3),
        media.make_face_image(tmp_path / "none.jpg", faces=0),
        media.make_flat_image(tmp_path / "flat.png"),
        media.make_face_image(tmp_path / "two.png", faces=2, fmt="JPEG"),
    ]
    out_dir = tmp_path / "out"
    args = [arg for path in paths for arg in ("-f", path)]
    result = run("FaceLandmarkImg", *args, "-out_dir", out_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    for stem, faces in (("one", 1), ("three", 3), ("two", 2)):
        header, rows = read_csv(out_dir / f"{stem}.csv")
        assert len(header) == IMAGE_COLUMNS
        assert [row[0] for row in rows] == [str(face) for face in range(faces)]
        assert_numbers(rows, int_columns=1)
        assert sorted(os.listdir(out_dir / f"{stem}_aligned")) == [f"face_det_{face:06d}.bmp" for face in range(faces)]
    for stem in ("none", "flat"):
        assert not (out_dir / f"{stem}.csv").exists()
        assert (out_dir / f"{stem}_of_details.txt").is_file()
        assert os.listdir(out_dir / f"{stem}_aligned") == []
    # The camera guess follows the image size: 160x120 -> (125 + 125) / 2.
    assert "Camera parameters:125,125,80,60\n" in (out_dir / "one_of_details.txt").read_text()


@pytest.mark.parametrize("content", [b"", b"just some text\n", b"GIF89a" + bytes(40)])
def test_a_later_unreadable_image_stops_the_run_with_exit_1(tmp_path, content):
    first = media.make_face_image(tmp_path / "first.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    last = media.make_face_image(tmp_path / "last.jpg")
    out_dir = tmp_path / "out"
    result = run("FaceLandmarkImg", "-f", first, "-f", bad, "-f", last, "-out_dir", out_dir)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == f"Error: Could not open the image: {bad}"
    assert (out_dir / "first.csv").is_file()
    assert not any(name.startswith(("bad", "last")) for name in os.listdir(out_dir))


def test_gif_is_unreadable_like_in_opencv(tmp_path):
    from PIL import Image

    Image.new("RGB", (20, 20), (10, 200, 30)).save(tmp_path / "a.gif")
    result = run("FaceLandmarkImg", "-f", tmp_path / "a.gif", "-out_dir", tmp_path / "out")
    assert result.returncode == 1


def test_no_input_exits_1(tmp_path):
    result = run("FaceLandmarkImg", "-out_dir", tmp_path / "out")
    assert result.returncode == 1 and result.stdout.splitlines()[-1] == "Could not open any images"


def test_image_selection_flags_limit_columns_and_files(tmp_path):
    image = media.make_face_image(tmp_path / "a.jpg")
    out_dir = tmp_path / "out"
    result = run("FaceLandmarkImg", "-f", image, "-aus", "-pose", "-out_dir", out_dir)
    assert result.returncode == 0
    assert sorted(os.listdir(out_dir)) == ["a.csv", "a_of_details.txt"]
    header, rows = read_csv(out_dir / "a.csv")
    assert header[:2] == ["face", "confidence"]
    assert {standin.column_group(name) for name in header[2:]} == {"-aus", "-pose"}
    assert_numbers(rows, int_columns=1)


def test_relative_input_and_default_output_folder(tmp_path):
    media.make_face_image(tmp_path / "pic.png")
    result = run("FaceLandmarkImg", "-f", "pic.png", cwd=tmp_path)
    assert result.returncode == 0
    details = (tmp_path / "processed" / "pic_of_details.txt").read_text().splitlines()
    assert details[:2] == ["Input:pic.png", f"Input full path:{os.path.realpath(tmp_path / 'pic.png')}"]


# --------------------------------------------------------------------------
# FeatureExtraction


@needs_reference
def test_video_matches_reference(tmp_path):
    result = run("FeatureExtraction", "-f", MEDIA / "default.wmv", "-out_dir", tmp_path)
    assert result.returncode == 0
    names, aligned = listing(tmp_path)
    assert (names, aligned) == reference_listing("vid_default")
    assert sorted(os.listdir(tmp_path / "default_aligned"))[:2] == [
        "frame_det_00_000001.bmp",
        "frame_det_00_000002.bmp",
    ]
    assert (
        as_reference((tmp_path / "default_of_details.txt").read_text())
        == (REFERENCE / "vid_default" / "default_of_details.txt").read_text()
    )
    header, rows = read_csv(tmp_path / "default.csv")
    ref_header, ref_rows = reference_csv("vid_default", "default.csv")
    assert header == ref_header and len(header) == VIDEO_COLUMNS
    assert header[:5] == ["frame", "face_id", "timestamp", "confidence", "success"]
    assert len(rows) == len(ref_rows) == 288
    assert [row[0] for row in rows] == [str(n) for n in range(1, 289)]
    assert all(re.fullmatch(r"\d+\.\d{3}", row[2]) for row in rows)
    assert {row[4] for row in rows} == {"1"}
    assert_numbers(rows, int_columns=2)
    for line in (
        "Device or file opened",
        "Starting tracking",
        "Closed successfully",
        "Postprocessing the Action Unit predictions",
    ):
        assert line in result.stdout.splitlines()


@needs_reference
def test_video_selection_flags_match_reference(tmp_path):
    result = run("FeatureExtraction", "-f", MEDIA / "default.wmv", "-aus", "-pose", "-gaze", "-out_dir", tmp_path)
    assert result.returncode == 0
    assert listing(tmp_path) == reference_listing("vid_default_aus_pose_gaze")
    assert (
        as_reference((tmp_path / "default_of_details.txt").read_text())
        == (REFERENCE / "vid_default_aus_pose_gaze" / "default_of_details.txt").read_text()
    )
    header, rows = read_csv(tmp_path / "default.csv")
    ref_header, ref_rows = reference_csv("vid_default_aus_pose_gaze", "default.csv")
    assert header == ref_header
    assert rows[0] == ref_rows[0]  # the template row, cut to the same columns
    assert len(rows) == 288


@needs_reference
@pytest.mark.parametrize("name, case", [("corrupt.mp4", "vid_corrupt"), ("nope.mp4", "vid_missing")])
def test_video_that_cannot_be_opened_exits_0_writing_nothing(tmp_path, name, case):
    out_dir = tmp_path / "out"
    result = run("FeatureExtraction", "-f", MEDIA / name, "-out_dir", out_dir)
    assert result.returncode == 0
    message = f"Failed to open the video file at location: {MEDIA / name}"
    assert result.stdout.splitlines()[-1] == message
    assert as_reference(message) in (REFERENCE / case / "console.log").read_text()
    assert not out_dir.exists()


@needs_reference
def test_avi_frame_count_comes_from_its_header(tmp_path):
    result = run("FeatureExtraction", "-f", MEDIA / "multi_face.avi", "-out_dir", tmp_path)
    assert result.returncode == 0
    header, rows = read_csv(tmp_path / "multi_face.csv")
    assert header == reference_csv("vidmulti", "multi_face.csv")[0]
    assert len(rows) == standin.MAX_HEADER_FRAMES  # 702 frames, capped
    assert rows[1][2] == "0.033"  # 30 fps from the header


@pytest.mark.parametrize("exe,faces", [("FeatureExtraction", 1), ("FaceLandmarkVidMulti", 2)])
def test_a_video_that_cannot_be_opened_ends_the_run(tmp_path, exe, faces):
    first = media.make_video(tmp_path / "first.mp4", frames=4, faces=faces)
    bad = media.make_corrupt_video(tmp_path / "bad.mp4")
    last = media.make_video(tmp_path / "last.mp4", frames=4)
    out_dir = tmp_path / "out"
    result = run(exe, "-f", first, "-f", bad, "-f", last, "-out_dir", out_dir)
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == f"Failed to open the video file at location: {bad}"
    assert sorted(os.listdir(out_dir)) == [
        "first.avi",
        "first.csv",
        "first.hog",
        "first_aligned",
        "first_of_details.txt",
    ]


def test_generated_video_frames_fps_and_no_face(tmp_path):
    with_face = media.make_video(tmp_path / "face.mp4", frames=5, fps=10)
    without = media.make_video(tmp_path / "empty.mp4", frames=3, faces=0)
    out_dir = tmp_path / "out"
    result = run("FeatureExtraction", "-f", with_face, "-f", without, "-out_dir", out_dir)
    assert result.returncode == 0
    _, rows = read_csv(out_dir / "face.csv")
    assert [row[:5] for row in rows] == [[str(n), "0", f"{(n - 1) / 10:.3f}", "0.98", "1"] for n in range(1, 6)]
    header, rows = read_csv(out_dir / "empty.csv")
    assert len(header) == VIDEO_COLUMNS
    assert [row[:5] for row in rows] == [[str(n), "0", f"{(n - 1) / 30:.3f}", "0.00", "0"] for n in range(1, 4)]
    assert all(float(value) == 0 for row in rows for value in row[3:])
    assert len(os.listdir(out_dir / "empty_aligned")) == 3  # OpenFace keeps bad frames


def test_nobadaligned_skips_frames_without_a_face(tmp_path):
    video = media.make_video(tmp_path / "empty.mp4", frames=3, faces=0)
    result = run("FeatureExtraction", "-f", video, "-nobadaligned", "-out_dir", tmp_path / "out")
    assert result.returncode == 0
    assert os.listdir(tmp_path / "out" / "empty_aligned") == []


def test_video_selection_flags_from_generated_video(tmp_path):
    video = media.make_video(tmp_path / "v.mp4", frames=2)
    out_dir = tmp_path / "out"
    result = run("FeatureExtraction", "-f", video, "-2Dfp", "-pdmparams", "-out_dir", out_dir)
    assert result.returncode == 0
    assert sorted(os.listdir(out_dir)) == ["v.csv", "v_of_details.txt"]
    header, rows = read_csv(out_dir / "v.csv")
    assert len(header) == 5 + 136 + 40
    assert "Postprocessing the Action Unit predictions" not in result.stdout
    assert_numbers(rows, int_columns=2)


# --------------------------------------------------------------------------
# FaceLandmarkVidMulti

MULTI_AU_WARNING = (
    "WARNING: using a AU detection in multiple face mode, it might not be as accurate and is experimental"
)


@needs_reference
def test_multi_face_video_matches_reference(tmp_path):
    result = run("FaceLandmarkVidMulti", "-f", MEDIA / "multi_face.avi", "-out_dir", tmp_path)
    assert result.returncode == 0
    names, _ = listing(tmp_path)
    assert names == reference_listing("vidmulti")[0]  # the reference has 2107 aligned faces, we 300
    assert (
        as_reference((tmp_path / "multi_face_of_details.txt").read_text())
        == (REFERENCE / "vidmulti" / "multi_face_of_details.txt").read_text()
    )
    header, _ = read_csv(tmp_path / "multi_face.csv")
    assert header == reference_csv("vidmulti", "multi_face.csv")[0]
    ref_console = (REFERENCE / "vidmulti" / "console.log").read_text().splitlines()
    ours = result.stdout.splitlines()
    for line in (
        "Device or file opened",
        MULTI_AU_WARNING,
        "Starting tracking",
        "Closing output recorder",
        "Closed successfully",
    ):
        assert line in ours and line in ref_console
    # The warning sits between opening the file and tracking, as in the reference.
    assert ours.index(MULTI_AU_WARNING) == ours.index("Device or file opened") + 1
    assert "Postprocessing the Action Unit predictions" not in result.stdout


@pytest.mark.parametrize(
    "faces, face_ids", [(3, ["0", "1", "2"]), (1, ["0"]), (6, ["0", "1", "2", "3"])]
)  # 4 at most, as OpenFace
def test_multi_face_video_has_a_row_per_face_per_frame(tmp_path, faces, face_ids):
    video = media.make_video(tmp_path / "v.mp4", frames=4, faces=faces, fps=10)
    out_dir = tmp_path / "out"
    result = run("FaceLandmarkVidMulti", "-f", video, "-out_dir", out_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert MULTI_AU_WARNING in result.stdout.splitlines()
    assert sorted(os.listdir(out_dir)) == ["v.avi", "v.csv", "v.hog", "v_aligned", "v_of_details.txt"]
    header, rows = read_csv(out_dir / "v.csv")
    assert len(header) == VIDEO_COLUMNS
    assert header[:5] == ["frame", "face_id", "timestamp", "confidence", "success"]
    assert [row[:5] for row in rows] == [
        [str(frame), face, f"{(frame - 1) / 10:.3f}", "0.98", "1"] for frame in range(1, 5) for face in face_ids
    ]
    assert_numbers(rows, int_columns=2)
    assert sorted(os.listdir(out_dir / "v_aligned")) == sorted(
        f"frame_det_{int(face):02d}_{frame:06d}.bmp" for frame in range(1, 5) for face in face_ids
    )
    assert (out_dir / "v.hog").stat().st_size == len(rows) * len(standin._hog_record(True))
    details = (out_dir / "v_of_details.txt").read_text().splitlines()
    assert details[3:] == [
        "Output HOG:v.hog",
        "Output video:v.avi",
        "Output aligned directory:v_aligned",
        "Output csv:v.csv",
        "Gaze: 1",
        "AUs: 1",
        "Landmarks 2D: 1",
        "Landmarks 3D: 1",
        "Pose: 1",
        "Shape parameters: 1",
    ]


def test_multi_face_video_without_faces_writes_no_rows(tmp_path):
    # Real FaceLandmarkVidMulti writes rows only for faces it tracks: on a video
    # with no face it leaves no CSV, an empty .hog and an empty _aligned/.
    video = media.make_video(tmp_path / "v.mp4", frames=3, faces=0)
    out_dir = tmp_path / "out"
    result = run("FaceLandmarkVidMulti", "-f", video, "-out_dir", out_dir)
    assert result.returncode == 0
    assert sorted(os.listdir(out_dir)) == ["v.avi", "v.hog", "v_aligned", "v_of_details.txt"]
    assert (out_dir / "v.hog").stat().st_size == 0
    assert os.listdir(out_dir / "v_aligned") == []
    assert "Output csv" not in (out_dir / "v_of_details.txt").read_text()
    assert "Closed successfully" in result.stdout.splitlines()


def test_multi_face_selection_flags(tmp_path):
    video = media.make_video(tmp_path / "v.mp4", frames=2, faces=2)
    out_dir = tmp_path / "out"
    result = run("FaceLandmarkVidMulti", "-f", video, "-hogalign", "-simalign", "-tracked", "-out_dir", out_dir)
    assert result.returncode == 0
    assert MULTI_AU_WARNING not in result.stdout  # OpenFace warns only when AUs are written
    assert sorted(os.listdir(out_dir)) == ["v.avi", "v.csv", "v.hog", "v_aligned", "v_of_details.txt"]
    assert sorted(os.listdir(out_dir / "v_aligned")) == [
        "frame_det_00_000001.bmp",
        "frame_det_00_000002.bmp",
        "frame_det_01_000001.bmp",
        "frame_det_01_000002.bmp",
    ]
    assert (out_dir / "v.hog").stat().st_size == 4 * len(standin._hog_record(True))
    assert standin.inspect_video(str(out_dir / "v.avi")).frames == 2
    header, rows = read_csv(out_dir / "v.csv")
    assert header == ["frame", "face_id", "timestamp", "confidence", "success"]
    assert [row[1] for row in rows] == ["0", "1", "0", "1"]
    assert "Gaze: 0\nAUs: 0\n" in (out_dir / "v_of_details.txt").read_text()

    out_dir = tmp_path / "out2"
    result = run("FaceLandmarkVidMulti", "-f", video, "-aus", "-pose", "-out_dir", out_dir)
    assert result.returncode == 0
    assert MULTI_AU_WARNING in result.stdout.splitlines()
    assert sorted(os.listdir(out_dir)) == ["v.csv", "v_of_details.txt"]
    header, _ = read_csv(out_dir / "v.csv")
    assert {standin.column_group(name) for name in header[5:]} == {"-aus", "-pose"}


# --------------------------------------------------------------------------
# Progress over a video's seconds= marker


def read_console_until(proc: subprocess.Popen, wanted, seen: str = "") -> str:
    """Read proc's stdout as it comes (the progress line has no newline until 100%)
    until wanted(text) holds or the pipe closes; returns all text read."""
    fd = proc.stdout.fileno()
    while not wanted(seen):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        seen += chunk.decode()
    return seen


@pytest.mark.parametrize("exe", ["FeatureExtraction", "FaceLandmarkVidMulti"])
def test_progress_appears_while_the_video_is_processed(tmp_path, exe):
    video = media.make_video(tmp_path / "v.mp4", frames=60, faces=2, seconds=6)
    out_dir = tmp_path / "out"
    proc = subprocess.Popen(
        [str(media.BIN_DIR / exe), "-f", str(video), "-out_dir", str(out_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=media.standin_env(),
    )
    try:
        text = read_console_until(proc, lambda t: "Starting tracking\n" in t)
        # The details file is there before the input's time starts to pass.
        assert (out_dir / "v_of_details.txt").is_file()
        text = read_console_until(proc, lambda t: re.search(r"\b[1-9]0% ", t), text)
        seen = [int(step) for step in re.findall(r"(\d+)% ", text)]
        assert seen and max(seen) < 100 and proc.poll() is None, text
        # Mid-video it naps in short steps too, so a signal ends it at once.
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=10)[0].decode()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGTERM
    assert "100%" not in text + rest


def test_video_spends_its_seconds_and_prints_every_step(tmp_path):
    video = media.make_video(tmp_path / "v.mp4", frames=5, faces=3, seconds=1)
    started = time.monotonic()
    result = run("FaceLandmarkVidMulti", "-f", video, "-out_dir", tmp_path / "out")
    assert result.returncode == 0
    assert time.monotonic() - started >= 1  # spread over the frames, still spent in full
    assert "0% 10% 20% 30% 40% Closing output recorder\n" in result.stdout  # one step per frame
    longer = media.make_video(tmp_path / "w.mp4", frames=12, seconds=0.5)
    result = run("FeatureExtraction", "-f", longer, "-out_dir", tmp_path / "out")
    assert "0% 10% 20% 30% 40% 50% 60% 70% 80% 90% 100% \nClosing output recorder\n" in result.stdout


class FakeClock:
    """Stands in for the time module in standin: sleeping moves the clock on at once."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("frames", [20, 0])
def test_seconds_marker_is_spread_over_the_frames(tmp_path, monkeypatch, frames):
    """In-process with a fake clock: when each console write happens, exactly."""
    clock = FakeClock()
    monkeypatch.setattr(standin, "time", clock)
    writes = []

    class Console:
        def write(self, text):
            writes.append((clock.now, text))

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Console())
    for knob in ("OPENFACE_STANDIN_SLEEP", "OPENFACE_STANDIN_EXIT"):
        monkeypatch.delenv(knob, raising=False)
    video = media.make_video(tmp_path / "v.mp4", frames=frames, faces=2, seconds=4)
    # Not through main(), which would change this process's SIGPIPE handling.
    opts = standin.parse_args(["-f", str(video), "-out_dir", str(tmp_path / "out")])
    assert standin.face_landmark_vid_multi(opts) == 0
    at = {text.strip(): when for when, text in writes}
    assert at["Starting tracking"] == 0  # the details file is written just before it
    assert at["Closed successfully"] == pytest.approx(4)
    steps = {text.strip(): when for when, text in writes if text.rstrip().endswith("%")}
    if frames:
        # Step r is printed at frame 2r (one step per frame at most), after 4 s * frame / 20.
        assert steps == {f"{10 * r}%": pytest.approx(0.2 * max(1, 2 * r)) for r in range(11)}
    else:
        assert steps == {}


# --------------------------------------------------------------------------
# Deciding what a file holds (in-process)


def test_container_rules(tmp_path):
    assert standin.inspect_video(str(media.make_video(tmp_path / "a.mp4", frames=7))).frames == 7
    assert standin.inspect_video(str(media.make_corrupt_video(tmp_path / "b.mp4"))) is None
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((tmp_path / "a.mp4").read_bytes()[:60])  # moov box cut short
    assert standin.inspect_video(str(cut)) is None
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert standin.inspect_video(str(tmp_path / "empty.mp4")) is None
    assert standin.inspect_video(str(tmp_path / "missing.mp4")) is None
    asf_head_only = tmp_path / "x.wmv"
    asf_head_only.write_bytes(standin.ASF_HEADER + bytes(200))
    assert standin.inspect_video(str(asf_head_only)) is None
    image = media.make_face_image(tmp_path / "pic.jpg")
    assert standin.inspect_video(str(image)) is None


@needs_reference
def test_reference_media_rules():
    assert standin.inspect_video(str(MEDIA / "default.wmv")) == standin.VideoInfo(frames=288, fps=30.0, faces=1)
    assert standin.inspect_video(str(MEDIA / "multi_face.avi")) is not None
    assert standin.inspect_video(str(MEDIA / "corrupt.mp4")) is None
    assert standin.inspect_image(str(MEDIA / "corrupt.mp4")) is None
    assert standin.inspect_image(str(MEDIA / "noface.png")).faces == 0
    assert standin.inspect_image(str(MEDIA / "sample2.jpg")).faces == 1  # really 3


def test_without_pillow_only_magic_bytes_and_markers_count(tmp_path, monkeypatch):
    monkeypatch.setattr(standin, "_pillow", lambda: None)
    flat = standin.inspect_image(str(media.make_flat_image(tmp_path / "flat.png")))
    assert (flat.width, flat.height, flat.faces) == (640, 480, 1)  # cannot see it is flat
    assert standin.inspect_image(str(media.make_face_image(tmp_path / "a.png", faces=0))).faces == 0
    (tmp_path / "t.jpg").write_text("text")
    assert standin.inspect_image(str(tmp_path / "t.jpg")) is None


# --------------------------------------------------------------------------
# Knobs for testing the service


def test_log_knob_records_every_invocation(tmp_path):
    log = tmp_path / "calls.jsonl"
    image = media.make_face_image(tmp_path / "a.jpg")
    run("FaceLandmarkImg", "-f", image, "-f", image, "-wild", "-out_dir", tmp_path / "o", OPENFACE_STANDIN_LOG=log)
    run("FeatureExtraction", "-f", "x.mp4", "-aus", OPENFACE_STANDIN_LOG=log)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [call["exe"] for call in calls] == ["FaceLandmarkImg", "FeatureExtraction"]
    assert calls[0]["args"] == ["-f", str(image), "-f", str(image), "-wild", "-out_dir", str(tmp_path / "o")]
    assert calls[1]["args"] == ["-f", "x.mp4", "-aus"]


@pytest.mark.parametrize("code", [3, 1, -signal.SIGSEGV])
def test_exit_knob_fails_before_writing(tmp_path, code):
    image = media.make_face_image(tmp_path / "a.jpg")
    result = run("FaceLandmarkImg", "-f", image, "-out_dir", tmp_path / "out", OPENFACE_STANDIN_EXIT=code)
    assert result.returncode == code
    assert "OPENFACE_STANDIN_EXIT" in result.stderr
    assert not (tmp_path / "out").exists()


def test_sleep_knob_delays_work(tmp_path):
    video = media.make_video(tmp_path / "v.mp4", frames=2)
    started = time.monotonic()
    result = run("FeatureExtraction", "-f", video, "-out_dir", tmp_path / "out", OPENFACE_STANDIN_SLEEP="0.6")
    assert result.returncode == 0
    assert time.monotonic() - started >= 0.6
    assert (tmp_path / "out" / "v.csv").is_file()


def test_sleeping_stand_in_stops_promptly_on_sigterm(tmp_path):
    video = media.make_video(tmp_path / "v.mp4", frames=2)
    proc = subprocess.Popen(
        [str(media.BIN_DIR / "FeatureExtraction"), "-f", str(video), "-out_dir", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=media.standin_env(OPENFACE_STANDIN_SLEEP="30"),
    )
    try:
        # The model lines come before the sleep; once they are out, it is sleeping.
        for line in proc.stdout:
            if line.startswith("Reading the AU predictors"):
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert not (tmp_path / "out").exists()


def test_bad_knob_value_is_reported(tmp_path):
    result = run("FaceLandmarkImg", "-f", "x.jpg", OPENFACE_STANDIN_SLEEP="soon")
    assert result.returncode == 2
    assert "OPENFACE_STANDIN_SLEEP" in result.stderr
