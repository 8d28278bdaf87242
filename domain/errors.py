"""Every error podworker raises on purpose, and what the worker does with it.

::

    PodworkerError
    ├── TransientError              retried (with backoff); never a job's final answer by itself
    │   ├── ApiUnavailable          the job API could not be reached, timed out or answered 5xx
    │   ├── RateLimited             the job API answered 429; ``retry_after`` says how long to wait
    │   ├── StorageUnavailable      the object store could not be reached or answered 5xx
    │   └── PodControlUnavailable   the pod-control API could not be reached or answered 5xx
    ├── PermanentError              not retried: becomes the job's error string (``str(err)``)
    │   ├── InvalidInput            the job's input is malformed or out of range
    │   ├── ExecutionTimeout        the job ran past EXECUTION_TIMEOUT
    │   ├── JobCancelled            the platform asked to stop the job, or the worker is stopping
    │   ├── ModelError              the model raised; the message says what it said
    │   │   ├── OutOfMemory         the accelerator ran out of memory on this job
    │   │   └── DeviceLost          the accelerator is unusable (a dead CUDA context): the job
    │   │                           fails, then the worker drains and exits (code 6) for a restart
    │   ├── UploadFailed            an output could not be stored (after retries)
    │   └── RejectedByApi           the job API refused a request for good (4xx other than 429)
    └── ConfigurationError          a setting is missing or wrong; the process exits with code 2

Callers catch ``TransientError`` to retry and ``PermanentError`` to report. Messages never
contain a secret: adapters build them from names, hosts and status codes, never from headers
or credentials.
"""

from __future__ import annotations


class PodworkerError(Exception):
    """Base of every error podworker raises on purpose."""


class TransientError(PodworkerError):
    """Something outside the worker failed for now; trying again later may work.

    ``retry_after`` is the delay (seconds) the other side asked for, when it said one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ApiUnavailable(TransientError):
    """The job API could not be reached, timed out, or answered with a server error."""


class RateLimited(TransientError):
    """The job API answered 429 Too Many Requests."""


class StorageUnavailable(TransientError):
    """The object store could not be reached or answered with a server error."""


class PodControlUnavailable(TransientError):
    """The pod-control API could not be reached or answered with a server error."""


class PermanentError(PodworkerError):
    """Trying again will not help: the message becomes the job's error result."""


class InvalidInput(PermanentError):
    """The job's input is malformed, of the wrong type, or out of range."""


class ExecutionTimeout(PermanentError):
    """The job ran longer than its work timeout."""

    def __init__(self, timeout_ms: int) -> None:
        super().__init__(f"execution timeout after {timeout_ms} ms")
        self.timeout_ms = timeout_ms


class JobCancelled(PermanentError):
    """The job was cancelled: the platform asked to stop it (job-stop)."""


class ModelError(PermanentError):
    """The model raised while running the job."""


class OutOfMemory(ModelError):
    """The accelerator ran out of memory while running the job."""


class DeviceLost(ModelError):
    """The accelerator cannot run anything any more (a dead CUDA context, a lost device).

    Every later job would fail the same way, so the worker fails this job, delivers what it
    holds, and exits with code 6 so that the platform restarts the pod.
    """


class UploadFailed(PermanentError):
    """An output could not be stored, even after retries."""


class RejectedByApi(PermanentError):
    """The job API refused a request for good (a 4xx answer other than 429)."""


class ConfigurationError(PodworkerError):
    """A setting is missing or invalid. Raised at start-up; the process exits with code 2."""
