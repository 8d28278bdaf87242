"""The worker's controller: observe, ask the lifecycle policy, act.

Threads, what each owns, and how they talk (queues and events, never shared fields)::

    controller (main)  owns the Ledger (every job held: queued, running, undelivered), the
      │                lifecycle times and the stop reason; drains its Inbox, builds an
      │                Observation, asks domain.lifecycle.decide, acts; publishes a Snapshot
      ├─ intake        one take at a time (a long-poll)               ──Taken──────────► inbox
      ├─ model         model.load(), then jobs (model-2 ... for more  ──ModelLoaded/Done─► inbox
      │  │             slots; model-loop: async tasks)                ──chunks──► store
      │  ├─ model-device  Stable Diffusion: load, warm-up and every pipeline call (batched):
      │  │             the only thread that touches the GPU; the job threads check inputs
      │  │             and load images side by side, then wait for their rows
      │  └─ model-concurrency  the model's own concurrency() hook, asked with a deadline
      ├─ store         result → outbox (durable), checked chunks      ──result──► post
      │  ├─ store-upload  outputs → Storage, up to 4 jobs at once (a hung upload holds
      │  │             only its job; results that store nothing never wait for it)
      │  └─ s3-upload  S3 storage: one job's outputs uploaded in parallel (up to 4 threads)
      ├─ post          chunks, results → job API, retried; progress   ──Delivered──────► inbox
      │                (one "post" thread per model slot, up to 8; a job keeps its thread)
      ├─ heartbeat     ping(in-flight ids) every PING_INTERVAL        (reads the Snapshot)
      ├─ job-stops     the platform's job-stop long-poll              ──StopJob────────► inbox
      ├─ http-deadlines  cuts HTTP requests at their overall deadline (adapters.http.client)
      └─ health        /health and /metrics, when HEALTH_PORT is set  (reads the Snapshot)
    signals            a short-lived "stop-request" thread            ──StopWorker─────► inbox
    startup-deadline   app.cli: disarms the C-level start-up watchdog once the start ended

Each pass reads the clock once. The controller never sleeps: it waits on its inbox until the
policy's ``wake_at`` (a take backoff, a job's overrun, the idle TTL, the drain deadline).

Start-up (``app.startup``): the controller waits for ``ModelLoaded`` until ``STARTUP_TIMEOUT``
at most; it never waits *on* the model thread, so a load stuck in C code is left behind. A
failed start (the load raised, or the deadline passed) takes one job, fails it with the phase,
the error and the start-up log's last lines, delivers, and exits (code 4 or 8). Recycling
(``app.recycling``): past ``MAX_JOBS``, ``MAX_RSS_MB`` or ``MAX_VRAM_FRACTION``, or when a model
asks (``ask_for_fresh_worker``), the worker stops taking, delivers what it holds, exits 7.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app import messages as msg
from app.admitting import admit
from app.config import WorkerConfig
from app.metrics import Metrics
from app.recovery import recover
from app.recycling import Recycler
from app.stages import Board, ExitCode, Snapshot, Stages, WorkerState, terminate_pod
from app.startup import LogTail, StartFailure, earlier_failures, failure_text, start_failed
from app.storing import Outcome
from app.take_pacing import TakePacer
from domain import admission
from domain.errors import ExecutionTimeout
from domain.execution import RunningJob
from domain.job import Job, JobResult
from domain.ledger import Ledger
from domain.lifecycle import (
    Action,
    Observation,
    decide,
    room_to_take,
    startup_expired,
    startup_wait,
)
from domain.ports import Clock, PodControl, ResultOutbox, RunMarks, StartHistory

log = logging.getLogger("podworker.worker")


class Worker:
    """Takes jobs, runs them, delivers results, and decides when the pod's life ends."""

    def __init__(
        self,
        *,
        stages: Stages,
        inbox: msg.Inbox,
        outbox: ResultOutbox,
        marks: RunMarks,
        board: Board,
        pod_control: PodControl,
        clock: Clock,
        config: WorkerConfig,
        metrics: Metrics,
        recycler: Recycler,
        history: StartHistory,
        scrub: Callable[[str], str],
        interrupt: threading.Event | None = None,
    ) -> None:
        self.stages = stages
        self._inbox, self._outbox, self._marks, self._pod = inbox, outbox, marks, pod_control
        self.clock, self.config, self.metrics = clock, config, metrics
        self._policy = config.lifecycle
        self.interrupt = interrupt or threading.Event()  # set by request_stop: waits end
        self._ledger, self._take_out = Ledger(), False
        self._stop_asked: dict[str, float] = {}  # running jobs the platform stopped: since when
        self._pacer = TakePacer(config.min_poll_interval_s)
        self._stopping_since: float | None = None
        self.stop_reason: str | None = None
        self._retiring = False
        self._exit_code: ExitCode | None = None  # set once the model is lost (stuck, device)
        self.startup = stages.runner.startup  # the phases of this start (read by /health)
        self.start_failure: StartFailure | None = None
        self.failed_starts_before = 0  # failed starts in a row before this one
        self._recycler, self._history, self._scrub = recycler, history, scrub
        self._recycling: str | None = None  # why this worker renews itself, once decided
        self._last_activity = self._last_finished = clock.now()
        self._board = board
        board.snapshot = Snapshot(last_activity=self._last_activity)

    # --- control from outside (any thread) ----------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop taking jobs; finish what is held; deliver; exit."""
        self.interrupt.set()
        self._inbox.put(msg.StopWorker(reason))

    @property
    def snapshot(self) -> Snapshot:
        return self._board.snapshot

    # --- the controller -----------------------------------------------------------------
    def run(self) -> ExitCode:
        """Run until stopped, retired, recycled or stuck; returns the process's exit code."""
        s = self.stages
        tail = LogTail(self._scrub).attach()  # the start-up's log, for a failed start's job
        try:
            self.failed_starts_before = earlier_failures(self._history)
            recovered = recover(self._outbox, self._marks)
            self._ledger.recovered(result.job_id for result in recovered)
            s.poster.resend(recovered)
            s.start_support()
            loaded = self._await_model()
            tail.detach()
            if self.start_failure is not None:
                return self._fail_start(self.start_failure, tail.lines())
            if not loaded:
                return ExitCode.OK
            s.start_intake()
            return self._loop()
        finally:
            tail.detach()
            self._publish(WorkerState.STOPPED)
            s.stop()

    # --- start-up -------------------------------------------------------------------------
    def _await_model(self) -> bool:
        """Wait for the model until ``STARTUP_TIMEOUT``: True once loaded; False when stopped,
        or when the start failed (``start_failure`` says why)."""
        self._publish(WorkerState.STARTING)
        began, timeout = self.startup.began, self._policy.startup_timeout
        while True:
            now = self.clock.now()
            if startup_expired(began, now, timeout):
                self.start_failure = start_failed(
                    self.startup, self._history, timed_out=True,
                    error=f"the start-up did not finish within STARTUP_TIMEOUT ({timeout:g} s)")
                return False
            wait = startup_wait(began, now, timeout)
            message = self._inbox.get(None if wait is None else min(wait, self.config.max_wait_s))
            if isinstance(message, msg.ModelLoaded):  # the model stage logged it
                self._last_activity = self._last_finished = self.clock.now()
                if message.error is not None:
                    self.start_failure = start_failed(self.startup, self._history,
                                                      error=message.error, timed_out=False)
                    return False
                seconds = self.startup.finish()
                self._history.record_success()
                log.info("started in %.1f s (%s)", seconds, self.startup.summary(),
                         extra={"event": "started", "seconds": round(seconds, 3)})
                return True
            if isinstance(message, msg.StopWorker):
                log.info("stopping while the model loads: %s", message.reason,
                         extra={"event": "stop_requested"})
                self.startup.finish()
                return False
            if message is not None:
                self._apply(message, self.clock.now())

    def _fail_start(self, failure: StartFailure, tail: list[str]) -> ExitCode:
        """Take one job, fail it with ``failure``, deliver, exit: the user sees why in the job's
        status, and the queue is not drained (one job per failed start, at most)."""
        self._exit_code = ExitCode.STARTUP_TIMEOUT if failure.timed_out else ExitCode.MODEL_LOAD
        self._publish(WorkerState.STARTUP_FAILED)
        error = failure_text(phase=failure.phase, seconds=failure.seconds, error=failure.error,
                             tail=tail, scrub=self._scrub)
        self.stages.intake.start()
        self.stages.intake.request(job_in_progress=bool(self._ledger.undelivered), max_jobs=1)
        for job in self._one_take():
            if self._ledger.take(job):
                log.info("job %s failed: the worker could not start", job.id,
                         extra={"event": "startup_failure_reported", "job_id": job.id})
                self._answer(job.id, job, error)
        self._begin_stop("the start failed", self.clock.now())
        return self._loop()  # no slot (``_exit_code`` is set): delivers, then exits

    def _one_take(self) -> list[Job]:
        """The jobs of the one take a failed start makes (it ends by the job API's deadline)."""
        give_up = self.clock.now() + self.config.job_api.take_timeout_s + self._policy.take_grace
        while (wait := give_up - self.clock.now()) > 0:
            message = self._inbox.get(wait)
            if isinstance(message, msg.Taken):
                if message.error is not None:
                    log.warning("the failed start's take failed: %s", message.error,
                                extra={"event": "take_failed"})
                self.metrics.count("jobs_taken", len(message.jobs))
                return message.jobs
            if message is not None:
                self._apply(message, self.clock.now())  # deliveries, a stop: noted
            if self._stopping_since is not None:  # stopped: the take gets take_grace, as ever
                give_up = min(give_up, self._stopping_since + self._policy.take_grace)
        log.warning("the failed start's take did not answer in time; exiting without it",
                    extra={"event": "take_abandoned"})
        return []

    def _loop(self) -> ExitCode:
        wait: float | None = 0.0
        while True:
            message = self._inbox.get(wait)
            now = self.clock.now()
            while message is not None:
                self._apply(message, now)
                message = self._inbox.get(0)
            decision = decide(self._observe(now), self._policy)
            self._publish(self._state_for(decision.action))
            action, wait = decision.action, 0.0
            if action is Action.START:
                self._start_next(now)
            elif action is Action.TAKE:
                self._take(now)
            elif action in (Action.WAIT, Action.DRAIN):  # until an event, or the policy's time
                wake, longest = decision.wake_at, self.config.max_wait_s
                wait = longest if wake is None else min(max(0.0, wake - now), longest)
            elif action is Action.RETIRE:
                self._retire(now)
            elif action is Action.ABANDON:
                self._abandon(now)
            elif action is Action.EXIT:
                return self._exit()

    def _observe(self, now: float) -> Observation:
        return Observation(
            now=now, last_activity=self._last_activity, slots=self._slots(),
            running=tuple(job.started for job in self._ledger.running.values()),
            stopped=tuple(at for job_id, at in self._stop_asked.items()
                          if job_id in self._ledger.running),
            queued=self._ledger.queued,
            undelivered=self._ledger.undelivered, take_out=self._take_out,
            take_allowed_at=self._pacer.allowed_at, stopping_since=self._stopping_since,
            last_finished=self._last_finished,
        )

    def _slots(self) -> int:
        return 0 if self._exit_code is not None else self.stages.runner.slots

    def _state_for(self, action: Action) -> WorkerState:
        if self.start_failure is not None:
            return WorkerState.STARTUP_FAILED
        if self._stopping_since is not None:
            return WorkerState.DRAINING
        busy = self._ledger.running or self._ledger.queued or self._ledger.undelivered
        return WorkerState.BUSY if busy or action is Action.START else WorkerState.READY

    def _publish(self, state: WorkerState) -> None:
        self._board.snapshot = Snapshot(state, self._ledger.in_flight_ids(),
                                        self._ledger.undelivered, self._last_activity)

    # --- messages from the stages -------------------------------------------------------
    def _apply(self, message: msg.Message, now: float) -> None:
        if isinstance(message, msg.Taken):
            self._taken(message, now)
        elif isinstance(message, msg.ModelDone):
            job = message.running.job
            self._stop_asked.pop(job.id, None)
            fresh = message.running.fresh_worker_asked
            if self._ledger.finish(job.id, message.running):
                self._last_finished = now
                self.stages.storer.submit(Outcome(
                    job, message.output, message.error, model_seconds=message.seconds,
                    streamed=message.streamed, stopped=message.stopped, stop_pod=fresh))
                # MAX_JOBS, MAX_RSS_MB, MAX_VRAM_FRACTION, or ``fresh`` (refresh_worker): drained
                # like a SIGTERM, this result (and any other held) goes first, then exit 7
                self._recycle(self._recycler.job_done(message.running), now)
            if message.device_lost and self._exit_code is None:  # the model stage logged it
                self._lose_model(ExitCode.DEVICE_LOST, "the accelerator is lost", now)
        elif isinstance(message, msg.Delivered):
            self._ledger.delivered(message.job_id)
            self._last_activity = now
        elif isinstance(message, msg.StopJob):
            self._stop_job(message.job_id, now)
        elif isinstance(message, msg.StopWorker):
            self._begin_stop(message.reason, now)

    def _taken(self, taken: msg.Taken, now: float) -> None:
        self._take_out = False
        if taken.error is not None:
            self.metrics.count("take_errors")
            self._pacer.failed(taken.error, now)
            return
        self._pacer.answered(started=taken.started, now=now, empty=not taken.jobs)
        self.stages.runner.refresh_slots(len(self._ledger.running))
        if not taken.jobs:
            if self.config.stop_when_drained and not self._ledger.in_flight_ids():
                self._begin_stop("all local jobs done", now)
            return
        self.metrics.observe("take", now - taken.started)
        self.metrics.count("jobs_taken", len(taken.jobs))
        for job in taken.jobs:
            if not self._ledger.take(job):
                self.metrics.count("duplicate_jobs")
                log.warning("job %s handed out again while this worker still holds it; its "
                            "first copy's result answers it", job.id,
                            extra={"event": "duplicate_job", "job_id": job.id})
        self._recycle(self._recycler.taken(len(taken.jobs)), now)

    def _stop_job(self, job_id: str, now: float) -> None:
        running = self._ledger.running.get(job_id)
        if running is not None:
            log.info("job stop requested", extra={"event": "job_stop", "job_id": job_id})
            self._stop_asked.setdefault(job_id, now)
            running.cancel(admission.CANCELLED_BY_PLATFORM)
            return
        job = self._ledger.cancel_queued(job_id)
        if job is not None:
            self._silence(job)
            return
        self._ledger.remember_stop(job_id)

    def _silence(self, job: Job) -> None:
        """The platform stopped ``job`` (before it ran, or a model ignored the stop): like the
        SDK, post nothing for it."""
        self._stop_asked.pop(job.id, None)
        self._ledger.answered_without_model(job.id)
        self.stages.storer.submit(Outcome(job, stopped=True))

    def _begin_stop(self, reason: str, now: float) -> None:
        if self._stopping_since is not None:
            return
        self._stopping_since = now
        self.stop_reason = reason
        log.info("stopping: %s", reason, extra={"event": "stop_requested"})
        self.stages.poster.retry_now()

    # --- actions ------------------------------------------------------------------------
    def _take(self, now: float) -> None:
        held = bool(self._ledger.running or self._ledger.undelivered)
        room = room_to_take(self._observe(now), self._policy)  # free slots, within the bound
        budget = self._recycler.take_budget()  # MAX_JOBS: never more than that in all
        self._take_out = True
        self.stages.intake.request(job_in_progress=held,
                                   max_jobs=max(1, room if budget is None else min(room, budget)))

    def _start_next(self, now: float) -> None:
        job = self._ledger.next_queued()
        assert job is not None
        if self._ledger.stop_requested_early(job.id):
            self._silence(job)
            return
        refusal = admit(job, marks=self._marks, max_input_bytes=self.config.max_input_bytes)
        if refusal is not None:
            self._answer(job.id, job, refusal)
            return
        running = RunningJob(job, started=now, timeout_s=self._policy.execution_timeout,
                             clock=self.clock, on_progress=self.stages.poster.progress)
        self._ledger.start(running)
        self.stages.runner.submit(running)

    def _answer(self, job_id: str, job: Job, error: str) -> None:
        """Answer a held job with ``error`` without (or no longer) running it."""
        self._ledger.answered_without_model(job_id)
        self.stages.storer.submit(Outcome(job, decided=JobResult.failure(job_id, error)))

    def _retire(self, now: float) -> None:
        log.info("idle for %.0f s: terminating this pod", self._policy.idle_ttl or 0,
                 extra={"event": "idle_ttl_expired"})
        self._retiring = True
        self._begin_stop("idle TTL expired", now)

    def _abandon(self, now: float) -> None:
        """A model ignored its deadline or a job-stop: report its job (a stopped one gets no
        result, as ever), stop, and exit non-zero when drained."""
        grace = self._policy.overrun_grace
        limit = self._policy.execution_timeout + grace
        for running in list(self._ledger.running.values()):
            asked = self._stop_asked.get(running.job_id)
            if running.cancel_reason == admission.CANCELLED_BY_PLATFORM and (
                    now >= running.started + limit or (asked is not None and now >= asked + grace)):
                log.error("job %s was stopped by the platform and the model did not stop; no "
                          "result is posted for it, and the worker exits so the platform "
                          "restarts it", running.job_id,
                          extra={"event": "model_stuck", "job_id": running.job_id})
                self._silence(running.job)
            elif now >= running.started + limit:
                error = str(ExecutionTimeout(round(running.timeout_s * 1000)))
                log.error("job %s: %s, and the model did not stop; reporting it and exiting so "
                          "the platform restarts the worker", running.job_id, error,
                          extra={"event": "model_stuck", "job_id": running.job_id})
                self._answer(running.job_id, running.job, error)
        self._lose_model(ExitCode.MODEL_STUCK, "the model ignored its timeout or a job-stop", now)

    def _say_what_is_left(self) -> None:
        """At exit, what happens to each result not delivered, truly: kept in the outbox, or
        never written down (outputs still being stored, or the disk refused the write)."""
        left = self._ledger.undelivered_ids()
        if not left:
            return
        try:
            kept = {result.job_id for result in self._outbox.pending()}
        except OSError:
            kept = set()
        in_outbox = sum(1 for job_id in left if job_id in kept)
        unwritten = len(left) - in_outbox
        if in_outbox:
            log.warning("shutdown grace over with %d result(s) undelivered; they stay in the "
                        "outbox and are sent at the next start", in_outbox,
                        extra={"event": "exit_with_outbox"})
        if unwritten:
            log.warning("shutdown grace over with %d finished job(s) whose result was not written "
                        "down (outputs still being stored, or the disk refused the write); the "
                        "next start answers each one it finds marked running as failed ('worker "
                        "restarted while running this job')", unwritten,
                        extra={"event": "exit_with_unwritten_results"})

    def _recycle(self, reason: str | None, now: float) -> None:
        """Renew this worker (``reason`` is not None): take nothing more, run and deliver what is
        held, exit 7. A worker already stopping leaves as that stop says."""
        if reason is None or self._recycling is not None or self._stopping_since is not None:
            return
        self._recycling = reason
        log.info("recycling this worker: %s; delivering what it holds, then exiting so the "
                 "platform starts a fresh one", reason, extra={"event": "recycle"})
        self._begin_stop(f"recycling: {reason}", now)

    def _lose_model(self, code: ExitCode, reason: str, now: float) -> None:
        """The model can run nothing more: answer what waits for it, drain, exit with ``code``."""
        self._exit_code = code
        while (job := self._ledger.next_queued()) is not None:
            self._answer(job.id, job, f"job not run: the worker is restarting ({reason})")
        self._begin_stop(reason, now)

    def _exit(self) -> ExitCode:
        self._say_what_is_left()
        if self._exit_code is not None:
            return self._exit_code
        if self._recycling is not None:
            return ExitCode.RECYCLED
        if self._retiring:
            return terminate_pod(self._pod)
        log.info("stopped", extra={"event": "exit", "reason": self.stop_reason})
        return ExitCode.OK
