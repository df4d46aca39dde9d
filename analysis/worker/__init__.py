"""The worker process (``python -m analysis.worker``): jobs from the queue, through OpenFace, to results.

One way through it: loop (a free slot) → handler (one batch's life) → gather
(messages, each job claimed by lifecycle) → batch (plan, download, run OpenFace per group, publish) →
lifecycle (settle each job) → manifest.

Glossary, used in this package's names and comments:

job
    One analysis of one upload container, always in a named state; its
    record is in the job store (``jobs``, analysis/job.py).
media
    One blob a job answers with a summary: an image or a video.
options
    What the caller asked for: capture type, faces, extra outputs
    (``job.options``, analysis/options.py).
flags
    OpenFace's command-line flags made from the options (``job.flags``).
batch
    The jobs a worker took off the queue together; their media go through as
    few OpenFace runs as possible.
run
    One OpenFace pass over a group of media: an executable's process, or
    requests to resident engines.
claim
    Taking a job: a token of the worker's own becomes its record's holder,
    and one more attempt is counted there.
publish
    Uploading a media's result blobs, its summary last.
shared outcome
    How one blob version's analysis went, given to every job that listed it
    (analysis/worker/shared.py, analysis/worker/inflight.py).
settle
    Writing a job's final state into its record, as its holder, and letting
    its message go: done, or failed.
retry
    Back to the queue after a failed attempt, with a delay.
hand back
    Back to the queue without spending an attempt: the worker stopped, or
    its disk had no room.
give up
    ``failed`` for good after ``MAX_ATTEMPTS``: result blobs say why, the
    message goes to the poison queue.
quarantine
    The line of jobs whose worker died while running them: each runs again
    alone, one at a time.
"""
