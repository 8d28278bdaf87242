"""A job API that goes away for 30 s: the worker backs off (few requests), then recovers alone.

Run at a tenth of real time (every retry schedule scaled by ``TIME_SCALE``): the outage is 3 s
and the take backoff reaches its cap (0.5 s instead of 5 s) just as often, so the request count
measures the same thing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import requests

from fakeplatform import FakeJobApiServer
from tests.support.harness import wait_until
from tests.support.ports import free_port
from tests.support.worker_process import JOB_API_KEY, WorkerProcess, worker_env

TIME_SCALE = 0.1
OUTAGE_S = 30.0 * TIME_SCALE


def take_errors(health_port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{health_port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("podworker_take_errors_total "):
            return float(line.split()[1])
    raise AssertionError("no take_errors metric")


def test_a_30_second_outage_costs_under_100_requests_and_the_worker_recovers_by_itself(
    tmp_path: Path,
) -> None:
    port, health = free_port(), free_port()
    api = FakeJobApiServer(port=port, long_poll_s=0.5, api_key=JOB_API_KEY).start()
    env = worker_env(api, tmp_path / "state", HEALTH_PORT=str(health), HEALTH_HOST="127.0.0.1",
                     PING_INTERVAL="10000", RUNPOD_PING_INTERVAL="10000")
    worker = WorkerProcess(env, tmp_path, time_scale=TIME_SCALE)
    try:
        api.submit({"before": True})
        assert api.wait_for_results(1, timeout=30)
        api.stop()  # connection refused from now on
        before = take_errors(health)
        threading.Event().wait(OUTAGE_S)  # the outage itself is what is being measured
        during = take_errors(health) - before
        assert worker.proc.poll() is None, "the worker must stay up through the outage"
        assert 1 <= during < 100, f"{during} take attempts in {OUTAGE_S} s"

        api = FakeJobApiServer(port=port, long_poll_s=0.5, api_key=JOB_API_KEY).start()
        back = time.monotonic()
        job = api.submit({"after": True})
        assert api.wait_for_results(1, timeout=15)
        recovered_in = time.monotonic() - back
        # by itself, without waiting out a long backoff; how fast is printed, not budgeted
        assert recovered_in < 20.0, f"took {recovered_in:.1f} s to pick up the next job"
        print(f"take attempts during a {OUTAGE_S:.0f} s outage: {during:.0f}; next job done "
              f"{recovered_in:.2f} s after the API came back")
        assert api.status(job)["status"] == "COMPLETED"  # type: ignore[index]
        wait_until(lambda: worker.saw("api_recovered"), what="the recovery log line")
        warnings = [e for e in worker.events() if e.get("event") == "take_failed"]
        assert 1 <= len(warnings) <= 3, "a warning now and then, not a line per try"
        assert worker.terminate() == 0
    finally:
        worker.close()
        api.stop()
