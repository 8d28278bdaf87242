"""The worker's life as a pure policy: when to take a job, wait, drain, or terminate the pod.

The seed's pod worker got these rules wrong (an idle TTL in milliseconds counted down by one a
second, a work timeout that deleted the pod with the job unreported). Here they are plain
functions of an :class:`Observation`, so they are tested without threads, sockets or sleeps:

- **idle TTL**: after ``idle_ttl`` seconds with nothing in flight, the worker terminates its pod.
  The clock restarts whenever a job finishes; it never expires while a job is in flight or a
  result is still waiting to be delivered. ``idle_ttl=None`` (worker zero) never expires.
- **work timeout**: a job may run ``execution_timeout`` seconds; past that it is failed with
  ``ExecutionTimeout``. A model that does not stop within ``overrun_grace`` seconds more cannot
  be interrupted: the worker reports the job and exits on purpose so the platform restarts it.
- **stopping** (SIGTERM/SIGINT or TTL): take no new job, finish what is in flight, then exit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.Enum):
    """What the controller should do on this pass."""

    TAKE_JOB = "take_job"  # the model is free: ask the job API for work
    WAIT = "wait"  # something is in flight: wait for it (or for the next event)
    TERMINATE = "terminate"  # idle too long: flush results, terminate the pod, exit
    EXIT = "exit"  # stopping and nothing left in flight: exit the process
    ABANDON = "abandon"  # the model overran its timeout and ignores cancellation: exit non-zero


@dataclass(frozen=True)
class LifecyclePolicy:
    """The lifecycle rules, in seconds. ``idle_ttl=None`` means worker zero: never terminate."""

    idle_ttl: float | None = 60.0
    execution_timeout: float = 300.0
    overrun_grace: float = 10.0

    @classmethod
    def from_millis(
        cls,
        *,
        terminate_idle_time_ms: int,
        execution_timeout_ms: int,
        worker_zero: bool = False,
        overrun_grace_ms: int = 10_000,
    ) -> LifecyclePolicy:
        """Build the policy from the seed's millisecond settings.

        ``terminate_idle_time_ms=0`` or ``worker_zero=True`` disables self-termination.
        """
        ttl = None if worker_zero or terminate_idle_time_ms <= 0 else terminate_idle_time_ms / 1000
        return cls(
            idle_ttl=ttl,
            execution_timeout=execution_timeout_ms / 1000,
            overrun_grace=overrun_grace_ms / 1000,
        )


@dataclass(frozen=True)
class Observation:
    """What the controller sees at one instant (``now`` and ``last_activity`` are monotonic s).

    ``model_job_started`` is when the job now on the model started (None when the model is free).
    ``undelivered`` counts results produced but not yet accepted by the job API.
    """

    now: float
    last_activity: float
    model_job_started: float | None = None
    undelivered: int = 0
    stopping: bool = False


def idle_ttl_expired(last_activity: float, now: float, ttl: float | None) -> bool:
    """True when ``ttl`` seconds have passed since ``last_activity``. ``ttl=None`` never expires."""
    return ttl is not None and now - last_activity >= ttl


def execution_timed_out(started: float, now: float, timeout: float) -> bool:
    """True when a job that started at ``started`` has run ``timeout`` seconds or more."""
    return now - started >= timeout


def decide(obs: Observation, policy: LifecyclePolicy) -> Action:
    """The one decision the controller asks for on each pass."""
    if obs.model_job_started is not None:
        overrun_at = obs.model_job_started + policy.execution_timeout + policy.overrun_grace
        if obs.now >= overrun_at:
            return Action.ABANDON
        return Action.WAIT
    if obs.stopping:
        return Action.EXIT if obs.undelivered == 0 else Action.WAIT
    if obs.undelivered == 0 and idle_ttl_expired(obs.last_activity, obs.now, policy.idle_ttl):
        return Action.TERMINATE
    return Action.TAKE_JOB


def seconds_until_idle_expiry(obs: Observation, policy: LifecyclePolicy) -> float | None:
    """How long the worker may stay idle from ``obs.now`` before the TTL expires (None: never)."""
    if policy.idle_ttl is None:
        return None
    return max(0.0, obs.last_activity + policy.idle_ttl - obs.now)
