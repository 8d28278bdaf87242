"""Jobs as the worker sees them, the results it sends back, and outputs to be stored.

A :class:`Job` is built from the job API's JSON by :func:`job_from_wire`, which never raises:
a job whose id can be read but whose shape (or id) is wrong comes back with ``problem`` set, so
the worker can answer it with an error instead of dropping it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_JOB_ID_LENGTH = 256
"""Longest job id that is run. A longer one (up to ``MAX_ANSWERED_ID_LENGTH``), or one with
control or other unprintable characters, is answered with an error instead, never run."""
MAX_ANSWERED_ID_LENGTH = 1024
"""Longest job id answered at all: its result URL must carry it (percent-encoded, up to 12 bytes
a character). An id longer than this, empty, not a string or an integer, or not encodable as
UTF-8 cannot be answered: it is dropped with a warning and the platform's own job timeout ends
that job."""


@dataclass(frozen=True)
class Job:
    """One unit of work taken from the job API.

    ``taken_at`` is the monotonic time (seconds) the worker received it. ``problem`` is set when
    the envelope was malformed (for example ``input`` was not a JSON object); such a job is
    answered with an ``InvalidInput`` error and never reaches the model. ``platform_fields``
    holds the job's other top-level fields as taken (RunPod's ``s3Config``, ``webhook``...):
    an SDK handler sees them in its job, as under RunPod's SDK; they are kept out of ``repr``
    (``s3Config`` holds credentials) and never logged.
    """

    id: str
    input: dict[str, Any]
    taken_at: float
    problem: str | None = None
    platform_fields: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def secrets(self) -> tuple[str, ...]:
        """The credentials the platform sent with this job (:func:`secrets_in`)."""
        return secrets_in(self.platform_fields)


def secrets_in(platform_fields: dict[str, Any]) -> tuple[str, ...]:
    """The credentials a job's platform fields carry (``s3Config``'s ``accessId`` and
    ``accessSecret``, strings only): scrubbed from that job's error and from what is logged of
    it, like the worker's own secrets (a log record carries them as ``_secrets``)."""
    config = platform_fields.get("s3Config")
    if not isinstance(config, dict):
        return ()
    return tuple(v for k in ("accessId", "accessSecret")
                 if isinstance(v := config.get(k), str) and v)


class Artifact:
    """A binary output (an image, say) the model produced, to be stored before the result is sent.

    Models put artifacts anywhere in their output; the delivery stage stores each one through
    the storage port and puts the reference (a URL or a path) in its place.

    ``Artifact(data)`` holds its bytes. ``Artifact.rendered(render)`` holds a function that makes
    them: ``render()`` runs the first time :attr:`data` is read, on the reading thread (the store
    stage's, so PNG encoding stays off the model's thread), at most once even when several
    threads read at the same time; the function and what it holds are dropped once it returned.
    Either way an artifact never changes once made.
    """

    __slots__ = ("_data", "_lock", "_render", "content_type", "extension")

    def __init__(
        self, data: bytes, content_type: str = "image/png", extension: str = "png"
    ) -> None:
        self._data: bytes | None = data
        self._render: Callable[[], bytes] | None = None
        self._lock = threading.Lock()
        self.content_type = content_type
        self.extension = extension

    @classmethod
    def rendered(
        cls, render: Callable[[], bytes], content_type: str = "image/png", extension: str = "png"
    ) -> Artifact:
        """An artifact whose bytes ``render()`` makes when they are first read."""
        artifact = cls(b"", content_type, extension)
        artifact._data = None
        artifact._render = render
        return artifact

    @property
    def data(self) -> bytes:
        """The bytes; made now (by the render function) if they were not made yet."""
        data = self._data
        if data is None:
            with self._lock:
                if self._data is None and self._render is not None:
                    self._data, self._render = bytes(self._render()), None
                data = self._data if self._data is not None else b""
        return data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Artifact):
            return NotImplemented
        return (self.data, self.content_type, self.extension) == (
            other.data, other.content_type, other.extension
        )

    def __hash__(self) -> int:
        return hash((self.data, self.content_type, self.extension))

    def __repr__(self) -> str:
        if self._data is None:
            return f"Artifact({self.content_type}, not rendered yet)"
        return f"Artifact({self.content_type}, {len(self._data)} bytes)"


@dataclass(frozen=True)
class JobResult:
    """The final answer for one job: an output, or an error string (never both).

    ``streamed`` marks the final result of a job whose output was streamed in chunks before it
    (the job API is told with ``isStream=true``). ``stop_pod`` asks the platform for a fresh
    worker once this result is in (``"stopPod": true``, as RunPod's SDK sends for a handler's
    ``refresh_worker``).
    """

    job_id: str
    output: Any = None
    error: str | None = None
    streamed: bool = False
    stop_pod: bool = False

    @classmethod
    def success(cls, job_id: str, output: Any) -> JobResult:
        return cls(job_id=job_id, output=output)

    @classmethod
    def failure(cls, job_id: str, error: str) -> JobResult:
        return cls(job_id=job_id, error=error or "unknown error")

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_wire(self) -> dict[str, Any]:
        """The body the job API expects: ``{"output": ...}`` or ``{"error": "<string>"}``, with
        ``"stopPod": true`` when the worker is to be replaced after it."""
        body: dict[str, Any] = (
            {"error": self.error} if self.error is not None else {"output": self.output}
        )
        if self.stop_pod:
            body["stopPod"] = True
        return body

    def to_json(self) -> dict[str, Any]:
        """A self-contained record (job id included), as kept in the outbox."""
        record = {"id": self.job_id, **self.to_wire()}
        if self.streamed:
            record["streamed"] = True
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> JobResult:
        streamed = record.get("streamed") is True
        stop_pod = record.get("stopPod") is True
        if "error" in record:
            return cls(str(record["id"]), error=str(record["error"]) or "unknown error",
                       streamed=streamed, stop_pod=stop_pod)
        return cls(str(record["id"]), output=record.get("output"), streamed=streamed,
                   stop_pod=stop_pod)

    def wire_size(self) -> int:
        """Bytes of the JSON body that :meth:`to_wire` produces."""
        return len(json.dumps(self.to_wire(), separators=(",", ":")).encode())


def job_from_wire(payload: object, now: float) -> Job | None:
    """Build a job from one JSON object as the take endpoint returns it.

    Returns None when no usable id can be read (the caller logs the rejection: there is nothing
    to answer). Never raises.
    """
    if not isinstance(payload, dict):
        return None
    raw_id = payload.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        return None
    job_id = str(raw_id)
    if not job_id or len(job_id) > MAX_ANSWERED_ID_LENGTH or not _utf8(job_id):
        return None
    problem = id_problem(job_id)
    if problem is not None:
        return Job(job_id, {}, now, problem=problem)
    raw_input = payload.get("input")
    if not isinstance(raw_input, dict):
        kind = "missing" if raw_input is None else f"a JSON {_json_kind(raw_input)}"
        problem = f"input must be a JSON object, got {kind}"
        if "input" not in payload:
            problem += unwrapped_hint(payload)
        return Job(job_id, {}, now, problem=problem)
    fields = {key: value for key, value in payload.items() if key not in ("id", "input")}
    return Job(job_id, raw_input, now, platform_fields=fields)


def id_problem(job_id: str) -> str | None:
    """Why a job with this (answerable) id is answered with an error instead of run, or None."""
    if len(job_id) > MAX_JOB_ID_LENGTH:
        return (f"job id is {len(job_id)} characters long, over the {MAX_JOB_ID_LENGTH} this "
                "worker runs; the job was not run")
    if not job_id.isprintable():
        return "job id holds control or unprintable characters; the job was not run"
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no URL can carry it
        return False
    return True
ENVELOPE_KEYS = frozenset({"id", "input", "webhook", "policy", "s3Config"})
"""Keys a job may carry beside its ``input`` (the platform's own)."""


def unwrapped_hint(payload: dict[str, object]) -> str:
    """How to wrap a job sent without its ``{"input": ...}`` envelope, naming the fields that
    were sent at the top level instead (at most five, each cut short)."""
    stray = [str(key)[:40] for key in payload if key not in ENVELOPE_KEYS]
    if not stray:
        return ': send the job as {"input": {...}}, its fields inside "input"'
    # one line, whatever the keys hold: unprintable ones are shown JSON-escaped
    shown = ", ".join(key if key.isprintable() else json.dumps(key) for key in stray[:5])
    shown += ", ..." if len(stray) > 5 else ""
    example = ", ".join(f"{json.dumps(key)}: ..." for key in stray[:2])
    return (f': its fields ({shown}) belong inside "input": send {{"input": {{{example}}}}}, '
            f"not {{{example}}}")


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def safe_name(job_id: str) -> str:
    """A form of the job id that is safe as one path segment and one S3 key segment.

    Ids made only of letters, digits, ``-``, ``_`` and ``.`` (not starting with a dot) are kept
    as they are, so RunPod's ids map to themselves. Anything else (slashes, ``..``, unicode,
    control characters) is replaced, and ``~`` plus a short hash of the original id is appended,
    so two different ids never share a name: ``~`` never appears in a kept id, so no plain id
    can look like the name made for an odd one.
    """
    if job_id and job_id[0] != "." and all(c in _SAFE_CHARS for c in job_id) and len(job_id) <= 128:
        return job_id
    import hashlib

    cleaned = "".join(c if c in _SAFE_CHARS else "_" for c in job_id[:96]).lstrip(".") or "job"
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned}~{digest}"
