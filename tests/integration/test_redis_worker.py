"""The whole worker (``build_worker`` from settings, ``JOB_QUEUE=redis://...``) on a real Redis,
on a thread: jobs, progress, streams and cancellations reach the client; an idle worker exits 0
and deletes nothing; the doctor and the ``queue`` command line speak to the same queue.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.kubernetes.pod_control import JobCompletesPodControl
from adapters.redis.job_api import RedisJobApi
from app.bootstrap import build_worker
from app.cli import main as cli_main
from app.doctor import FAIL, OK, check_job_api
from app.settings import Settings, load_settings
from app.stages import ExitCode
from app.worker import Worker
from domain.errors import ConfigurationError
from streamqueue import layout
from streamqueue.client import JobQueue
from tests.support.harness import wait_until
from tests.support.redis_queue_kit import QueueApis
from tests.support.redis_server import RedisServer, RedisServerFactory
from tests.support.worker_process import ROOT


def queue_settings(server: RedisServer, queue: str, state: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "JOB_QUEUE": server.url, "JOB_QUEUE_NAME": queue, "MODEL": "echo",
        "STATE_DIR": state, "OUTPUT_DIR": state / "outputs", "TERMINATE_IDLE_TIME": 0,
        "PING_INTERVAL": 100, "JOB_LEASE": 1000, "SHUTDOWN_GRACE": 5000,
        "RUNPOD_POD_ID": "it-worker", "CONCURRENCY": 2,
    }
    values.update(extra)
    return load_settings(env_file=None, **values)


@dataclass
class Running:
    worker: Worker
    thread: threading.Thread
    codes: list[ExitCode]

    def stop(self, timeout: float = 30.0) -> ExitCode:
        self.worker.request_stop("test over")
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> ExitCode:
        self.thread.join(timeout)
        assert self.codes, "the worker did not stop"
        return self.codes[0]


@pytest.fixture
def start_worker() -> Iterator[Any]:
    running: list[Running] = []

    def start(settings: Settings) -> Running:
        worker = build_worker(settings)
        codes: list[ExitCode] = []
        thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
        thread.start()
        run = Running(worker, thread, codes)
        running.append(run)
        return run

    yield start
    for run in running:
        if run.thread.is_alive():
            run.stop()


def test_a_worker_on_a_redis_queue_answers_every_job_once_with_progress_and_streams(
    redis_server: RedisServer, redis_queue: str, queue_client: JobQueue, tmp_path: Path,
    start_worker: Any,
) -> None:
    jobs: list[tuple[str, dict[str, Any]]] = [(f"plain-{i}", {"i": i}) for i in range(20)]
    jobs += [("progress", {"_echo": {"progress": 3}}), ("streamed", {"_echo": {"stream": 4}}),
             ("fails", {"_echo": {"fail": "model said no"}})]
    queue_client.submit_many(jobs)
    run = start_worker(queue_settings(redis_server, redis_queue, tmp_path))
    assert isinstance(run.worker.stages.intake._api, RedisJobApi)
    states = queue_client.wait_all([job_id for job_id, _ in jobs], timeout_s=60)
    assert all(states[f"plain-{i}"].output == {"i": i} for i in range(20))
    assert queue_client.progress("progress") == {"step": 3, "of": 3}
    assert [c.output for c in queue_client.stream("streamed", timeout_s=10)] == [
        {"i": n, "text": f"chunk-{n}"} for n in range(4)]
    assert states["fails"].status == layout.FAILED
    assert states["fails"].error == "RuntimeError: model said no"
    health = queue_client.health()
    assert (health["pending"], health["lag"], health["stats"]) == (0, 0, {})
    assert run.stop() is ExitCode.OK


def test_a_running_job_cancelled_by_the_client_is_stopped_and_the_worker_goes_on(
    redis_server: RedisServer, redis_queue: str, queue_client: JobQueue, tmp_path: Path,
    start_worker: Any,
) -> None:
    queue_client.submit({"_echo": {"sleep_ms": 60_000}}, "slow")
    run = start_worker(queue_settings(redis_server, redis_queue, tmp_path, CONCURRENCY=1))
    wait_until(lambda: queue_client.status("slow").status == layout.IN_PROGRESS,
               timeout=30, what="the slow job started")
    assert queue_client.cancel("slow") == layout.CANCELLED
    queue_client.submit({"after": True}, "next")
    assert queue_client.wait("next", timeout_s=30).output == {"after": True}  # slot freed
    assert queue_client.status("slow").status == layout.CANCELLED
    assert queue_client.health()["pending"] == 0
    assert run.stop() is ExitCode.OK


def test_an_idle_worker_exits_0_and_deletes_no_pod(
    redis_server: RedisServer, redis_queue: str, queue_client: JobQueue, tmp_path: Path,
    start_worker: Any,
) -> None:
    queue_client.submit({"i": 1}, "only")
    run = start_worker(queue_settings(redis_server, redis_queue, tmp_path,
                                      TERMINATE_IDLE_TIME=300))
    assert run.wait(30) is ExitCode.OK
    assert queue_client.status("only").status == layout.COMPLETED
    pod = run.worker._pod
    assert isinstance(pod, JobCompletesPodControl) and pod.terminated == 1
    assert run.worker.stop_reason == "idle TTL expired"


def test_an_idle_worker_takes_over_a_job_a_dead_worker_left_before_it_retires(
    redis_server: RedisServer, redis_queue: str, queue_client: JobQueue, tmp_path: Path,
    queue_apis: QueueApis, start_worker: Any,
) -> None:
    queue_client.submit({"left": "behind"}, "orphan")
    dead = queue_apis("dead", lease_s=4.0)
    assert [j.id for j in dead.take(job_in_progress=False)] == ["orphan"]  # then it dies
    # idle for 2.4 s: by then the orphan went unrenewed for over half its 4 s lease (windows
    # of seconds, so a loaded machine's scheduling delays do not decide the outcome)
    run = start_worker(queue_settings(redis_server, redis_queue, tmp_path, JOB_LEASE=4000,
                                      TERMINATE_IDLE_TIME=2400))
    assert run.wait(30) is ExitCode.OK  # it retired only after taking the orphan over
    state = queue_client.status("orphan")
    assert (state.status, state.output, state.attempt) == (layout.COMPLETED,
                                                            {"left": "behind"}, 2)


def test_a_lease_shorter_than_three_heartbeats_is_refused_at_start(
    redis_server: RedisServer, redis_queue: str, tmp_path: Path
) -> None:
    settings = queue_settings(redis_server, redis_queue, tmp_path, JOB_LEASE=250)
    with pytest.raises(ConfigurationError, match=r"JOB_LEASE: must be at least 3 x "
                                                 r"PING_INTERVAL \(300 ms\)"):
        build_worker(settings)


def test_the_doctor_checks_the_queue_and_says_what_to_fix_when_redis_is_not_there(
    redis_server: RedisServer, redis_queue: str, queue_client: JobQueue, tmp_path: Path
) -> None:
    queue_client.submit({"i": 1}, "waiting")
    good = check_job_api(queue_settings(redis_server, redis_queue, tmp_path))
    assert (good.name, good.status) == ("job queue", OK)
    assert "1 job(s) waiting" in good.detail
    bad = check_job_api(load_settings(env_file=None, JOB_QUEUE="redis://127.0.0.1:1/0"))
    assert bad.status == FAIL and "JOB_QUEUE" in bad.fix


def test_the_queue_command_line_submits_follows_and_cancels(
    redis_server: RedisServer, redis_queue: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], start_worker: Any,
) -> None:
    monkeypatch.setenv("JOB_QUEUE", redis_server.url)
    monkeypatch.setenv("JOB_QUEUE_NAME", redis_queue)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout

    def queue(*argv: str) -> tuple[int, list[Any]]:
        code = cli_main(["queue", *argv])
        lines = capsys.readouterr().out.splitlines()
        return code, [json.loads(line) for line in lines]

    assert queue("submit", "--id", "a", '{"prompt": "x"}') == (0, [{"id": "a",
                                                                  "status": "IN_QUEUE"}])
    (tmp_path / "jobs.json").write_text(json.dumps([{"id": "b", "input": {"n": 2}},
                                                   {"id": "c", "input": {"n": 3}}]))
    code, lines = queue("submit-file", str(tmp_path / "jobs.json"))
    assert (code, [line["id"] for line in lines]) == (0, ["b", "c"])
    assert queue("cancel", "c") == (0, [{"id": "c", "status": "CANCELLED"}])
    assert queue("wait", "c")[0] == 1  # cancelled: not a success
    start_worker(queue_settings(redis_server, redis_queue, tmp_path / "state"))
    code, (done,) = queue("wait", "a", "--timeout", "30")
    assert (code, done["status"], done["output"]) == (0, "COMPLETED", {"prompt": "x"})
    assert {"delayTime", "executionTime", "workerId"} <= set(done)
    code, (health,) = queue("health")
    assert code == 0 and health["queue"] == redis_queue
    assert queue("status", "nope")[0] == 1
    assert queue("submit", "[1]")[0] == 2
    monkeypatch.setenv("JOB_QUEUE", "redis://127.0.0.1:1/0")
    assert queue("status", "a")[0] == 3


def test_the_readmes_api_server_example_runs_against_a_worker(
    redis_server_factory: RedisServerFactory, tmp_path: Path, start_worker: Any
) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(# api_server\.py.*?)```", readme, re.S)
    assert block is not None, "the README's API server example is gone"
    (tmp_path / "api_server.py").write_text(block.group(1))
    server = redis_server_factory()  # its own Redis: the example uses the default queue name
    start_worker(queue_settings(server, layout.DEFAULT_QUEUE, tmp_path / "state"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_", "REDIS_"))}
    env.update({"PYTHONPATH": str(ROOT), "JOB_QUEUE": server.url})
    done = subprocess.run([sys.executable, "api_server.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] in (layout.IN_QUEUE, layout.IN_PROGRESS, layout.COMPLETED)
    assert "'output': {'prompt': 'a lighthouse'}" in lines[1]
    assert "'status': 'COMPLETED'" in lines[1]
