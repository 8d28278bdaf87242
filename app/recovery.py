"""Start-up recovery: what an earlier process left behind, made into results to deliver.

Exists because a worker can die at any moment (SIGKILL, OOM, a lost pod). At the next start:

- a result kept in the outbox is sent again (the same output, the same image URLs: no re-run);
- a job marked running with no kept result is answered as failed ("worker restarted while
  running this job"), once, and its start count is kept, so a job that crashes the worker again
  and again is recognised (the poison-job guard in ``domain.admission``);
- a job marked running *whose result was already written down* keeps that result.
"""

from __future__ import annotations

import logging

from domain.job import JobResult
from domain.ports import ResultOutbox, RunMarks

log = logging.getLogger("podworker.recovery")

RESTARTED = "worker restarted while running this job (the worker process died)"


def recover(outbox: ResultOutbox, marks: RunMarks) -> list[JobResult]:
    """Turn interrupted jobs into failure results; return every result waiting to be sent."""
    kept = {result.job_id for result in outbox.pending()}
    for job_id, _starts in marks.interrupted():
        if job_id in kept:  # it died after writing the result down: that result stands
            marks.finished(job_id)
            continue
        log.warning(RESTARTED, extra={"event": "job_interrupted", "job_id": job_id})
        outbox.put(JobResult.failure(job_id, RESTARTED))
        marks.abandoned(job_id)
    pending = outbox.pending()
    if pending:
        log.info("sending %d result(s) kept from an earlier run", len(pending),
                 extra={"event": "outbox_resend"})
    return pending
