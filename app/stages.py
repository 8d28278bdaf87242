"""The pieces around the controller: its stages, what it publishes, how the process ends."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from app.heartbeat import Heartbeat
from app.intake import Intake
from app.job_stops import JobStops
from app.model_runner import ModelRunner
from app.posting import Poster
from app.storing import Storer


class ExitCode(enum.IntEnum):
    """How the process ends, and why."""

    OK = 0  # stopped on request (SIGTERM/SIGINT/SIGHUP), idle pod terminated, local jobs done
    JOB_FAILED = 1  # local run only: a job's result was an error
    CONFIG = 2  # a setting is missing or invalid
    MODEL_STUCK = 3  # a job overran its timeout and the model ignored cancellation
    MODEL_LOAD = 4  # the model could not be loaded
    TERMINATE_FAILED = 5  # the idle TTL expired but the pod could not be terminated
    FORCED = 130  # a second signal: stopped at once (results stay in the outbox)


class WorkerState(enum.StrEnum):
    STARTING = "starting"
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


class Board:
    """Where the controller publishes its ``Snapshot`` for other threads to read (one attribute,
    replaced whole: reading it needs no lock)."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()
