import pytest

from analysis.names import (
    InvalidName,
    Media,
    MediaType,
    blob_name_problem,
    output_names,
    output_stems,
    parse_container_name,
    parse_media,
    parse_media_type,
)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("ip", MediaType.POSED),
        ("IP", MediaType.POSED),
        ("posed", MediaType.POSED),
        ("iw", MediaType.WILD),
        ("Wild", MediaType.WILD),
        ("IW", MediaType.WILD),
    ],
)
def test_media_type_aliases_are_case_insensitive(value, expected):
    assert parse_media_type(value) is expected


@pytest.mark.parametrize("value", ["", "x", "in-the-wild", "ipw"])
def test_unknown_media_type_is_rejected(value):
    with pytest.raises(InvalidName, match="media_type"):
        parse_media_type(value)


def test_media_kind():
    assert parse_media("IMAGE") is Media.IMAGE
    with pytest.raises(InvalidName, match="media"):
        parse_media("audio")


@pytest.mark.parametrize("name", ["3f2b6c1e-8a3d-4f5e-9b7a-1c2d3e4f5a6b", "abc", "a" * 63, "a1-b2"])
def test_valid_container_names(name):
    assert parse_container_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "Upper",
        "-lead",
        "trail-",
        "dou--ble",
        "under_score",
        "dot.ted",
        "../etc",
        "a b c",
        "name;rm -rf",
        "ünï",
    ],
)
def test_invalid_container_names(name):
    with pytest.raises(InvalidName, match="container name"):
        parse_container_name(name)


@pytest.mark.parametrize("name", ["../x.jpg", "a/./b.jpg", "a//b.jpg", "a\\b.jpg", "bad\nname.jpg", "x" * 901])
def test_unsafe_blob_names_are_flagged(name):
    assert blob_name_problem(name)


@pytest.mark.parametrize("name", ["face.jpg", "sub dir/ünïcode face.JPG", "a.b.c.mp4", "$weird&(name).png"])
def test_odd_but_safe_blob_names_pass(name):
    assert blob_name_problem(name) is None


def test_output_stems_keep_folders_and_split_collisions():
    stems = output_stems(["clips/a.b.mp4", "face.jpg", "face.png", "noext"])
    assert stems == {"clips/a.b.mp4": "clips/a.b", "face.jpg": "face.jpg", "face.png": "face.png", "noext": "noext"}
    names = output_names("clips/a.b")
    assert (names["csv"], names["details"], names["summary"]) == (
        "processed/clips/a.b.csv",
        "processed/clips/a.b_of_details.txt",
        "processed/clips/a.b.summary.json",
    )


def test_options_other_than_the_defaults_have_a_folder_of_their_own():
    default = output_names("clips/a.b")
    wild = output_names("clips/a.b", "wild-multi-hog")
    assert wild["csv"] == "processed/_options/wild-multi-hog/clips/a.b.csv"
    assert wild["aligned"] == "processed/_options/wild-multi-hog/clips/a.b_aligned.zip"
    assert not set(default.values()) & set(wild.values())
    assert len(set(default.values())) == len(default)  # no two outputs of a media share a name


@pytest.mark.parametrize("name", ["_jobs/x.jpg", "_options/wild/face.jpg"])
def test_blob_names_that_would_collide_with_our_folders_are_flagged(name):
    assert "reserved" in blob_name_problem(name)
