"""The Redis password stays secret: no piece of six characters of it in the worker's log (at
DEBUG, redis-py's own lines included), in the doctor's table, or in a job's record, whether it
is given in ``REDIS_PASSWORD`` or inside ``JOB_QUEUE``'s URL, right or wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamqueue import layout
from streamqueue.client import JobQueue
from tests.support.leak_check import pieces
from tests.support.redis_queue_kit import redis_worker_env
from tests.support.redis_server import RedisServerFactory
from tests.support.worker_process import ROOT, WorkerProcess

PASSWORD = "rdsPw7Kq2Zx9Lm4Tn8Vb3Hc6"
WRONG = "wrgPw5Jd8Fs1Qa7Ye4Uo2Ir9"


def assert_no_piece(where: str, text: str) -> None:
    for secret in (PASSWORD, WRONG):
        found = sorted(p for p in pieces(secret) if p in text)
        assert not found, f"pieces of a Redis password in {where}: {found}"


@pytest.mark.timeout(360)  # two workers and the doctor (which imports torch), loaded machine
def test_no_piece_of_the_redis_password_leaves_the_worker_right_or_wrong(
    redis_server_factory: RedisServerFactory, redis_queue: str, tmp_path: Path
) -> None:
    server = redis_server_factory(password=PASSWORD)
    client = JobQueue.from_url(server.url, redis_queue, password=PASSWORD)
    try:
        client.submit({"note": "hello"}, "secret-job")
        in_url = server.url.replace("redis://", f"redis://:{PASSWORD}@")
        env = redis_worker_env(server, redis_queue, tmp_path, "right", DEBUG="true",
                               JOB_QUEUE=in_url)
        env.pop("REDIS_PASSWORD")
        right = WorkerProcess(env, tmp_path, "right")
        try:
            assert client.wait("secret-job", timeout_s=60).status == layout.COMPLETED
            assert right.terminate() == 0
        finally:
            right.close()
        wrong_env = redis_worker_env(server, redis_queue, tmp_path, "wrong", DEBUG="true",
                                     REDIS_PASSWORD=WRONG)
        wrong = WorkerProcess(wrong_env, tmp_path, "wrong")
        try:
            wrong.wait_for("take_failed", timeout=60)
            assert wrong.terminate() == 0
        finally:
            wrong.close()
        failed = next(e for e in wrong.events() if e.get("event") == "take_failed")
        assert "REDIS_PASSWORD" in failed["message"]
        doctor = subprocess.run([sys.executable, "-m", "app", "doctor"], cwd=tmp_path,
                                env=wrong_env | {"PYTHONPATH": str(ROOT)},
                                capture_output=True, text=True, timeout=120)
        assert "job queue" in doctor.stdout and doctor.returncode == 1
        record = server.client().hgetall(layout.Layout(redis_queue).job("secret-job"))
        for where, text in (("the worker's log", right.log_path.read_text()),
                            ("the failing worker's log", wrong.log_path.read_text()),
                            ("the doctor's table", doctor.stdout + doctor.stderr),
                            ("the job's record", repr(record))):
            assert_no_piece(where, text)
    finally:
        client.close()
