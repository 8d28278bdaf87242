"""The thread map in ``app/worker.py``'s docstring matches the threads a running worker has."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import app.worker
from tests.support.harness import make_harness, wait_until

DRAWN = re.compile(r"[├└]─ ([a-z][a-z0-9-]*)")


def drawn_threads() -> set[str]:
    return set(DRAWN.findall(app.worker.__doc__ or ""))


def test_the_map_draws_every_stage() -> None:
    assert {"intake", "model", "store", "post", "heartbeat", "job-stops", "http-deadlines",
            "health", "model-device", "s3-upload"} <= drawn_threads()


def test_every_thread_a_running_worker_starts_is_on_the_map(tmp_path: Path) -> None:
    before = {t.ident for t in threading.enumerate()}
    h = make_harness(tmp_path, ping_interval_s=0.01).start()
    h.api.submit({"_echo": {"sleep_ms": 300, "progress": 2}}, job_id="busy")
    wait_until(lambda: h.model.runs == 1, what="the job to run")
    started = {t.name for t in threading.enumerate() if t.ident not in before}
    assert h.api.wait_for_results(1)
    h.stop()
    started.discard("worker-under-test")  # the test's own stand-in for the main thread
    assert started, "no thread started?"
    assert {"intake", "model", "store", "post", "heartbeat", "job-stops"} <= started
    unmapped = {name for name in started
                if name not in drawn_threads() and re.sub(r"-(\d+|loop)$", "", name) != "model"}
    assert unmapped == set(), f"threads not drawn in app/worker.py: {unmapped}"
