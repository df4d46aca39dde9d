"""Classifying how an OpenFace process ended (analysis/openface/results.py): pure, no process needed."""

from pathlib import Path

import pytest

from analysis.openface.results import FileResult, MediaFile, Outcome, RunEnd, classify
from media_rules import Media

INPUTS = [MediaFile(f"m{n}", Path(f"/in/m{n}.jpg")) for n in range(4)]


def done(*numbers: int) -> list[FileResult]:
    return [FileResult(f"m{n}", Outcome.ANALYSED) for n in numbers]


def missing(*numbers: int) -> list[MediaFile]:
    return [INPUTS[n] for n in numbers]


def outcomes(results: list[FileResult]) -> dict[str, Outcome]:
    return {result.key: result.outcome for result in results}


def test_a_clean_run_makes_everything_final():
    final, again = classify(Media.IMAGE, INPUTS, RunEnd(0, 3), done(0, 1, 2, 3), [])
    assert outcomes(final) == {f"m{n}": Outcome.ANALYSED for n in range(4)} and again == []


def test_an_input_it_cannot_open_is_unreadable_and_the_rest_run_again():
    end = RunEnd(1, 1, tail="Error: Could not open the image: /in/m1.jpg")
    final, again = classify(Media.IMAGE, INPUTS, end, done(0), missing(1, 2, 3))
    assert outcomes(final) == {"m0": Outcome.ANALYSED, "m1": Outcome.UNREADABLE}
    assert again == missing(2, 3)


def test_a_crash_leaves_the_media_in_hand_and_after_it_to_retry():
    end = RunEnd(-11, 2, tail="Segmentation fault")
    final, again = classify(Media.IMAGE, INPUTS, end, done(0, 1, 2), missing(3))
    # m2 may have a CSV cut short: only what came before the one in hand stands.
    assert outcomes(final) == {
        "m0": Outcome.ANALYSED,
        "m1": Outcome.ANALYSED,
        "m2": Outcome.CRASHED,
        "m3": Outcome.CRASHED,
    }
    assert again == [] and "code -11: Segmentation fault" in final[-1].reason


@pytest.mark.parametrize(
    "end,words",
    [
        (RunEnd(None, 1, limit=7), "within 7 s"),
        (RunEnd(-6, 1, tail="terminate called after throwing an instance of 'std::bad_alloc'"), "ran out of memory"),
    ],
    ids=["overran", "out of memory"],
)
def test_the_media_in_hand_fails_alone_and_the_rest_run_again(end, words):
    final, again = classify(Media.IMAGE, INPUTS, end, done(0, 1), missing(2, 3))
    assert outcomes(final) == {"m0": Outcome.ANALYSED, "m1": Outcome.FAILED}
    assert words in final[-1].reason and again == missing(2, 3)
