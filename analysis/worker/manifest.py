"""Finishing a job: its own files, written after its media's (the table of its images' rows, then its
manifest), and what its attempt came to.

``processed/_jobs/<job_id>.csv`` gathers the rows of every image the job
analysed into one CSV; ``processed/_jobs/<job_id>.json`` lists every media's
outcome and is written last of all, so a reader that sees it can rely on
every file it names.
"""

from __future__ import annotations

import logging
from pathlib import Path

from azure.core.exceptions import AzureError

from analysis.names import job_manifest_name, job_table_name
from analysis.openface.outputs import write_table
from analysis.openface.results import Outcome
from analysis.storage import BlobChanged, ContainerNotFound, first_line
from analysis.worker.publish import JobReport, ResultWriter, RetryLater
from analysis.worker.shared import Member
from media_rules import Media

log = logging.getLogger(__name__)


def write_job_table(writer: ResultWriter, folder: Path) -> None:
    """``processed/_jobs/<job_id>.csv``: the rows of every image the job analysed, in one CSV.

    CSVs this worker has at hand are used as they are; those of media an
    earlier job analysed are fetched. Written before the job's manifest.
    """
    analysed = sorted(
        (r for r in writer.report.results if r["status"] == Outcome.ANALYSED.value), key=lambda r: r["blob"]
    )
    if not analysed:
        return
    parts = []
    for number, result in enumerate(analysed):
        at_hand = writer.local_csv.get(result["blob"])  # a file, its bytes, or None
        path = at_hand if isinstance(at_hand, Path) else folder / f"{writer.job.job_id}-{number}.csv"
        if isinstance(at_hand, bytes):
            path.write_bytes(at_hand)
        elif at_hand is None:
            csv_name = next(name for name in result["outputs"] if name.endswith(".csv"))
            try:
                writer.store.download_result(writer.job.container, csv_name, path)
            except BlobChanged:
                log.warning("no CSV for the job table: it was deleted", extra={"blob": result["blob"]})
                continue
        parts.append((result["blob"], path))
    table = folder / f"{writer.job.job_id}.csv"
    try:
        rows = write_table(parts, table)
    except ValueError as exc:
        log.warning("no job table: %s", exc)
        return
    name = job_table_name(writer.job.job_id)
    writer.uploaded_bytes += writer.store.upload_file(
        writer.job.container, name, table, {"job_id": writer.job.job_id, "rows": str(rows)}, "text/csv"
    )
    writer.report.outputs.append(name)


def write_manifest(writer: ResultWriter) -> None:
    # Media may have been published from several threads: list them in a fixed order.
    writer.report.results.sort(key=lambda result: result["blob"])
    writer.report.outputs.sort()
    name = job_manifest_name(writer.job.job_id)
    document = {
        "job_id": writer.job.job_id,
        "container": writer.job.container,
        "media": writer.job.media,
        "media_type": writer.job.media_type,
        "faces": writer.job.faces,
        "extra_outputs": writer.job.extra_outputs,
        "status": writer.report.status.value,
        "error": writer.report.error,
        "results": writer.report.results,
        "outputs": writer.report.outputs,
        "summary": writer.report.summary,
    }
    writer.uploaded_bytes += writer.store.upload_json(
        writer.job.container,
        name,
        document,
        {"job_id": writer.job.job_id, "status": writer.report.status.value},
    )
    writer.report.outputs.append(name)


def finish(member: Member, tables: Path, batch_jobs: int) -> JobReport | RetryLater:
    """A job whose media all have their outcome: its own files (``tables``: a folder for the table), and
    what its attempt came to."""
    with member.context():
        if member.retry:
            return RetryLater(member.retry)
        if member.later:
            return RetryLater(member.later, spent=False)
        results = member.results
        if not member.gone:
            try:
                if member.job.media == Media.IMAGE.value:
                    write_job_table(results, tables)
                write_manifest(results)
            except ContainerNotFound:
                member.gone = True
            except AzureError as exc:
                return RetryLater(f"could not write the job manifest: {first_line(exc)}")
        if member.gone:
            results.fail(f"container '{member.job.container}' no longer exists")
    report = results.report
    report.steps = {
        **{k: round(v, 3) for k, v in member.steps.items()},
        "upload_bytes": results.uploaded_bytes,
        "upload_seconds": round(results.upload_seconds, 3),
        "batch_jobs": batch_jobs,
    }
    return report
