"""Stop signals at awkward moments (issue 26, items 11 and 12).

A supervisor that repeats SIGTERM must not turn a drain into lost work: only a deliberate second
interrupt (Ctrl-C twice, or SIGQUIT) stops at once. A SIGTERM during start-up (imports, the
outbox's compaction) is logged and ends the process with 0, leaving no temporary file behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from adapters.outbox.journal import FileOutbox, peek
from domain.job import JobResult
from tests.support.fault_kit import Rig, poll_until
from tests.support.worker_process import ROOT

SLOW_IMPORT = '''
import pathlib, time
pathlib.Path({marker!r}).touch()
time.sleep(120)  # an import that takes its time (torch on a cold disk, say)

def build():
    raise AssertionError("never reached")
'''


def test_a_repeated_sigterm_is_ignored_and_the_job_in_flight_is_still_delivered(
    rig: Rig,
) -> None:
    worker = rig.start(SHUTDOWN_GRACE="20000")
    running = rig.submit({"_echo": {"sleep_ms": 6000}})  # still running when the signals come
    rig.wait_taken(running)
    worker.proc.send_signal(signal.SIGTERM)
    worker.wait_for("stop_requested", timeout=10)
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.send_signal(signal.SIGHUP)
    assert worker.wait(timeout=30) == 0
    assert rig.api.results[running] == {"output": {}}
    assert len([e for e in worker.events() if e.get("event") == "stop_signal_ignored"]) == 2
    rig.assert_delivered_once()


def test_ctrl_c_twice_stops_at_once_with_130(rig: Rig) -> None:
    worker = rig.start()
    running = rig.submit({"_echo": {"sleep_ms": 30_000}})
    rig.wait_taken(running)
    worker.proc.send_signal(signal.SIGINT)
    worker.wait_for("stop_requested", timeout=10)
    worker.proc.send_signal(signal.SIGINT)
    assert worker.wait(timeout=10) == 130
    assert running not in rig.api.results


def test_sigquit_stops_at_once_with_130(rig: Rig) -> None:
    worker = rig.start()
    running = rig.submit({"_echo": {"sleep_ms": 30_000}})
    rig.wait_taken(running)
    worker.proc.send_signal(signal.SIGQUIT)
    assert worker.wait(timeout=10) == 130


def test_sigterm_during_a_slow_import_is_logged_and_exits_0_at_once(
    rig: Rig, tmp_path: Path
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    marker = tmp_path / "importing"
    (modules / "slow_model.py").write_text(SLOW_IMPORT.format(marker=str(marker)))
    worker = rig.start(MODEL="slow_model:build", PYTHONPATH=f"{ROOT}:{modules}")
    poll_until(marker.exists, 60, "the model module's import")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    assert worker.saw("stop_requested"), worker.log_path.read_text()
    assert rig.api.requests["take"] == 0


def test_sigterm_during_the_start_up_compaction_exits_0_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    box = FileOutbox(state / "outbox")
    for n in range(20):
        box.put(JobResult.success(f"kept-{n}", {"pad": "k" * 10_000}))
    box.close()
    marker = tmp_path / "compacting"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "STATE_DIR": str(state),
           "WEBHOOK_GET_WORK": "http://127.0.0.1:9/job-take/$ID",
           "WEBHOOK_POST_OUTPUT": "http://127.0.0.1:9/job-done/$RUNPOD_POD_ID/$ID",
           "MODEL": "echo", "LOG_FORMAT": "json", "HOME": str(tmp_path)}
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.slow_compaction", str(marker), "--env-file",
             str(tmp_path / "absent.env"), "run"], cwd=tmp_path, env=env, stdout=out,
            stderr=subprocess.STDOUT)
        try:
            poll_until(marker.exists, 60, "the start-up compaction")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "stopped during start-up (SIGTERM)" in log.read_text()
    assert sorted(p.name for p in (state / "outbox").iterdir()) == [".lock", "journal.jsonl"]
    assert [r.job_id for r in peek(state / "outbox")] == [f"kept-{n}" for n in range(20)]
