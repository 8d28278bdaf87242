"""I/O-bound models for the concurrency tests: each job waits, as a call to another service
would. ``sync_io`` waits on a thread (``def run``), ``async_io`` on the event loop
(``async def run``); the wait is ``{"wait_s": s}`` in the job's input, 1 s by default."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from domain.ports import JobContext


class SyncIo:
    def __init__(self) -> None:
        self._pause = threading.Event()  # never set: an interruptible wait

    def load(self) -> None:
        pass

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self._pause.wait(float(job_input.get("wait_s", 1.0)))
        ctx.check_cancelled()
        return {"n": job_input.get("n")}


class AsyncIo:
    def load(self) -> None:
        pass

    async def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        await asyncio.sleep(float(job_input.get("wait_s", 1.0)))
        return {"n": job_input.get("n")}


def sync_io(settings: object) -> SyncIo:
    return SyncIo()


def async_io(settings: object) -> AsyncIo:
    return AsyncIo()
