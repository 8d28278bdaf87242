"""What the queue tells a client about its jobs, and the client's errors.

A job's record (``<name>:job:<id>``, a hash) read into a :class:`JobState`; streamed pieces into
:class:`Chunk`; what a submit did into :class:`Submitted`. The errors::

    QueueError
    ├── QueueUnavailable   Redis could not be reached, timed out, or refused for now
    ├── UnknownJob         no such job (never submitted, or its record expired); a KeyError
    └── WaitTimeout        not final in the time given; a TimeoutError
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamqueue import layout


class QueueError(Exception):
    """Base of this client's errors."""


class QueueUnavailable(QueueError):
    """Redis could not be reached, timed out, or refused the command for now."""


class UnknownJob(QueueError, KeyError):
    """No job with this id is known (never submitted, or its record has expired)."""

    def __str__(self) -> str:
        return f"no job {self.args[0]!r} in this queue (never submitted, or expired)"


class WaitTimeout(QueueError, TimeoutError):
    """The job did not reach a final status within the time given."""


@dataclass(frozen=True)
class JobState:
    """What the queue knows of one job. Times are Redis's clock, in ms since the epoch."""

    id: str
    status: str
    output: Any = None
    error: str | None = None
    attempt: int = 0
    worker: str | None = None
    submitted_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None

    @property
    def final(self) -> bool:
        return self.status in layout.FINAL

    def to_json(self) -> dict[str, Any]:
        """The job as RunPod's ``/status`` answers it (``delayTime``, ``executionTime`` in ms)."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.status == layout.COMPLETED:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        if self.submitted_ms is not None and self.started_ms is not None:
            body["delayTime"] = max(0, self.started_ms - self.submitted_ms)
        if self.started_ms is not None and self.finished_ms is not None:
            body["executionTime"] = max(0, self.finished_ms - self.started_ms)
        if self.worker is not None:
            body["workerId"] = self.worker
        if self.attempt:
            body["attempt"] = self.attempt
        return body


@dataclass(frozen=True)
class Chunk:
    """One streamed piece of a job's output; ``attempt`` says which run sent it (a run taken
    over after its worker died streams again from its first chunk)."""

    output: Any
    attempt: int


@dataclass(frozen=True)
class Submitted:
    id: str
    added: bool  # False: the id was already known, nothing changed
    status: str  # the job's status after the call


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def number(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def chunk_of(fields: Mapping[bytes, bytes]) -> Chunk:
    return Chunk(json.loads(fields[b"c"]), number(fields.get(b"a")) or 1)


def state_of(job_id: str, record: Mapping[bytes, bytes]) -> JobState:
    if not record:
        raise UnknownJob(job_id)
    fields = {text(k): v for k, v in record.items()}
    result: dict[str, Any] = {}
    if "result" in fields:
        try:
            loaded = json.loads(fields["result"])
            result = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            result = {"error": "the stored result is not JSON"}
    error = result.get("error")
    worker = fields.get("worker")
    return JobState(
        id=job_id,
        status=text(fields.get("status", b"UNKNOWN")),
        output=result.get("output"),
        error=None if error is None else str(error),
        attempt=number(fields.get("attempt")) or 0,
        worker=None if worker is None else text(worker),
        submitted_ms=number(fields.get("submitted")),
        started_ms=number(fields.get("started")),
        finished_ms=number(fields.get("finished")),
    )
