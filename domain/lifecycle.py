"""The worker's life as a pure policy: take, start, wait, drain, retire, exit or give up.

The seed's pod worker got these rules wrong (an idle TTL in milliseconds counted down by one a
second, a work timeout that deleted the pod with the job unreported). Here every decision the
controller makes is one :class:`Action` of :func:`decide`, a plain function of an
:class:`Observation`, so the rules are tested without threads, sockets or sleeps:

- **taking**: ask the job API for work only when a model slot is free, nothing taken is
  waiting to start, no take is already out, and any backoff after a failed take has passed.
- **idle TTL**: after ``idle_ttl`` seconds with nothing in flight (nothing queued, running,
  undelivered, no take out), the worker *retires*: it stops taking, then terminates its pod.
  The clock restarts whenever a result is delivered. ``idle_ttl=None`` (worker zero) never
  expires.
- **work timeout**: a job may run ``execution_timeout`` seconds; past that the model is asked to
  stop (``RunningJob.check_cancelled`` raises). A model that does not stop within
  ``overrun_grace`` more cannot be interrupted: the worker reports the job and exits on purpose
  (``ABANDON``) so the platform restarts it.
- **stopping** (SIGTERM, SIGINT, SIGHUP, retiring, or recycling): take nothing new; jobs already
  taken are run; a take still out gets ``take_grace`` to answer; then results are delivered for
  at most ``shutdown_grace`` after the last job finished (``DRAIN``), and the worker exits.
- **start-up deadline**: the model has ``startup_timeout`` seconds from the worker's start to be
  loaded (:func:`startup_expired`); past it the start has failed, however the load behaves.
- **recycling**: a worker that has taken ``max_jobs`` jobs, whose memory grew past its limits
  after a job, or whose model asked for it, stops taking and exits to be replaced by a fresh
  process (:func:`recycle_reason`, :func:`take_budget`).

:func:`decide` also says until when nothing can change without an event (``wake_at``), so the
controller waits on its inbox until then and never polls.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.Enum):
    """What the controller does on this pass."""

    START = "start"  # a taken job waits and a model slot is free: start it
    TAKE = "take"  # slots are free and nothing waits: ask the job API for work
    WAIT = "wait"  # nothing to do until an event (or ``wake_at``)
    DRAIN = "drain"  # stopping, nothing runs: wait for results to be delivered
    RETIRE = "retire"  # idle too long: stop taking, then terminate the pod
    EXIT = "exit"  # stopping and everything delivered (or the grace is over): leave
    ABANDON = "abandon"  # a model overran its timeout and ignores cancellation: exit non-zero


@dataclass(frozen=True)
class LifecyclePolicy:
    """The lifecycle rules, in seconds. ``idle_ttl=None`` means worker zero: never retire."""

    idle_ttl: float | None = 60.0
    execution_timeout: float = 300.0
    overrun_grace: float = 10.0
    shutdown_grace: float = 30.0
    take_grace: float = 2.0
    startup_timeout: float | None = 900.0  # a large model with compile loads in minutes


@dataclass(frozen=True)
class Observation:
    """What the controller sees at one instant (all times are monotonic seconds).

    ``running`` holds the start time of every job on the model; ``slots`` is how many jobs the
    model may run at once. ``queued`` counts jobs taken and not started, ``undelivered`` results
    produced and not yet accepted by the job API. ``last_activity`` is when the worker last
    delivered a result (or started); ``last_finished`` when the model last finished a job.
    """

    now: float
    last_activity: float
    slots: int = 1
    running: tuple[float, ...] = ()
    queued: int = 0
    undelivered: int = 0
    take_out: bool = False
    take_allowed_at: float = 0.0
    stopping_since: float | None = None
    last_finished: float = 0.0

    @property
    def stopping(self) -> bool:
        return self.stopping_since is not None

    @property
    def idle(self) -> bool:
        """Nothing at all in flight."""
        return not (self.running or self.queued or self.undelivered or self.take_out)


@dataclass(frozen=True)
class Decision:
    """The action, and for ``WAIT``/``DRAIN`` the time by which to look again (None: only on an
    event)."""

    action: Action
    wake_at: float | None = None


def decide(obs: Observation, policy: LifecyclePolicy) -> Decision:
    """The one decision the controller asks for on each pass."""
    deadlines: list[float] = []
    for started in obs.running:
        overrun_at = started + policy.execution_timeout + policy.overrun_grace
        if obs.now >= overrun_at:
            return Decision(Action.ABANDON)
        deadlines.append(overrun_at)  # the model itself sees the timeout at its next check
    free = obs.slots - len(obs.running)
    if obs.queued and free > 0:
        return Decision(Action.START)
    if obs.stopping:
        return _stopping(obs, policy, deadlines)
    if obs.idle and idle_ttl_expired(obs.last_activity, obs.now, policy.idle_ttl):
        return Decision(Action.RETIRE)
    if free > obs.queued and not obs.take_out:
        if obs.now >= obs.take_allowed_at:
            return Decision(Action.TAKE)
        deadlines.append(obs.take_allowed_at)
    if obs.idle and policy.idle_ttl is not None:
        deadlines.append(obs.last_activity + policy.idle_ttl)
    return Decision(Action.WAIT, min(deadlines, default=None))


def _stopping(obs: Observation, policy: LifecyclePolicy, deadlines: list[float]) -> Decision:
    if obs.running or obs.queued:
        return Decision(Action.WAIT, min(deadlines, default=None))
    assert obs.stopping_since is not None
    if obs.take_out:  # its jobs would still be run: give it a moment to answer
        answer_by = obs.stopping_since + policy.take_grace
        if obs.now < answer_by:
            return Decision(Action.WAIT, answer_by)
    if obs.undelivered == 0:
        return Decision(Action.EXIT)
    drain_until = max(obs.stopping_since, obs.last_finished) + policy.shutdown_grace
    if obs.now >= drain_until:
        return Decision(Action.EXIT)
    return Decision(Action.DRAIN, drain_until)


def idle_ttl_expired(last_activity: float, now: float, ttl: float | None) -> bool:
    """True when ``ttl`` seconds have passed since ``last_activity``. ``ttl=None`` never expires."""
    return ttl is not None and now - last_activity >= ttl


def startup_expired(started: float, now: float, timeout: float | None) -> bool:
    """True once ``timeout`` seconds have passed since the worker ``started``; ``None`` never
    expires."""
    return timeout is not None and now - started >= timeout


def startup_wait(started: float, now: float, timeout: float | None) -> float | None:
    """Seconds until the start-up deadline (0 once past it); ``None`` without one."""
    return None if timeout is None else max(0.0, started + timeout - now)


@dataclass(frozen=True)
class RecyclePolicy:
    """When a worker renews itself; each limit off at 0.

    Long-running model processes decay (host memory, VRAM, file handles leak), so, like Celery's
    ``worker_max_tasks_per_child`` and ``worker_max_memory_per_child``, a worker can leave after
    ``max_jobs`` jobs, or once its resident memory (``max_rss_bytes``) or the VRAM still
    allocated after a job (``max_vram_fraction`` of the device) is past its limit.
    """

    max_jobs: int = 0
    max_rss_bytes: int = 0
    max_vram_fraction: float = 0.0


@dataclass(frozen=True)
class Wear:
    """What a worker has been through so far: jobs taken and, after the last job, its memory
    (``None``: not known) and the job whose model asked for a fresh worker, if it did."""

    jobs_taken: int = 0
    rss_bytes: int | None = None
    vram_fraction: float | None = None
    asked_by: str | None = None


def recycle_reason(wear: Wear, policy: RecyclePolicy) -> str | None:
    """Why the worker must renew itself now, or None. The reason names the setting."""
    if wear.asked_by is not None:
        return f"job {wear.asked_by} asked for a fresh worker (refresh_worker)"
    if policy.max_jobs and wear.jobs_taken >= policy.max_jobs:
        return f"{wear.jobs_taken} jobs taken (MAX_JOBS={policy.max_jobs})"
    rss = wear.rss_bytes
    if policy.max_rss_bytes and rss is not None and rss > policy.max_rss_bytes:
        return (f"resident memory {rss / 2**20:.0f} MB is past MAX_RSS_MB="
                f"{policy.max_rss_bytes / 2**20:.0f}")
    vram = wear.vram_fraction
    if policy.max_vram_fraction and vram is not None and vram > policy.max_vram_fraction:
        return (f"{vram:.0%} of the device's memory still allocated after a job "
                f"(MAX_VRAM_FRACTION={policy.max_vram_fraction:g})")
    return None


def take_budget(jobs_taken: int, policy: RecyclePolicy) -> int | None:
    """How many more jobs this worker may take (``None``: no limit), so a take never brings
    more than ``max_jobs`` in all."""
    return None if not policy.max_jobs else max(0, policy.max_jobs - jobs_taken)


@dataclass(frozen=True)
class FailedStarts:
    """The starts that failed in a row before this one (a crash loop shows as a count that
    grows), and the phase and error of the last."""

    count: int = 0
    phase: str | None = None
    error: str | None = None
