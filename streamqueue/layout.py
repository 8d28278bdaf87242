"""Where a queue's jobs live in Redis: key names, fields, statuses, and which ids are accepted.

Both sides read this one module: the client (:mod:`streamqueue.client`, what a team's API
server calls) and podworker's worker-side adapter (``adapters/redis``). Every key of a queue
starts with its name (``podworker`` by default)::

    <name>:jobs             stream   one entry per submitted job: fields id, job ({"id","input"}
                                     as RunPod's take answers it); consumer group "workers"
    <name>:job:<id>         hash     the job's record: status, entry (its stream entry id),
                                     attempt, worker, submitted/started/finished (ms, Redis
                                     time), result ({"output": ...} or {"error": "..."}),
                                     cancel; expires JOB_RESULT_TTL after a final status
    <name>:progress:<id>    stream   the job's progress updates (the latest few), field p
    <name>:chunks:<id>      stream   the job's streamed output, field c, then nothing after
                                     the final status; a run taken over starts again (field a
                                     says which attempt sent each chunk)
    <name>:results          stream   one entry per final status, fields id, status: what an API
                                     server reads to learn that results are in
    <name>:cancels          stream   ids of running jobs whose cancellation was asked (every
                                     worker reads it; the one holding the job stops it)
    <name>:stats            hash     counters: duplicate_results, late_after_cancel, poisoned,
                                     stale_entries

Key kinds never collide, whatever a job id holds: each kind has its own literal part right
after the queue name (``job:``, ``progress:``, ``chunks:``), and queue names are plain words.
Only a single Redis (or a primary with replicas) is supported, not Redis Cluster: the scripts
reach keys they derive from a job id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUP = "workers"
"""The consumer group every worker of a queue reads the jobs stream through."""

DEFAULT_QUEUE = "podworker"

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED = "COMPLETED", "FAILED", "CANCELLED"
FINAL = frozenset({COMPLETED, FAILED, CANCELLED})
"""A job with one of these statuses is done: its result never changes again."""

MAX_JOB_ID_LENGTH = 256
"""The worker's own limit (``domain.job``): a longer id could not be answered."""

DEFAULT_RESULT_TTL_S = 86_400
"""How long a job's record (its result) is kept once final: a day, unless the worker says."""

RESULTS_KEPT = 100_000
"""About how many announcements the results stream keeps (the job records are the truth)."""
PROGRESS_KEPT = 16
CANCELS_KEPT = 10_000

_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def queue_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a queue, or None."""
    if _QUEUE_NAME.fullmatch(name):
        return None
    return "must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"


def job_id_problem(job_id: object) -> str | None:
    """Why ``job_id`` cannot be a job's id, or None. The worker's rule (``domain.job``):
    a non-empty printable string of at most 256 characters."""
    if not isinstance(job_id, str) or not job_id:
        return "a job id must be a non-empty string"
    if len(job_id) > MAX_JOB_ID_LENGTH:
        return f"a job id must be at most {MAX_JOB_ID_LENGTH} characters"
    if not job_id.isprintable():
        return "a job id must be printable (no control characters)"
    return None


@dataclass(frozen=True)
class Layout:
    """The keys of one queue."""

    name: str = DEFAULT_QUEUE

    def __post_init__(self) -> None:
        problem = queue_name_problem(self.name)
        if problem is not None:
            raise ValueError(f"queue name {self.name!r}: {problem}")

    @property
    def jobs(self) -> str:
        return f"{self.name}:jobs"

    @property
    def results(self) -> str:
        return f"{self.name}:results"

    @property
    def cancels(self) -> str:
        return f"{self.name}:cancels"

    @property
    def stats(self) -> str:
        return f"{self.name}:stats"

    @property
    def group(self) -> str:
        return GROUP

    @property
    def prefix(self) -> str:
        """What the scripts put before ``job:<id>``, ``progress:<id>``, ``chunks:<id>``."""
        return f"{self.name}:"

    def job(self, job_id: str) -> str:
        return f"{self.name}:job:{job_id}"

    def progress(self, job_id: str) -> str:
        return f"{self.name}:progress:{job_id}"

    def chunks(self, job_id: str) -> str:
        return f"{self.name}:chunks:{job_id}"
