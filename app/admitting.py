"""A taken job at the model's door: mark it running, log it, and say whether it may run.

The running mark comes first: from then on, a crash is reported at the next start (and counted
by the poison-job guard). The rules themselves are pure, in ``domain.admission``.
"""

from __future__ import annotations

import logging

from app.logs import summarize
from domain import admission
from domain.job import Job
from domain.ports import RunMarks

log = logging.getLogger("podworker.worker")


def admit(job: Job, *, marks: RunMarks, max_input_bytes: int) -> str | None:
    """Mark ``job`` running; return the error that answers it instead of running it, or None."""
    try:
        earlier_starts = marks.started(job)
    except OSError as exc:  # a full or broken disk must not cost the job: run it anyway
        earlier_starts = 0
        log.error("could not mark job %s as running (%s); running it anyway", job.id,
                  exc.strerror or exc, extra={"event": "outbox_write_failed"})
    log.info("job taken", extra={"event": "job_taken", "job_id": job.id})
    if log.isEnabledFor(logging.DEBUG):  # prompts only at DEBUG, long values cut
        log.debug("job input", extra={"event": "job_input", "job_id": job.id,
                                      "input": summarize(job.input)})
    refusal = admission.refusal(job, earlier_starts=earlier_starts,
                                max_input_bytes=max_input_bytes)
    if refusal is not None and earlier_starts >= admission.POISON_STARTS:
        log.error(refusal, extra={"event": "poison_job", "job_id": job.id})
    return refusal
