"""Planning a job's media (analysis/worker/plan.py): when earlier results are looked for."""

from datetime import UTC, datetime, timedelta

import pytest

from analysis.job import Job
from analysis.options import Options
from analysis.storage import BlobInput
from analysis.worker.inflight import RECENT_SECONDS
from analysis.worker.plan import _may_find_earlier
from media_rules import Media

INPUTS = [BlobInput("face.jpg", "0x1", 10, "image/jpeg")]


def job(results_before, attempts=1, age_seconds=0.0):
    made = Job.new("c1", Media.IMAGE, Options(), INPUTS, results_before)
    made.attempts = attempts
    made.created_at = (datetime.now(UTC) - timedelta(seconds=age_seconds)).isoformat(timespec="seconds")
    return made


def test_a_young_first_attempt_in_a_container_without_results_does_not_look():
    assert not _may_find_earlier(job(results_before=False))


@pytest.mark.parametrize(
    "case",
    [
        job(results_before=True),  # results were there when it was made
        job(results_before=None),  # a record from before this was kept
        job(results_before=False, attempts=2),  # an earlier attempt may have published some
        job(results_before=False, age_seconds=RECENT_SECONDS + 60),  # the worker no longer remembers what it published
    ],
    ids=["results before", "old record", "retry", "old job"],
)
def test_every_other_job_looks(case):
    assert _may_find_earlier(case)


def test_a_few_lookups_ask_for_each_summary_and_many_list_them_once(container, settings, tmp_path):
    from analysis.storage import MediaStore, blob_service_client
    from analysis.worker.plan import BlobFacts

    store = MediaStore(blob_service_client(settings))
    container.upload_blob("processed/a.summary.json", b"{}", metadata={"status": "analysed"})
    calls = []
    store.metadata_of = lambda c, name: calls.append(("one", name)) or MediaStore.metadata_of(store, c, name)
    store.metadata_under = lambda c, prefix: (
        calls.append(("list", prefix)) or MediaStore.metadata_under(store, c, prefix)
    )
    facts = BlobFacts(store)
    name = container.container_name
    assert facts.earlier_summary(name, "processed/a.summary.json", few=True) == {"status": "analysed"}
    assert facts.earlier_summary(name, "processed/b.summary.json", few=True) is None
    assert facts.earlier_summary(name, "processed/a.summary.json", few=True) == {"status": "analysed"}  # kept
    assert calls == [("one", "processed/a.summary.json"), ("one", "processed/b.summary.json")]
    assert facts.earlier_summary(name, "processed/a.summary.json") == {"status": "analysed"}
    assert facts.earlier_summary(name, "processed/b.summary.json") is None
    assert calls[2:] == [("list", "processed/")]
