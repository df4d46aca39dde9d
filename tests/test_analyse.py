"""Planning a job's media (analysis/analyse.py): when earlier results are looked for."""

from datetime import datetime, timedelta, timezone

import pytest

from analysis.analyse import _may_find_earlier
from analysis.inflight import RECENT_SECONDS
from analysis.job import Job
from analysis.options import Options
from analysis.storage import BlobInput
from media_rules import Media

INPUTS = [BlobInput("face.jpg", "0x1", 10, "image/jpeg")]


def job(results_before, attempts=1, age_seconds=0.0):
    made = Job.new("c1", Media.IMAGE, Options(), INPUTS, results_before)
    made.attempts = attempts
    made.created_at = (datetime.now(timezone.utc) - timedelta(seconds=age_seconds)).isoformat(timespec="seconds")
    return made


def test_a_young_first_attempt_in_a_container_without_results_does_not_look():
    assert not _may_find_earlier(job(results_before=False))


@pytest.mark.parametrize("case", [
    job(results_before=True),  # results were there when it was made
    job(results_before=None),  # a record from before this was kept
    job(results_before=False, attempts=2),  # an earlier attempt may have published some
    job(results_before=False, age_seconds=RECENT_SECONDS + 60),  # the worker no longer remembers what it published
], ids=["results before", "old record", "retry", "old job"])
def test_every_other_job_looks(case):
    assert _may_find_earlier(case)
