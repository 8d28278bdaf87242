"""A worker wired to in-memory fakes, run on a thread, with deadline-bounded waits."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.clock import SystemClock
from adapters.local.echo_model import EchoModel
from adapters.local.job_api import InMemoryJobApi
from adapters.local.outbox import InMemoryOutbox
from adapters.local.pod_control import RecordingPodControl
from adapters.local.storage import LocalFolderStorage
from adapters.outbox.journal import FileOutbox
from app.bootstrap import assemble
from app.config import WorkerConfig
from app.metrics import Metrics
from app.stages import ExitCode
from app.worker import Worker
from domain.lifecycle import LifecyclePolicy, RecyclePolicy
from domain.ports import Clock, MemoryGauge, Model, StartHistory, Storage
from domain.scrubbing import Scrubber


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "",
               interval: float = 0.002) -> None:
    """Poll ``condition`` every ``interval`` seconds until true; fail the test after
    ``timeout`` seconds. The short default suits in-process checks; a condition that reads a
    file (a worker's log) polls less often, leaving the CPU to what it waits for."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        pause.wait(interval)


def eventually(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` for up to ``timeout`` seconds; whether it came true (no failure)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(interval)
    return True


@dataclass
class Harness:
    worker: Worker
    api: InMemoryJobApi
    pod: RecordingPodControl
    model: Any
    outbox: Any
    thread: threading.Thread | None = None
    exit_code: list[ExitCode] = field(default_factory=list)

    def start(self) -> Harness:
        def target() -> None:
            self.exit_code.append(self.worker.run())

        self.thread = threading.Thread(target=target, name="worker-under-test", daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float = 10.0) -> ExitCode:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not exit in time"
        return self.exit_code[0]

    def stop(self) -> ExitCode:
        self.worker.request_stop("test over")
        return self.join()


def make_harness(
    tmp_path: Any,
    *,
    model: Model | None = None,
    clock: Clock | None = None,
    policy: LifecyclePolicy | None = None,
    outbox: InMemoryOutbox | FileOutbox | None = None,
    storage: Storage | None = None,
    ping_interval_s: float = 60.0,
    max_input_bytes: int = 1_000_000,
    max_result_bytes: int = 10_000_000,
    secrets: tuple[str, ...] = (),
    poll_timeout: float = 0.3,
    slots: int = 1,
    stream_aggregate: bool = False,
    pod: RecordingPodControl | None = None,
    min_poll_interval_s: float = 0.0,
    api: InMemoryJobApi | None = None,
    recycle: RecyclePolicy | None = None,
    history: StartHistory | None = None,
    memory: MemoryGauge | None = None,
) -> Harness:
    """A worker on in-memory fakes (the job API long-polls ``poll_timeout``), built as bootstrap
    builds it."""
    clock = clock or SystemClock()
    api = api or InMemoryJobApi(clock, poll_timeout=poll_timeout)
    pod = pod or RecordingPodControl()
    model = model or EchoModel()
    outbox = outbox if outbox is not None else InMemoryOutbox()
    policy = policy or LifecyclePolicy(idle_ttl=None, execution_timeout=30.0)
    if policy.shutdown_grace == LifecyclePolicy().shutdown_grace:
        policy = dataclasses.replace(policy, shutdown_grace=5.0)
    config = WorkerConfig(lifecycle=policy, ping_interval_s=ping_interval_s,
                          max_input_bytes=max_input_bytes, max_result_bytes=max_result_bytes,
                          max_wait_s=0.02, slots=slots, stream_aggregate=stream_aggregate,
                          min_poll_interval_s=min_poll_interval_s,
                          recycle=recycle or RecyclePolicy())
    worker = assemble(
        config=config, job_api=api, stop_source=api,
        storage=storage or LocalFolderStorage(tmp_path / "outputs"), pod_control=pod,
        model=model, outbox=outbox, clock=clock, metrics=Metrics(), scrub=Scrubber(secrets),
        history=history, memory=memory,
    )
    return Harness(worker=worker, api=api, pod=pod, model=model, outbox=outbox)
