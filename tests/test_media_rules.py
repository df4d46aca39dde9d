import pytest

from media_rules import Media, claimed_kind, sniff
from openface_standin.media import make_corrupt_video, make_face_image, make_video


def test_content_decides_not_the_name(tmp_path):
    jpeg = make_face_image(tmp_path / "x.png", fmt="JPEG").read_bytes()  # a JPEG named .png
    assert sniff(jpeg) == (Media.IMAGE, "jpg")
    assert sniff(make_video(tmp_path / "v.jpg", frames=1).read_bytes()) == (Media.VIDEO, "mp4")


@pytest.mark.parametrize("data", [b"", b"hello world", b"%PDF-1.7\n", b"GIF89a" + b"\0" * 20])
def test_non_media_is_none(data):
    assert sniff(data) == (None, None)


def test_corrupt_video_still_looks_like_a_video(tmp_path):
    # Its header is an MP4's: only OpenFace can tell it cannot be opened.
    assert sniff(make_corrupt_video(tmp_path / "c.mp4").read_bytes())[0] is Media.VIDEO


@pytest.mark.parametrize(
    "name,content_type,expected",
    [
        ("a.JPG", None, Media.IMAGE),
        ("a.bin", "image/png", Media.IMAGE),
        ("a.wmv", None, Media.VIDEO),
        ("a.mp4", "application/octet-stream", Media.VIDEO),
        ("notes.txt", "text/plain", None),
        ("noext", None, None),
    ],
)
def test_claimed_kind(name, content_type, expected):
    assert claimed_kind(name, content_type) is expected
