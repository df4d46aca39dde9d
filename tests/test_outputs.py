import csv
import zipfile

import pytest

from analysis.names import output_names
from analysis.openface.outputs import details_text, write_table, zip_folder

DETAILS = """Input:/tmp/openface-job-x1/in/m00003.jpg
Input full path:/tmp/openface-job-x1/in/m00003.jpg
Camera parameters:458.333,458.333,320,200
Output HOG:m00003.hog
Output image:m00003.jpg
Output aligned directory:m00003_aligned
Output csv:m00003.csv
Gaze: 1
AUs: 1
"""


def test_details_name_the_blob_and_the_result_blobs(tmp_path):
    path = tmp_path / "m00003_of_details.txt"
    path.write_text(DETAILS)
    names = output_names("shots/face", "hog")
    text = details_text(path, "uploads", "shots/face.jpg", names, [names["csv"], names["hog"]]).decode()
    assert text.splitlines() == [
        "Input:shots/face.jpg",
        "Input full path:uploads/shots/face.jpg",
        "Camera parameters:458.333,458.333,320,200",  # OpenFace's own content stays
        "Output HOG:processed/_options/hog/shots/face.hog",
        "Output image:m00003.jpg",  # not uploaded: OpenFace's name is kept
        "Output aligned directory:m00003_aligned",
        "Output csv:processed/_options/hog/shots/face.csv",
        "Gaze: 1",
        "AUs: 1",
    ]


def test_aligned_faces_become_one_zip(tmp_path):
    folder = tmp_path / "m0_aligned"
    folder.mkdir()
    for number in range(3):
        (folder / f"frame_det_00_{number:06d}.bmp").write_bytes(b"BM" + bytes(60))
    with zipfile.ZipFile(zip_folder(folder, tmp_path / "m0_aligned.zip")) as archive:
        assert archive.namelist() == [f"frame_det_00_{n:06d}.bmp" for n in range(3)]
        assert archive.read("frame_det_00_000001.bmp") == b"BM" + bytes(60)


def test_the_table_is_the_csvs_with_their_source_first(tmp_path):
    header = "face, confidence, AU01_r"
    one = tmp_path / "a.csv"
    one.write_text(f"{header}\n0, 0.98, 1.5\n")
    two = tmp_path / "b.csv"
    two.write_text(f"{header}\n0, 0.85, 0.2\n1, 0.02, 0.0\n")
    table = tmp_path / "table.csv"
    assert write_table([("a.jpg", one), ('odd, "name".png', two)], table) == 3
    with table.open(newline="") as handle:
        rows = list(csv.reader(handle, skipinitialspace=True))
    assert rows == [
        ["source_blob", "face", "confidence", "AU01_r"],
        ["a.jpg", "0", "0.98", "1.5"],
        ['odd, "name".png', "0", "0.85", "0.2"],
        ['odd, "name".png', "1", "0.02", "0.0"],
    ]


def test_a_table_of_different_columns_is_refused(tmp_path):
    one, two = tmp_path / "a.csv", tmp_path / "b.csv"
    one.write_text("face, confidence\n0, 0.9\n")
    two.write_text("face, success\n0, 1\n")
    with pytest.raises(ValueError, match="b.jpg"):
        write_table([("a.jpg", one), ("b.jpg", two)], tmp_path / "t.csv")


@pytest.mark.parametrize(
    "name", ['=HYPERLINK("http://x").jpg', "+1.jpg", "-2+3.jpg", "@SUM(A1).jpg", "\tcmd.jpg", "\rcmd.jpg"]
)
def test_a_blob_name_never_becomes_a_formula_in_the_table(tmp_path, name):
    import csv

    part = tmp_path / "a.csv"
    part.write_text("face, confidence\n0, 0.98\n")
    table = tmp_path / "t.csv"
    write_table([(name, part), ("plain.jpg", part)], table)
    rows = list(csv.reader(table.open(newline=""), skipinitialspace=True))
    cells = [row[0] for row in rows[1:]]
    assert cells == ["'" + name, "plain.jpg"]  # text as a spreadsheet marks it, the name still whole
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row)
