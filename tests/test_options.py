import pytest

from analysis.names import InvalidName
from analysis.options import Options
from media_rules import Faces, Media, MediaType


def test_the_defaults_keep_the_usual_command_and_places():
    options = Options.parse(Media.VIDEO, MediaType.POSED, None, None)
    assert options == Options() and options.tag is None
    assert options.flags() == ["-2Dfp", "-3Dfp", "-pdmparams", "-pose", "-aus", "-gaze"]
    assert options.executable(Media.VIDEO) == "FeatureExtraction"
    assert options.executable(Media.IMAGE) == "FaceLandmarkImg"


def test_every_option_reaches_the_command_and_the_tag():
    options = Options.parse(Media.VIDEO, MediaType.WILD, "MULTI", "tracked, aligned,hog,hog")
    assert options.extra_outputs == ("aligned", "hog", "tracked")
    assert options.executable(Media.VIDEO) == "FaceLandmarkVidMulti"
    assert options.flags()[-4:] == ["-simalign", "-hogalign", "-tracked", "-wild"]
    assert options.tag == "wild-multi-aligned-hog-tracked"
    assert options.metadata() == {"media_type": "wild", "faces": "multi", "extra_outputs": "aligned,hog,tracked"}
    assert Options.of_job("iw", "multi", ["aligned", "hog", "tracked"]) == options


@pytest.mark.parametrize(
    "media,faces,outputs,word",
    [
        (Media.VIDEO, "two", None, "faces must be"),
        (Media.IMAGE, "multi", None, "FaceLandmarkImg already finds every face"),
        (Media.VIDEO, None, "hog,gif", "aligned, hog, tracked"),
    ],
)
def test_bad_options_say_what_is_allowed(media, faces, outputs, word):
    with pytest.raises(InvalidName, match=word):
        Options.parse(media, MediaType.POSED, faces, outputs)


def test_single_faces_and_empty_outputs_are_the_defaults():
    assert Options.parse(Media.IMAGE, MediaType.POSED, "single", "") == Options(MediaType.POSED, Faces.SINGLE, ())
