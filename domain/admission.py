"""Whether a job just taken may reach the model, and if not, the error that answers it.

Exists so that a job that cannot be run (a malformed envelope, an input over the size limit, a
job that crashed the worker before) is answered at once with a
clear error instead of reaching the model, and so that these rules live in one pure function.
"""

from __future__ import annotations

import json

from domain.job import Job

POISON_STARTS = 2
"""A job that was running when the worker died this many times is not run again."""

CANCELLED_BY_PLATFORM = "job cancelled: the platform asked to stop it"


def refusal(job: Job, *, earlier_starts: int, max_input_bytes: int) -> str | None:
    """The error string answering ``job`` without running it, or None when it may run."""
    problem = job.problem or input_problem(job, max_input_bytes)
    if problem is not None:
        return f"invalid input: {problem}"
    if earlier_starts >= POISON_STARTS:
        return (
            f"job not run: it was running when the worker died {earlier_starts} times "
            "(poison-job guard)"
        )
    return None


def input_problem(job: Job, max_input_bytes: int) -> str | None:
    """Why ``job.input`` is refused before the model sees it (not JSON, or too large)."""
    try:
        size = len(json.dumps(job.input, separators=(",", ":")).encode())
    except (TypeError, ValueError, RecursionError) as exc:
        return f"input is not JSON: {str(exc)[:200] or type(exc).__name__}"
    if size > max_input_bytes:
        return f"input is {size} bytes, over the limit of {max_input_bytes} bytes"
    return None
