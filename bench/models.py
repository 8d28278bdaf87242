"""The benchmark's models and storage for podworker.

``MODEL=bench.models:io_async`` and ``MODEL=bench.models:io_sync`` are the I/O-bound model:
each job waits ``IO_SECONDS`` (1 s), as a call to another service would, and returns its input;
``io_async``'s ``run`` is an ``async def`` (``asyncio.sleep``: a task on podworker's model loop),
``io_sync``'s a plain ``def`` (an interruptible ``Event.wait``: a thread per slot). Both run as
many jobs at once as ``CONCURRENCY`` says.

``MODEL=bench.models:sleepy`` gives a model whose ``run`` waits 200 ms (an interruptible
``Event.wait``, as a GPU step would block) and returns one small PNG ``Artifact``, so the worker's
delivery stage has real storage-port work to do. ``slow_storage`` is a storage whose ``store``
writes the artifact into ``OUTPUT_DIR`` (through podworker's own ``LocalFolderStorage``) and then
waits the rest of 150 ms, as an upload to a bucket would.

The runpod SDK handlers in ``bench/sdk_handler.py`` are their twins (``sleepy`` does the same
two waits, one after the other, on the handler's own thread, which is how an SDK handler
uploads).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from adapters.local.echo_model import TINY_PNG
from adapters.local.storage import LocalFolderStorage
from domain.job import Artifact
from domain.ports import JobContext

IO_SECONDS = 1.0  # the I/O-bound model's wait per job
MODEL_SECONDS = 0.200  # the time one job spends on the model
STORE_SECONDS = 0.150  # the time one upload takes


class SleepyModel:
    """Waits ``seconds`` per job, then returns ``{"image": Artifact, "i": <input i>}``."""

    def __init__(self, seconds: float = MODEL_SECONDS) -> None:
        self.seconds = seconds
        self.runs = 0
        self._pause = threading.Event()  # never set: wait() is an interruptible sleep

    def load(self) -> None:
        """Nothing to load."""

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self.runs += 1
        self._pause.wait(self.seconds)
        ctx.check_cancelled()
        return {"image": Artifact(TINY_PNG), "i": job_input.get("i")}


class SlowStorage:
    """Stores through ``inner`` (a real folder), then waits until ``seconds`` have passed."""

    def __init__(self, inner: Any, seconds: float = STORE_SECONDS) -> None:
        self.inner = inner
        self.seconds = seconds
        self.stored = 0
        self._pause = threading.Event()

    def store(self, job_id: str, index: int, artifact: Artifact) -> str:
        started = time.monotonic()
        reference = str(self.inner.store(job_id, index, artifact))
        self._pause.wait(max(0.0, self.seconds - (time.monotonic() - started)))
        self.stored += 1
        return reference


class IoAsyncModel:
    """``async def run``: awaits ``seconds``, returns the job's input."""

    def __init__(self, seconds: float = IO_SECONDS) -> None:
        self.seconds = seconds

    def load(self) -> None:
        """Nothing to load."""

    async def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        await asyncio.sleep(self.seconds)
        return job_input


class IoSyncModel:
    """Plain ``def run``: blocks ``seconds`` (interruptibly), returns the job's input."""

    def __init__(self, seconds: float = IO_SECONDS) -> None:
        self.seconds = seconds
        self._pause = threading.Event()  # never set: wait() is an interruptible sleep

    def load(self) -> None:
        """Nothing to load."""

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self._pause.wait(self.seconds)
        ctx.check_cancelled()
        return job_input


def io_async(settings: Any = None) -> IoAsyncModel:
    """``MODEL=bench.models:io_async``."""
    return IoAsyncModel()


def io_sync(settings: Any = None) -> IoSyncModel:
    """``MODEL=bench.models:io_sync``."""
    return IoSyncModel()


def sleepy(settings: Any = None) -> SleepyModel:
    """``MODEL=bench.models:sleepy``."""
    return SleepyModel()


def slow_storage(settings: Any = None) -> SlowStorage:
    """The 150 ms storage, writing under ``settings.OUTPUT_DIR``."""
    from pathlib import Path

    root = Path(getattr(settings, "OUTPUT_DIR", None) or "outputs")
    return SlowStorage(LocalFolderStorage(root))
