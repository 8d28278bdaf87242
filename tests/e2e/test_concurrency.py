"""Many jobs at once in the real worker process: 128 one-second jobs at CONCURRENCY=32, sync and
async, every one delivered once; a SIGKILL with 32 jobs in flight loses none and doubles none."""

from __future__ import annotations

import time

import pytest

from tests.support.fault_kit import Rig, poll_until

JOBS = 128
MODELS = {"sync": "tests.support.io_models:sync_io", "async": "tests.support.io_models:async_io"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_128_one_second_jobs_at_concurrency_32_are_all_delivered_once(
    rig: Rig, kind: str
) -> None:
    worker = rig.start(MODEL=MODELS[kind], CONCURRENCY="32")
    jobs = [rig.submit({"n": n}) for n in range(JOBS)]
    started = time.monotonic()
    poll_until(lambda: len(rig.api.results) == JOBS, 120, f"{JOBS} results")
    elapsed = time.monotonic() - started
    print(f"{kind}: {JOBS} one-second jobs at concurrency 32 in {elapsed:.1f} s "
          f"({JOBS / elapsed:.1f} jobs/s; the benchmark measures this on a quiet machine)")
    assert all(rig.api.results[j] == {"output": {"n": n}} for n, j in enumerate(jobs))
    assert elapsed < JOBS  # far faster than one at a time, however loaded the machine
    assert worker.terminate() == 0
    rig.assert_delivered_once()


@pytest.mark.slow
def test_sigkill_with_32_jobs_in_flight_then_restart_reports_each_once(rig: Rig) -> None:
    worker = rig.start(MODEL=MODELS["sync"], CONCURRENCY="32")
    quick = [rig.submit({"n": n, "wait_s": 0.05}) for n in range(8)]
    poll_until(lambda: all(j in rig.api.results for j in quick), 60, "the quick jobs")
    slow = [rig.submit({"n": n, "wait_s": 120}) for n in range(32)]
    poll_until(lambda: all(j in rig.api.taken for j in slow), 60, "32 jobs in flight")
    poll_until(lambda: len(rig.running_marks()) == 32, 60, "32 running marks")
    worker.kill()
    restarted = rig.start("restarted", MODEL=MODELS["sync"], CONCURRENCY="32")
    poll_until(lambda: all(j in rig.api.results for j in slow), 60, "every job reported")
    for job in slow:
        assert "worker restarted" in str(rig.api.results[job].get("error"))
    assert all(rig.api.results[j] == {"output": {"n": n}} for n, j in enumerate(quick))
    assert restarted.terminate() == 0
    rig.assert_delivered_once()
