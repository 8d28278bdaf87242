"""What the stages tell the controller: small frozen messages on one inbox.

The controller's thread alone owns the worker's books (``domain.ledger.Ledger``); every other
thread reports what happened by putting one of these on the :class:`Inbox` and never touches a
shared field. The controller drains the inbox at the top of each pass.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

from domain.execution import RunningJob
from domain.job import Job


@dataclass(frozen=True)
class Taken:
    """A take finished: its jobs, or the error that ended it. ``started`` is its clock time."""

    jobs: list[Job]
    error: BaseException | None
    started: float


@dataclass(frozen=True)
class ModelLoaded:
    """``model.load()`` returned (``error`` is None) or raised (``error`` describes it)."""

    error: str | None
    seconds: float


@dataclass(frozen=True)
class ModelDone:
    """The model finished ``running``: its raw output, or the (described) error;
    ``device_lost`` when the accelerator can run nothing more (``domain.errors.DeviceLost``).
    Streamed chunks were handed to the store stage before this message was sent."""

    running: RunningJob
    output: Any = None
    error: str | None = None
    seconds: float = 0.0
    device_lost: bool = False
    streamed: bool = False  # the output was streamed in chunks before this
    stopped: bool = False  # it ended because the platform stopped it (job-stop)


@dataclass(frozen=True)
class Delivered:
    """The job API accepted the result of ``job_id`` (or refused it for good)."""

    job_id: str
    ok: bool


@dataclass(frozen=True)
class StopJob:
    """The platform asked to stop ``job_id`` (job-stop)."""

    job_id: str


@dataclass(frozen=True)
class StopWorker:
    """Stop taking jobs, finish what is held, deliver, exit."""

    reason: str


Message = Taken | ModelLoaded | ModelDone | Delivered | StopJob | StopWorker


class Inbox:
    """Many writers, one reader (the controller)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def put(self, message: Message) -> None:
        self._queue.put(message)

    def get(self, timeout: float | None) -> Message | None:
        """The next message, waiting up to ``timeout`` seconds (None: none came)."""
        try:
            if timeout is not None and timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
