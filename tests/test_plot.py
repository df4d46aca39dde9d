import math
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.openface.plot import _read, draw_video
from analysis.openface.summary import InvalidCsv

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "openface-reference"
AUS = [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45]
COLUMNS = [
    "frame",
    "face_id",
    "timestamp",
    "confidence",
    "success",
    "gaze_angle_x",
    "gaze_angle_y",
    "pose_Tx",
    "pose_Ty",
    "pose_Tz",
    "pose_Rx",
    "pose_Ry",
    "pose_Rz",
    *(f"AU{n:02d}_r" for n in AUS),
    *(f"AU{n:02d}_c" for n in [*AUS[:-1], 28, 45]),
]


def frame_values(frame: int, face: int, ok: bool, fps: float = 30.0, au: float | None = None) -> list[float]:
    t = (frame - 1) / fps
    if not ok:  # what OpenFace writes when it lost the face: zeros
        return [frame, face, t, 0.03, 0, *[0.0] * (len(COLUMNS) - 5)]
    wave = math.sin(t)
    intensity = au if au is not None else 2.5 + 2.5 * wave
    return [
        frame,
        face,
        t,
        0.95,
        1,
        0.2 * wave,
        -0.1 * wave,
        10.0,
        -5.0,
        500.0,
        0.1 * wave,
        0.3 * wave,
        -0.05,
        *[intensity] * len(AUS),
        *[1.0 if intensity > 1 else 0.0] * (len(AUS) + 1),
    ]


def write_csv(path: Path, rows, columns=COLUMNS) -> Path:
    """OpenFace's layout: ", " between names and values; rows written as generated, never held."""
    with path.open("w") as out:
        out.write(", ".join(columns) + "\n")
        for values in rows:
            out.write(", ".join(f"{v:g}" for v in values) + "\n")
    return path


def video(frames: int, failed=lambda frame: frame % 7 == 0, **kwargs):
    for frame in range(1, frames + 1):
        yield frame_values(frame, 0, not failed(frame), **kwargs)


def png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def png_title(path: Path) -> str:
    with Image.open(path) as image:
        return image.text["Title"]


def test_generated_video_draws_a_png(tmp_path):
    csv = write_csv(tmp_path / "clip.csv", video(300))
    png = tmp_path / "clip.png"
    draw_video(csv, png, "videos/clip.mp4")
    width, height = png_size(png)
    assert width > 800 and height > 800
    assert png_title(png).startswith("videos/clip.mp4")
    assert "300 frames" in png_title(png)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.csv", "clip.png"]  # no temporary left


def test_failed_frames_are_gaps_not_zeros(tmp_path):
    # Successful frames all have AU intensity 3; frames 50-99 failed (zeros in the CSV).
    csv = write_csv(tmp_path / "clip.csv", video(300, failed=lambda f: 50 <= f < 100, au=3.0))
    series, _, _, face = _read(csv, max_points=2000)
    assert face is None
    assert series.rows == 300 and series.ok == 250
    au01 = series.values["AU01_r"]
    assert set(au01[~np.isnan(au01)]) == {3.0}
    assert np.isnan(au01).sum() == 50  # the failed frames are NaN (drawn as gaps)
    assert set(series.confidence) == {0.95, 0.03}  # confidence and success keep every frame
    assert list(series.success).count(0.0) == 50


def test_downsampling_keeps_time_span_and_averages_successful_frames(tmp_path):
    # Every 10th frame failed; successful ones have intensity 4.
    csv = write_csv(tmp_path / "long.csv", video(20_000, failed=lambda f: f % 10 == 0, au=4.0))
    series, *_ = _read(csv, max_points=500)
    assert 500 <= len(series.centres) <= 1000
    assert series.width == 32
    assert (series.rows, series.ok) == (20_000, 18_000)
    assert series.start == 0 and series.end == pytest.approx(19_999 / 30)
    assert set(series.values["AU12_r"]) == {4.0}
    assert series.success.mean() == pytest.approx(0.9, abs=0.01)


def test_100k_frames_draw_with_bounded_memory(tmp_path):
    # 25k and 100k frames both end in 3125 bins (widths 8 and 32), so the plots cost the same.
    small = write_csv(tmp_path / "small.csv", video(25_000))
    big = write_csv(tmp_path / "big.csv", video(100_000))
    # Imports and the font cache are once per process, not the plot's memory.
    draw_video(write_csv(tmp_path / "warm.csv", video(10)), tmp_path / "warm.png", "warm-up")

    peaks = []
    for csv in (small, big):
        tracemalloc.start()
        try:
            draw_video(csv, tmp_path / f"{csv.stem}.png", f"videos/{csv.stem}.mp4")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    print(f"tracemalloc peaks: 25k frames {peaks[0] / 2**20:.1f} MiB, 100k frames {peaks[1] / 2**20:.1f} MiB")
    assert peaks[1] < 50 * 2**20
    # Four times the frames, about the same peak: rows are not kept.
    assert peaks[1] - peaks[0] < 2 * 2**20, peaks
    assert png_size(tmp_path / "big.png")[0] > 800
    assert "100,000 frames" in png_title(tmp_path / "big.png")


def test_header_only_csv_raises(tmp_path):
    csv = write_csv(tmp_path / "empty.csv", [])
    with pytest.raises(ValueError, match="no frames"):
        draw_video(csv, tmp_path / "empty.png", "empty")
    assert not any(p.suffix == ".png" or p.name.startswith(".") for p in tmp_path.iterdir())


def test_empty_file_and_image_csv_raise(tmp_path):
    (tmp_path / "nothing.csv").write_text("")
    with pytest.raises(InvalidCsv):
        draw_video(tmp_path / "nothing.csv", tmp_path / "a.png", "nothing")
    image_csv = write_csv(tmp_path / "image.csv", [[0, 0.9, 1.5]], ["face", "confidence", "AU01_r"])
    with pytest.raises(InvalidCsv, match="timestamp"):
        draw_video(image_csv, tmp_path / "b.png", "image")


def test_multi_face_titles_the_face_with_most_successful_frames(tmp_path):
    def rows():
        for frame in range(1, 301):
            # Face 0 fails half its frames, face 2 leaves after 100 frames, face 1 is always tracked.
            yield frame_values(frame, 0, frame % 2 == 0)
            yield frame_values(frame, 1, True)
            if frame <= 100:
                yield frame_values(frame, 2, True)

    csv = write_csv(tmp_path / "multi.csv", rows())
    png = tmp_path / "multi.png"
    draw_video(csv, png, "videos/group.mp4")
    assert "face_id 1, the longest tracked of 3 faces" in png_title(png)
    assert "300 frames" in png_title(png)


def test_edge_cases_still_draw(tmp_path):
    cases = {
        "no_face": video(120, failed=lambda f: True),
        "one_frame": video(1, failed=lambda f: False),
    }
    for name, rows in cases.items():
        draw_video(write_csv(tmp_path / f"{name}.csv", rows), tmp_path / f"{name}.png", name)
        assert png_size(tmp_path / f"{name}.png")[0] > 800
    assert "face found in 0% of frames" in png_title(tmp_path / "no_face.png")
    assert "1 frame," in png_title(tmp_path / "one_frame.png")

    # Only frame, timestamp, confidence, success and pose: no AU or gaze columns.
    keep = [COLUMNS.index(c) for c in ("frame", "timestamp", "confidence", "success", "pose_Rx", "pose_Ry")]
    rows = ([values[i] for i in keep] for values in video(90))
    csv = write_csv(tmp_path / "no_aus.csv", rows, [COLUMNS[i] for i in keep])
    draw_video(csv, tmp_path / "no_aus.png", "no AUs")
    assert png_size(tmp_path / "no_aus.png")[0] > 800


def test_a_gap_in_time_is_an_empty_cell(tmp_path):
    # Frames 1-100 then 201-300: the hundred missing frames are one empty cell.
    rows = (frame_values(f, 0, True) for f in [*range(1, 101), *range(201, 301)])
    series, *_ = _read(write_csv(tmp_path / "gap.csv", rows), max_points=2000)
    assert len(series.centres) == 201
    assert math.isnan(series.confidence[100]) and math.isnan(series.values["AU01_r"][100])
    assert series.edges[101] - series.edges[100] == pytest.approx(100 / 30, rel=1e-4)


def test_draws_from_several_threads_at_once(tmp_path):
    csv = write_csv(tmp_path / "clip.csv", video(300))
    errors = []

    def draw(n):
        try:
            draw_video(csv, tmp_path / f"clip{n}.png", f"clip {n}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=draw, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(png_size(tmp_path / f"clip{n}.png")[0] > 800 for n in range(4))


@pytest.mark.skipif(not (REFERENCE / "vid_default" / "default.csv").is_file(), reason="reference CSV not present")
def test_real_openface_csv(tmp_path):
    png = tmp_path / "default.png"
    draw_video(REFERENCE / "vid_default" / "default.csv", png, "videos/default.mp4")
    assert png_size(png) == (1500, 1350)
    assert "288 frames" in png_title(png)
    multi = tmp_path / "multi.png"
    draw_video(REFERENCE / "vidmulti" / "multi_face.csv", multi, "videos/multi_face.mp4")
    assert "longest tracked of 3 faces" in png_title(multi)
