"""Blob versions in flight: claimed once, awaited by the others, published words kept a while."""

from analysis.worker.inflight import InFlight, SharedOutcome

KEY = ("c", "face.jpg", "0x1", "image", "single", ("-2Dfp",), "")


def test_the_first_claim_owns_a_version_and_the_next_waits_for_its_outcome():
    inflight = InFlight()
    mine, theirs = inflight.own([KEY])
    assert mine == {KEY} and theirs == {}
    mine, theirs = inflight.own([KEY])
    assert mine == set() and not theirs[KEY].done()
    inflight.announce(KEY, SharedOutcome("analysed", job_id="j1"))
    assert theirs[KEY].result().job_id == "j1"


def test_a_published_outcome_is_kept_for_later_claims_and_a_retry_is_not():
    inflight = InFlight()
    inflight.own([KEY])
    inflight.announce(KEY, SharedOutcome("analysed", job_id="j1"))
    mine, theirs = inflight.own([KEY])  # a batch that looked for earlier results before j1 published
    assert mine == set() and theirs[KEY].result().status == "analysed"
    other = KEY[:2] + ("0x2",) + KEY[3:]
    inflight.own([other])
    inflight.announce(other, SharedOutcome(retry="OpenFace crashed"))
    assert inflight.own([other])[0] == {other}  # tried afresh


def test_a_published_word_is_forgotten_after_a_while():
    inflight = InFlight(recent_seconds=0)
    inflight.own([KEY])
    inflight.announce(KEY, SharedOutcome("analysed", job_id="j1"))
    assert inflight.own([KEY])[0] == {KEY}
