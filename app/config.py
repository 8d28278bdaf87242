"""The worker's configuration in seconds, built once from the settings (milliseconds).

Settings keep the seed's names and units (``EXECUTION_TIMEOUT`` in ms, ...), which is what a
user sets; everything inside the worker wants seconds. :func:`config_from` is the one place that
converts, so no ``/ 1000`` is scattered through the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.settings import Settings
from domain.lifecycle import LifecyclePolicy, RecyclePolicy
from domain.waiting import MIN_POLL_INTERVAL
from streamqueue.layout import DEFAULT_RESULT_TTL_S


@dataclass(frozen=True)
class JobApiConfig:
    """Timeouts of the HTTP job API: every request ends by its overall deadline."""

    connect_timeout_s: float = 5.0  # a healthy API connects in milliseconds
    request_timeout_s: float = 5.0  # a result post, a ping: the whole answer within this
    take_timeout_s: float = 95.0  # a take or job-stop long-poll: longer than the server holds it


@dataclass(frozen=True)
class WorkerConfig:
    """What the controller and its stages need to know."""

    lifecycle: LifecyclePolicy = field(default_factory=LifecyclePolicy)
    recycle: RecyclePolicy = field(default_factory=RecyclePolicy)  # every limit off
    ping_interval_s: float = 10.0
    max_result_bytes: int = 10_000_000
    max_input_bytes: int = 1_000_000
    slots: int = 1  # jobs on the model at once (CONCURRENCY; a model's concurrency() overrides)
    stream_aggregate: bool = False  # a streaming model's final output is its chunks
    stop_when_drained: bool = False  # the local run: exit once the job source is empty
    max_wait_s: float = 1.0  # longest controller wait without an event (manual clocks in tests)
    min_poll_interval_s: float = MIN_POLL_INTERVAL  # pause after an empty answer given at once
    job_api: JobApiConfig = field(default_factory=JobApiConfig)


@dataclass(frozen=True)
class QueueConfig:
    """The Redis queue's timing (``JOB_QUEUE``), in seconds.

    A take blocks in Redis for at most ``block_s``: a quarter of the lease (so an idle worker
    looks for entries to take over several times a lease), and never more than 5 s (so the idle
    TTL and a stop are seen promptly)."""

    lease_s: float = 60.0
    block_s: float = 5.0
    timeout_s: float = 5.0  # connect, and each reply of a command that does not block
    result_ttl_s: int = DEFAULT_RESULT_TTL_S
    max_attempts: int = 3


def queue_config_from(settings: Settings) -> QueueConfig:
    lease_s = settings.JOB_LEASE / 1000
    return QueueConfig(
        lease_s=lease_s,
        block_s=min(5.0, lease_s / 4),
        timeout_s=settings.JOB_API_TIMEOUT / 1000,
        result_ttl_s=settings.JOB_RESULT_TTL,
        max_attempts=settings.JOB_MAX_ATTEMPTS,
    )


def lifecycle_from(settings: Settings) -> LifecyclePolicy:
    never = settings.never_self_terminates
    return LifecyclePolicy(
        idle_ttl=None if never else settings.TERMINATE_IDLE_TIME / 1000,
        execution_timeout=settings.EXECUTION_TIMEOUT / 1000,
        overrun_grace=settings.OVERRUN_GRACE / 1000,
        shutdown_grace=settings.SHUTDOWN_GRACE / 1000,
        max_held=settings.MAX_UNDELIVERED,
        startup_timeout=settings.STARTUP_TIMEOUT / 1000 if settings.STARTUP_TIMEOUT else None,
    )


def recycle_from(settings: Settings) -> RecyclePolicy:
    return RecyclePolicy(
        max_jobs=settings.MAX_JOBS,
        max_rss_bytes=settings.MAX_RSS_MB * 2**20,
        max_vram_fraction=settings.MAX_VRAM_FRACTION,
    )


def config_from(settings: Settings, *, stop_when_drained: bool | None = None) -> WorkerConfig:
    """The frozen configuration for ``settings``."""
    return WorkerConfig(
        lifecycle=lifecycle_from(settings),
        recycle=recycle_from(settings),
        ping_interval_s=settings.PING_INTERVAL / 1000,
        max_result_bytes=settings.MAX_RESULT_BYTES,
        max_input_bytes=settings.MAX_INPUT_BYTES,
        slots=settings.slots,
        stream_aggregate=settings.STREAM_AGGREGATE,
        stop_when_drained=settings.local_mode if stop_when_drained is None else stop_when_drained,
        job_api=JobApiConfig(
            connect_timeout_s=settings.JOB_API_TIMEOUT / 1000,
            request_timeout_s=settings.JOB_API_TIMEOUT / 1000,
            take_timeout_s=settings.JOB_TAKE_TIMEOUT / 1000,
        ),
    )
