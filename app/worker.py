"""The worker: a small controller that observes, asks the lifecycle policy, and acts.

Each pass of :meth:`Worker.run` reads the clock once, builds an ``Observation`` (job on the
model, results undelivered, time since the last activity, stop requested), asks
``domain.lifecycle.decide`` what to do, and does it through the ports. Around it:

- the model stage (``ModelRunner``) runs one job at a time on its own thread;
- the delivery stage (``Delivery``) stores outputs and posts results beside the model;
- the heartbeat pings every ``PING_INTERVAL`` with every job in flight;
- the stop poller cancels jobs the platform asks to stop.

Every wait is on an event with a timeout, so a stop request takes effect at once. Exit codes
are the ``ExitCode`` values below; the README lists them.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import threading
from collections.abc import Callable

from adapters.retrying import Backoff
from app.delivery import Delivery, Finished
from app.heartbeat import Heartbeat
from app.intake import Intake
from app.logs import summarize
from app.metrics import Metrics
from app.model_runner import ModelRunner
from domain.errors import ExecutionTimeout, PermanentError, TransientError
from domain.execution import RunningJob
from domain.job import Job, JobResult
from domain.lifecycle import Action, LifecyclePolicy, Observation, decide
from domain.outputs import describe_error
from domain.ports import Clock, JobApi, JobStopSource, Model, Outbox, PodControl, Storage

log = logging.getLogger("podworker.worker")

POISON_STARTS = 2  # a job that crashed the worker this many times is not run again


class ExitCode(enum.IntEnum):
    """How the process ends, and why."""

    OK = 0  # stopped on request (SIGTERM/SIGINT), idle pod terminated, or local jobs done
    JOB_FAILED = 1  # local run only: a job's result was an error
    CONFIG = 2  # a setting is missing or invalid
    MODEL_STUCK = 3  # a job overran its timeout and the model ignored cancellation
    MODEL_LOAD = 4  # the model could not be loaded
    TERMINATE_FAILED = 5  # the idle TTL expired but the pod could not be terminated
    FORCED = 130  # a second SIGINT/SIGTERM: stopped at once (results stay in the outbox)


class WorkerState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"


class Worker:
    """Takes jobs, runs them, delivers results, and decides when the pod's life ends."""

    def __init__(
        self,
        *,
        job_api: JobApi,
        storage: Storage,
        pod_control: PodControl,
        model: Model,
        outbox: Outbox,
        clock: Clock,
        policy: LifecyclePolicy,
        stop_source: JobStopSource | None = None,
        metrics: Metrics | None = None,
        ping_interval_s: float = 10.0,
        max_result_bytes: int = 10_000_000,
        max_input_bytes: int = 1_000_000,
        shutdown_grace_s: float = 30.0,
        stop_when_drained: bool = False,
        redact: Callable[[str], str] = lambda text: text,
        min_poll_interval_s: float = 0.2,
        take_grace_s: float = 2.0,
    ) -> None:
        self.job_api = job_api
        self.pod_control = pod_control
        self.model = model
        self.outbox = outbox
        self.clock = clock
        self.policy = policy
        self.metrics = metrics or Metrics()
        self.max_input_bytes = max_input_bytes
        self.shutdown_grace_s = shutdown_grace_s
        self.stop_when_drained = stop_when_drained
        # an empty take (or job-stop poll) that came back faster than this is followed by a
        # pause, so a server that answers "no job" at once instead of long-polling is not hammered
        self.min_poll_interval_s = min_poll_interval_s
        # after a stop request, how long a take in progress may still answer (its jobs are run)
        self.take_grace_s = take_grace_s
        self._redact = redact
        self._stop_source = stop_source
        self.stop_event = threading.Event()  # set: take no new job, finish, exit
        self._changed = threading.Event()  # set: something the controller waits on happened
        self._backlog: collections.deque[Job] = collections.deque()
        # stop requests that came before their job reached the model (the take's answer was
        # still on its way): remembered, so the job is cancelled when it arrives
        self._early_stops: collections.deque[str] = collections.deque(maxlen=256)
        self._take_backoff = Backoff(initial=0.25, maximum=5.0)
        self._take_failures_logged = 0.0
        self.stop_reason: str | None = None
        self.state = WorkerState.STARTING
        self.last_activity = clock.now()
        self.model_load_error: str | None = None
        self.delivery = Delivery(
            job_api=job_api,
            storage=storage,
            outbox=outbox,
            clock=clock,
            metrics=self.metrics,
            max_result_bytes=max_result_bytes,
            redact=redact,
        )
        self.delivery.on_delivered = self._on_delivered
        self.runner = ModelRunner(model, clock, self.delivery.submit, self._changed.set)
        self.intake = Intake(job_api, self._changed.set)
        self.heartbeat = Heartbeat(job_api, ping_interval_s, self.in_flight_ids)
        self._stop_poller = threading.Thread(target=self._poll_stops, name="stops", daemon=True)
        self.metrics.gauge("undelivered_results", "Results not yet accepted by the job API.",
                           lambda: float(self.delivery.undelivered))
        self.metrics.gauge("seconds_since_last_job", "Seconds since the last job finished.",
                           lambda: self.clock.now() - self.last_activity)

    # --- control from outside -----------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop taking jobs; finish the one in flight; deliver; exit. Safe from any thread."""
        if not self.stop_event.is_set():
            self.stop_reason = reason
            log.info("stopping: %s", reason, extra={"event": "stop_requested"})
        self.stop_event.set()
        self._changed.set()
        self.delivery.retry_now()

    def in_flight_ids(self) -> list[str]:
        """Every job taken and not yet delivered (model, backlog, delivery)."""
        ids = [job.id for job in list(self._backlog)]  # list(): one atomic copy
        current = self.runner.current
        if current is not None:
            ids.append(current.job_id)
        ids.extend(i for i in self.delivery.in_flight_ids() if i not in ids)
        return ids

    # --- the controller -----------------------------------------------------------------
    def run(self) -> ExitCode:
        """Run until stopped or terminated; returns the process's exit code."""
        self._recover()
        self.delivery.start()
        self.heartbeat.start()
        try:
            if not self._load_model():
                return ExitCode.MODEL_LOAD
            self.runner.start()
            if self._stop_source is not None:
                self._stop_poller.start()
            self.last_activity = self.clock.now()
            self.state = WorkerState.READY
            return self._control_loop()
        finally:
            self.state = WorkerState.STOPPED
            self.stop_event.set()
            self.heartbeat.stop()
            self.intake.stop()
            self.runner.stop()
            self.delivery.stop()

    def _control_loop(self) -> ExitCode:
        while True:
            now = self.clock.now()
            current = self.runner.current
            stopping = self.stop_event.is_set()
            obs = Observation(
                now=now,
                last_activity=self.last_activity,
                model_job_started=current.started if current is not None else None,
                undelivered=self.delivery.undelivered + len(self._backlog),
                stopping=stopping,
            )
            action = decide(obs, self.policy)
            if stopping and current is None and self._backlog:
                action = Action.TAKE_JOB  # jobs already taken are run, not dropped
            if action is Action.TAKE_JOB:
                self.state = WorkerState.BUSY if self._backlog else WorkerState.READY
                self._take_and_start()
            elif action is Action.WAIT:
                self.state = WorkerState.DRAINING if stopping else WorkerState.BUSY
                if current is None and stopping:
                    if not self._drain():
                        return ExitCode.OK
                    continue
                self._wait_for_model(current, now)
            elif action is Action.EXIT:
                log.info("stopped", extra={"event": "exit", "reason": self.stop_reason})
                return ExitCode.OK
            elif action is Action.TERMINATE:
                return self._terminate_pod()
            elif action is Action.ABANDON:
                return self._abandon(current)

    def _wait_for_model(self, current: RunningJob | None, now: float) -> None:
        timeout = 1.0
        if current is not None:
            if current.timed_out(now):  # the model sees it at its next check; allow for that
                timeout = current.deadline + self.policy.overrun_grace - now
            else:
                timeout = current.deadline - now
        self._changed.wait(max(0.001, min(timeout, 1.0)))
        self._changed.clear()

    def _drain(self) -> bool:
        """Wait for deliveries after a stop request; False once done or out of time."""
        self.delivery.retry_now()
        if self.delivery.wait_idle(self.shutdown_grace_s):
            return True
        left = self.delivery.undelivered
        log.warning(
            "shutdown grace over with %d result(s) undelivered; they stay in the outbox and are "
            "sent at the next start", left, extra={"event": "exit_with_outbox"},
        )
        return False

    # --- taking and starting jobs -------------------------------------------------------
    def _take_and_start(self) -> None:
        if not self._backlog:
            if self.stop_event.is_set():
                return
            started = self.clock.now()
            outcome = self._take()
            if outcome is None:  # stopping, and the take in progress did not answer in time
                return
            jobs, error = outcome
            if isinstance(error, TransientError):
                self._take_failed(error)
                return
            if error is not None:  # an adapter bug must not end the worker
                log.error("take failed unexpectedly", exc_info=error)
                self._take_failed(error)
                return
            if self._take_backoff.failures:
                log.info("job API reachable again", extra={"event": "api_recovered"})
            self._take_backoff.reset()
            if not jobs:
                if self.stop_when_drained and self.delivery.undelivered == 0:
                    self.request_stop("all local jobs done")
                    return
                self._pause_after_quick_empty_poll(started)
                return
            self.metrics.observe("take", self.clock.now() - started)
            self.metrics.count("jobs_taken", len(jobs))
            self._backlog.extend(jobs)
        self._start(self._backlog.popleft())

    def _take(self) -> tuple[list[Job], BaseException | None] | None:
        """Run one take on the intake thread, waiting so that a stop request is seen at once."""
        self.intake.request(job_in_progress=self.delivery.undelivered > 0)
        while True:
            outcome = self.intake.collect()
            if outcome is not None:
                return outcome
            if self.stop_event.is_set():
                break
            self._changed.wait(1.0)
            self._changed.clear()
        # stopping while the server holds the take: a short grace, then let it go
        for _ in range(max(1, round(self.take_grace_s / 0.05))):
            outcome = self.intake.collect()
            if outcome is not None:
                return outcome
            self._changed.wait(0.05)
            self._changed.clear()
        log.info("stopping while idle: not waiting for the job API's long-poll to answer",
                 extra={"event": "take_abandoned"})
        return None

    def _pause_after_quick_empty_poll(self, started: float) -> None:
        left = self.min_poll_interval_s - (self.clock.now() - started)
        if left > 0:
            self.stop_event.wait(left)

    def _take_failed(self, exc: BaseException) -> None:
        self.metrics.count("take_errors")
        retry_after = getattr(exc, "retry_after", None)
        delay = self._take_backoff.next_delay(retry_after)
        now = self.clock.now()
        if now - self._take_failures_logged >= 30 or self._take_backoff.failures == 1:
            self._take_failures_logged = now
            log.warning(
                "cannot take jobs (%s); retrying with backoff (%d failure(s) so far)",
                self._redact(describe_error(exc)),
                self._take_backoff.failures,
                extra={"event": "take_failed"},
            )
        self.stop_event.wait(delay)

    def _start(self, job: Job) -> None:
        # the running mark first: from here on, a crash is reported at the next start
        try:
            earlier_starts = self.outbox.started(job)
        except OSError as exc:  # a full or broken disk must not cost the job: run it anyway
            earlier_starts = 0
            log.error("could not mark job %s as running (%s); running it anyway", job.id,
                      exc.strerror or exc, extra={"event": "outbox_write_failed"})
        log.info("job taken", extra={"event": "job_taken", "job_id": job.id})
        if log.isEnabledFor(logging.DEBUG):  # prompts only at DEBUG, long values cut
            log.debug("job input", extra={"event": "job_input", "job_id": job.id,
                                          "input": summarize(job.input)})
        problem = job.problem or self._input_problem(job)
        if problem is not None:
            self.delivery.submit_result(job, JobResult.failure(job.id, f"invalid input: {problem}"))
            return
        if job.id in self._early_stops:
            self.delivery.submit_result(
                job, JobResult.failure(job.id, "job cancelled: the platform asked to stop it")
            )
            return
        if earlier_starts >= POISON_STARTS:
            message = (
                f"job not run: it was running when the worker died {earlier_starts} times "
                "(poison-job guard)"
            )
            log.error(message, extra={"event": "poison_job", "job_id": job.id})
            self.delivery.submit_result(job, JobResult.failure(job.id, message))
            return
        running = RunningJob(
            job,
            started=self.clock.now(),
            timeout_s=self.policy.execution_timeout,
            clock=self.clock,
            on_progress=self.delivery.progress,
        )
        self.runner.submit(running)

    def _input_problem(self, job: Job) -> str | None:
        try:
            size = len(json.dumps(job.input, separators=(",", ":")).encode())
        except (TypeError, ValueError) as exc:
            return f"input is not JSON: {exc}"
        if size > self.max_input_bytes:
            return f"input is {size} bytes, over the limit of {self.max_input_bytes} bytes"
        return None

    def _on_delivered(self, result: JobResult) -> None:
        self.last_activity = self.clock.now()
        self._changed.set()

    # --- start-up -----------------------------------------------------------------------
    def _recover(self) -> None:
        """Report jobs an earlier process died on; ``Delivery.start`` re-sends kept results."""
        kept = {result.job_id for result in self.outbox.pending()}
        for job_id, _starts in self.outbox.interrupted():
            if job_id in kept:  # it died after writing the result down: that result stands
                self.outbox.finished(job_id)
                continue
            message = "worker restarted while running this job (the worker process died)"
            log.warning(message, extra={"event": "job_interrupted", "job_id": job_id})
            self.outbox.put(JobResult.failure(job_id, message))
            self.outbox.abandoned(job_id)
        pending = self.outbox.pending()
        if pending:
            log.info("sending %d result(s) kept from an earlier run", len(pending),
                     extra={"event": "outbox_resend"})

    def _load_model(self) -> bool:
        started = self.clock.now()
        try:
            self.model.load()
        except Exception as exc:
            log.error("model could not be loaded: %s", self._redact(describe_error(exc)),
                      extra={"event": "model_load_failed"})
            self.model_load_error = self._redact(describe_error(exc))
            return False
        log.info("model loaded", extra={"event": "model_loaded",
                                        "seconds": round(self.clock.now() - started, 3)})
        return True

    # --- the end of the pod's life ------------------------------------------------------
    def _terminate_pod(self) -> ExitCode:
        self.state = WorkerState.DRAINING
        log.info("idle for %.0f s: terminating this pod", self.policy.idle_ttl or 0,
                 extra={"event": "idle_ttl_expired"})
        try:
            self.pod_control.terminate()
        except (TransientError, PermanentError) as exc:
            log.error("pod termination failed: %s; exiting anyway",
                      self._redact(describe_error(exc)), extra={"event": "terminate_failed"})
            return ExitCode.TERMINATE_FAILED
        except Exception as exc:
            log.exception("pod termination failed unexpectedly: %s", type(exc).__name__)
            return ExitCode.TERMINATE_FAILED
        log.info("pod terminated", extra={"event": "pod_terminated"})
        return ExitCode.OK

    def _abandon(self, current: RunningJob | None) -> ExitCode:
        """The model ignored its deadline: report the job, deliver everything, exit non-zero."""
        assert current is not None
        log.error(
            "job %s overran its %d ms timeout and the model did not stop; reporting it and "
            "exiting so the platform restarts the worker",
            current.job_id,
            round(current.timeout_s * 1000),
            extra={"event": "model_stuck", "job_id": current.job_id},
        )
        current.abandoned = True  # if the model ever returns, its outcome is dropped
        error = ExecutionTimeout(round(current.timeout_s * 1000))
        self.delivery.submit(Finished(job=current.job, error=error))
        self.stop_event.set()
        self.delivery.wait_idle(self.shutdown_grace_s)
        return ExitCode.MODEL_STUCK

    # --- job-stop requests --------------------------------------------------------------
    def _poll_stops(self) -> None:
        assert self._stop_source is not None
        backoff = Backoff(initial=0.5, maximum=10.0)
        while not self.stop_event.is_set() or self.runner.current is not None:
            started = self.clock.now()
            try:
                ids = self._stop_source.jobs_to_stop()
            except Exception:
                self.stop_event.wait(backoff.next_delay())
                continue
            backoff.reset()
            if not ids:
                self._pause_after_quick_empty_poll(started)
            for job_id in ids:
                self._cancel(job_id)

    def _cancel(self, job_id: str) -> None:
        current = self.runner.current
        if current is not None and current.job_id == job_id:
            log.info("job stop requested", extra={"event": "job_stop", "job_id": job_id})
            current.cancel("job cancelled: the platform asked to stop it")
            return
        for job in list(self._backlog):
            if job.id == job_id:
                try:
                    self._backlog.remove(job)
                except ValueError:  # the controller started it meanwhile
                    break
                self.delivery.submit_result(
                    job, JobResult.failure(job.id, "job cancelled before it started")
                )
                return
        self._early_stops.append(job_id)
        current = self.runner.current  # it may have reached the model meanwhile
        if current is not None and current.job_id == job_id:
            current.cancel("job cancelled: the platform asked to stop it")

