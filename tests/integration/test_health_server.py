"""The health port answers while the worker processes jobs, and its counters move."""

from __future__ import annotations

from pathlib import Path

import requests

from app.health import start_health_server
from tests.support.harness import make_harness, wait_until


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_health_and_metrics_answer_while_jobs_run_and_the_counters_move(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    server = start_health_server(h.worker, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert requests.get(f"{base}/health", timeout=5).json()["state"] == "starting"
        h.start()
        wait_until(lambda: requests.get(f"{base}/health", timeout=5).status_code == 200)
        h.api.submit({"_echo": {"sleep_ms": 300}}, job_id="slow")
        wait_until(lambda: requests.get(f"{base}/health", timeout=5).json()["jobs_in_flight"] == 1,
                   what="the running job to show")
        busy = requests.get(f"{base}/health", timeout=5)
        assert busy.status_code == 200 and busy.json()["state"] == "busy"
        for n in range(3):
            h.api.submit({"_echo": {"fail": "x"}} if n == 0 else {}, job_id=f"j{n}")
        assert h.api.wait_for_results(4)
        # The posting thread counts a job done before the loop hears it was delivered (and
        # turns the gauge and the state): wait for both, then read once.
        def settled() -> bool:
            text = requests.get(f"{base}/metrics", timeout=5).text
            return (metric(text, "podworker_jobs_done_total") == 3
                    and metric(text, "podworker_undelivered_results") == 0
                    and 'podworker_state{state="ready"} 1.0' in text)

        wait_until(settled, what="3 jobs done, none undelivered, the worker ready")
        text = requests.get(f"{base}/metrics", timeout=5).text
        assert metric(text, "podworker_jobs_failed_total") == 1
        assert metric(text, "podworker_jobs_taken_total") == 4
        assert metric(text, 'podworker_stage_seconds_count{stage="post"}') == 4
        h.worker.request_stop("test over")
        h.join()
        stopped = requests.get(f"{base}/health", timeout=5)
        assert stopped.status_code == 503 and stopped.json()["state"] == "stopped"
    finally:
        server.stop()
