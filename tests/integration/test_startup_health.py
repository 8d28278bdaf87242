"""``/health`` and ``/metrics`` read from a running worker in each start-up phase, once it is
ready, and after a failed start."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from adapters.local.start_history import InMemoryStartHistory
from app.health import start_health_server
from app.stages import ExitCode, WorkerState
from domain.lifecycle import FailedStarts, LifecyclePolicy
from tests.support.harness import make_harness, wait_until
from tests.support.startup_models import PhasedModel


def gauge(text: str, name: str, phase: str) -> float | None:
    match = re.search(rf'^{name}{{phase="{phase}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_each_start_up_phase_shows_in_health_and_metrics_until_the_worker_is_ready(
    tmp_path: Path,
) -> None:
    model = PhasedModel()
    previous = FailedStarts(2, "weights", "OSError: weights not found")
    h = make_harness(tmp_path, model=model, history=InMemoryStartHistory(previous))
    server = start_health_server(h.worker, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        h.start()
        seen: list[str] = []
        for phase in model.phases:
            assert model.entered[phase].wait(30), phase
            health = requests.get(f"{base}/health", timeout=5)
            body = health.json()
            assert health.status_code == 503
            assert body["state"] == "starting"
            assert body["phase"] == phase
            assert 0 <= body["phase_seconds"] <= body["startup_seconds"]
            assert body["failed_starts_in_a_row"] == 2
            text = requests.get(f"{base}/metrics", timeout=5).text
            assert gauge(text, "podworker_startup_phase", phase) == 1.0
            assert gauge(text, "podworker_startup_phase_seconds", phase) is not None
            for earlier in seen:  # finished phases keep their seconds
                assert gauge(text, "podworker_startup_phase", earlier) is None
                assert gauge(text, "podworker_startup_phase_seconds", earlier) is not None
            assert 'podworker_state{state="starting"} 1.0' in text
            assert "podworker_failed_starts_in_a_row 2.0" in text
            seen.append(phase)
            model.release(phase)
        wait_until(lambda: requests.get(f"{base}/health", timeout=5).status_code == 200,
                   timeout=30, what="ready")
        ready = requests.get(f"{base}/health", timeout=5).json()
        assert ready["state"] == "ready" and "phase" not in ready
        text = requests.get(f"{base}/metrics", timeout=5).text
        assert [gauge(text, "podworker_startup_phase_seconds", p) is not None
                for p in ("import", "weights", "device", "warmup")] == [True] * 4
        assert "podworker_startup_phase{" not in text  # no phase runs any more
        assert "podworker_process_resident_bytes" in text
        h.stop()
    finally:
        server.stop()


def test_after_a_failed_start_health_names_the_phase_and_the_error(tmp_path: Path) -> None:
    model = PhasedModel()  # never released: the deadline ends it in "import"
    policy = LifecyclePolicy(idle_ttl=None, execution_timeout=30.0, startup_timeout=0.5)
    h = make_harness(tmp_path, model=model, policy=policy)
    h.api.fail_posts = 10**6  # the failed job's result is never accepted: the state stays
    h.api.submit({}, job_id="told")
    server = start_health_server(h.worker, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        h.start()
        wait_until(lambda: h.worker.snapshot.state is WorkerState.STARTUP_FAILED, timeout=30,
                   what="startup_failed")
        health = requests.get(f"{base}/health", timeout=5)
        assert health.status_code == 503
        body = health.json()
        assert body["state"] == "startup_failed"
        assert body["phase"] == "import"
        assert "STARTUP_TIMEOUT" in body["error"]
        text = requests.get(f"{base}/metrics", timeout=5).text
        assert 'podworker_state{state="startup_failed"} 1.0' in text
        h.worker.request_stop("test over")
        assert h.join(30) is ExitCode.STARTUP_TIMEOUT
    finally:
        server.stop()
        for phase in model.phases:
            model.release(phase)
