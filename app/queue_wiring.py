"""The Redis queue's side of the composition root: its job API, its pod control, its check.

Used when ``JOB_QUEUE`` names a Redis (a team's own cluster, jobs on Redis Streams, KEDA scaling
the workers) instead of RunPod's webhooks. redis-py is imported here, inside the functions, so a
worker on RunPod never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.config import queue_config_from
from app.settings import Settings
from domain.errors import ConfigurationError
from domain.ports import Clock, PodControl
from domain.scrubbing import Scrubber

if TYPE_CHECKING:
    from adapters.redis.job_api import RedisJobApi
    from app.doctor import Check

LEASE_PINGS = 3
"""A lease must outlast this many heartbeats: one late ping must not cost a job its worker."""


def lease_problem(settings: Settings) -> str | None:
    """Why ``JOB_LEASE`` is too short for the heartbeat that renews it, or None."""
    if settings.JOB_LEASE >= LEASE_PINGS * settings.PING_INTERVAL:
        return None
    return (f"invalid setting JOB_LEASE: must be at least {LEASE_PINGS} x PING_INTERVAL "
            f"({LEASE_PINGS * settings.PING_INTERVAL} ms), since the heartbeat renews the lease "
            f"(got {settings.JOB_LEASE} ms)")


def build_queue_job_api(
    settings: Settings, clock: Clock, pod_id: str, scrub: Scrubber
) -> RedisJobApi:
    """The Redis Streams job API (it is also the job-stop source: cancellations)."""
    from adapters.redis.connection import connect
    from adapters.redis.job_api import RedisJobApi

    assert settings.JOB_QUEUE is not None
    problem = lease_problem(settings)
    if problem is not None:
        raise ConfigurationError(problem)
    config = queue_config_from(settings)
    connections = connect(settings.JOB_QUEUE, password=settings.queue_password,
                          timeout_s=config.timeout_s, block_s=config.block_s)
    return RedisJobApi(
        connections=connections,
        queue=settings.JOB_QUEUE_NAME,
        worker_id=pod_id,
        clock=clock,
        lease_s=config.lease_s,
        max_attempts=config.max_attempts,
        result_ttl_s=config.result_ttl_s,
        max_input_bytes=settings.MAX_INPUT_BYTES,
        scrub=scrub,
    )


def build_queue_pod_control(pod_id: str) -> PodControl:
    """On Kubernetes an idle worker exits 0 and its Job completes: nothing is deleted."""
    from adapters.kubernetes.pod_control import JobCompletesPodControl

    return JobCompletesPodControl(pod_id)


def check_queue(settings: Settings) -> Check:
    """``doctor``: the queue's Redis answers, and how much work waits (no job is taken)."""
    from app.doctor import FAIL, OK, Check
    from streamqueue.client import JobQueue, QueueError

    assert settings.JOB_QUEUE is not None
    problem = lease_problem(settings)
    if problem is not None:
        return Check("job queue", FAIL, problem, "raise JOB_LEASE or lower PING_INTERVAL")
    scrub = Scrubber([settings.queue_password])
    queue = JobQueue.from_url(settings.JOB_QUEUE, settings.JOB_QUEUE_NAME,
                              password=settings.queue_password,
                              timeout_s=settings.JOB_API_TIMEOUT / 1000)
    try:
        health = queue.health()
    except QueueError as exc:
        return Check("job queue", FAIL, scrub(str(exc)),
                     "check JOB_QUEUE, REDIS_PASSWORD and that Redis is reachable from this pod")
    finally:
        queue.close()
    return Check("job queue", OK,
                 f"Redis answers: stream {health['stream']}, {health['lag'] or 0} job(s) "
                 f"waiting, {health['pending']} held by {health['consumers']} worker(s)")
