"""Users' own models at the SDK's reach: several jobs at once (sync and async), a model's own
concurrency(), and generator models that stream their chunks in order before the result."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from app.config import WorkerConfig
from app.stages import ExitCode
from domain.job import Artifact, JobResult
from domain.lifecycle import LifecyclePolicy
from domain.ports import JobContext
from tests.support.harness import make_harness, wait_until


class Gate:
    """A sync model whose jobs all wait at a gate: shows how many run at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.threads: set[str] = set()

    def load(self) -> None:
        self.threads.add(threading.current_thread().name)

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
        self.open.wait(20)
        with self.lock:
            self.running -= 1
        return job_input


def test_a_sync_model_runs_as_many_jobs_at_once_as_it_has_slots(tmp_path: Path) -> None:
    model = Gate()
    h = make_harness(tmp_path, model=model, slots=4).start()
    for n in range(8):
        h.api.submit({"n": n})
    wait_until(lambda: model.running == 4, what="four jobs at once")
    model.open.set()
    assert h.api.wait_for_results(8)
    assert h.stop() is ExitCode.OK
    assert model.most == 4
    assert max(h.api.takes_batch_sizes) >= 2  # free slots are asked for in one take


def test_with_one_slot_load_and_every_job_run_on_the_same_thread(tmp_path: Path) -> None:
    model = Gate()
    model.open.set()
    h = make_harness(tmp_path, model=model).start()
    for n in range(3):
        h.api.submit({"n": n})
    assert h.api.wait_for_results(3)
    h.stop()
    assert model.threads == {"model"} and model.most == 1


class AsyncSleeper:
    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    async def load(self) -> None:
        await asyncio.sleep(0)

    async def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(float(job_input.get("sleep", 0.2)))
        finally:
            self.running -= 1
        return {"slept": job_input.get("sleep", 0.2)}

    def concurrency(self, current: int) -> int:
        return 16


def test_an_async_model_runs_on_one_loop_as_many_jobs_as_its_concurrency_says(
    tmp_path: Path,
) -> None:
    model = AsyncSleeper()
    h = make_harness(tmp_path, model=model).start()
    for n in range(32):
        h.api.submit({"sleep": 0.3}, job_id=f"j{n}")
    assert h.api.wait_for_results(32, timeout=30)
    assert h.stop() is ExitCode.OK
    assert model.most > 1 and model.most <= 16
    assert all(r.output == {"slept": 0.3} for r in h.api.results.values())


def test_the_work_timeout_cancels_an_async_task_and_the_next_job_runs(tmp_path: Path) -> None:
    policy = LifecyclePolicy(idle_ttl=None, execution_timeout=0.2)
    h = make_harness(tmp_path, model=AsyncSleeper(), policy=policy).start()
    h.api.submit({"sleep": 30}, job_id="slow")
    h.api.submit({"sleep": 0.01}, job_id="fast")
    assert h.api.wait_for_results(2, timeout=20)
    h.stop()
    assert h.api.results["slow"].error == "execution timeout after 200 ms"
    assert h.api.results["fast"].ok


def test_a_job_stop_cancels_an_async_task_at_once_and_posts_nothing(tmp_path: Path) -> None:
    model = AsyncSleeper()
    h = make_harness(tmp_path, model=model).start()
    h.api.submit({"sleep": 60}, job_id="long")
    wait_until(lambda: model.running == 1, what="the task to start")
    h.api.request_stop("long")
    wait_until(lambda: model.running == 0, what="the task to be cancelled")
    wait_until(lambda: h.worker.snapshot.in_flight == (), what="the job to be let go")
    assert h.stop() is ExitCode.OK
    assert "long" not in h.api.results


class Streamer:
    def load(self) -> None:
        pass

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Iterator[Any]:
        for n in range(int(job_input["chunks"])):
            if n == job_input.get("fail_at"):
                raise RuntimeError(f"failed at chunk {n}")
            yield {"token": n}
        if job_input.get("image"):
            yield {"image": Artifact(b"\x89PNG fake")}


class AsyncStreamer:
    def load(self) -> None:
        pass

    async def run(self, job_input: dict[str, Any], ctx: JobContext) -> AsyncIterator[Any]:
        for n in range(int(job_input["chunks"])):
            await asyncio.sleep(0)
            yield f"t{n}"


def test_a_generator_models_chunks_arrive_in_order_each_once_before_the_final_result(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path, model=Streamer()).start()
    h.api.submit({"chunks": 5}, job_id="s")
    assert h.api.wait_for_results(1)
    h.stop()
    assert [chunk for job, chunk in h.api.streamed if job == "s"] == [
        {"token": n} for n in range(5)]
    assert h.api.results["s"] == JobResult("s", output=[], streamed=True)
    assert h.api.events.index(("result", "s")) > max(
        i for i, e in enumerate(h.api.events) if e == ("stream", "s"))


def test_with_stream_aggregate_the_final_output_is_the_list_of_chunks(tmp_path: Path) -> None:
    h = make_harness(tmp_path, model=AsyncStreamer(), stream_aggregate=True).start()
    h.api.submit({"chunks": 3}, job_id="a")
    assert h.api.wait_for_results(1)
    h.stop()
    assert h.api.results["a"].output == ["t0", "t1", "t2"]
    assert [c for _, c in h.api.streamed] == ["t0", "t1", "t2"]


def test_an_error_mid_stream_ends_the_job_with_it_after_the_chunks_already_sent(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path, model=Streamer()).start()
    h.api.submit({"chunks": 5, "fail_at": 2}, job_id="f")
    assert h.api.wait_for_results(1)
    h.stop()
    assert [c for _, c in h.api.streamed] == [{"token": 0}, {"token": 1}]
    assert h.api.results["f"].error == "RuntimeError: failed at chunk 2"


def test_artifacts_in_chunks_are_stored_like_outputs(tmp_path: Path) -> None:
    h = make_harness(tmp_path, model=Streamer()).start()
    h.api.submit({"chunks": 1, "image": True}, job_id="img")
    assert h.api.wait_for_results(1)
    h.stop()
    reference = h.api.streamed[-1][1]["image"]
    assert Path(reference).read_bytes() == b"\x89PNG fake"


def test_the_config_carries_concurrency_and_aggregation() -> None:
    config = WorkerConfig(slots=8, stream_aggregate=True)
    assert (config.slots, config.stream_aggregate) == (8, True)
