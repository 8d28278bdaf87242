"""The pieces around the controller: its stages, what it publishes, how the process ends."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from app.heartbeat import Heartbeat
from app.intake import Intake
from app.job_stops import JobStops
from app.model_runner import ModelRunner
from app.posting import Poster
from app.storing import Storer
from domain.errors import PermanentError, TransientError
from domain.outputs import describe_error
from domain.ports import PodControl

log = logging.getLogger("podworker.worker")


class ExitCode(enum.IntEnum):
    """How the process ends, and why."""

    OK = 0  # stopped on request (SIGTERM/SIGINT/SIGHUP), idle pod terminated, local jobs done
    JOB_FAILED = 1  # local run only: a job's result was an error
    CONFIG = 2  # a setting is missing or invalid
    MODEL_STUCK = 3  # a job overran its timeout and the model ignored cancellation
    MODEL_LOAD = 4  # the model could not be loaded: one job told why, then exit
    TERMINATE_FAILED = 5  # the idle TTL expired but the pod could not be terminated
    DEVICE_LOST = 6  # the accelerator became unusable: delivered what it held, restart the pod
    RECYCLED = 7  # renewing itself (MAX_JOBS, MAX_RSS_MB, MAX_VRAM_FRACTION, or the model asked)
    STARTUP_TIMEOUT = 8  # the start-up overran STARTUP_TIMEOUT: one job told why, then exit
    FORCED = 130  # a second signal: stopped at once (results stay in the outbox)


class WorkerState(enum.StrEnum):
    STARTING = "starting"
    STARTUP_FAILED = "startup_failed"  # telling one job why, then exiting
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Snapshot:
    """What other threads may read of the controller's books, published once per pass."""

    state: WorkerState = WorkerState.STARTING
    in_flight: tuple[str, ...] = ()
    undelivered: int = 0
    last_activity: float = 0.0


@dataclass
class Stages:
    """The threads around the controller, built by ``app.bootstrap``."""

    intake: Intake
    runner: ModelRunner
    storer: Storer
    poster: Poster
    heartbeat: Heartbeat
    job_stops: JobStops | None = None

    def start_support(self) -> None:
        """Delivery and heartbeat first (results kept from an earlier run go out at once), then
        the model thread, which loads the model."""
        self.poster.start()
        self.storer.start()
        self.heartbeat.start()
        self.runner.start()

    def start_intake(self) -> None:
        """Once the model is loaded: taking jobs, and listening for job-stop requests."""
        self.intake.start()
        if self.job_stops is not None:
            self.job_stops.start()

    def stop(self) -> None:
        """End every stage's thread (the store and post stages finish what they hold first)."""
        self.heartbeat.stop()
        self.intake.stop()
        if self.job_stops is not None:
            self.job_stops.stop()
        self.runner.stop()
        self.storer.stop()
        self.poster.stop()


class Board:
    """Where the controller publishes its ``Snapshot`` for other threads to read (one attribute,
    replaced whole: reading it needs no lock)."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()


def terminate_pod(pod_control: PodControl) -> ExitCode:
    """The end of an idle pod's life: delete it (it stops billing). ``OK`` or
    ``TERMINATE_FAILED``; the process exits either way."""
    try:
        pod_control.terminate()
    except (TransientError, PermanentError) as exc:
        log.error("pod termination failed: %s; exiting anyway", describe_error(exc),
                  extra={"event": "terminate_failed"})
        return ExitCode.TERMINATE_FAILED
    except Exception as exc:
        log.exception("pod termination failed unexpectedly: %s", type(exc).__name__)
        return ExitCode.TERMINATE_FAILED
    log.info("pod terminated", extra={"event": "pod_terminated"})
    return ExitCode.OK
