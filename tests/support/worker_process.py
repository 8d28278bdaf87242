"""The real worker process (``python -m app run``) against servers on loopback, for e2e tests.

Logs are JSON lines in a file; tests wait on log events and on the fake API's state, never on
sleeps. ``kill()`` is SIGKILL (a crash); ``terminate()`` is SIGTERM (a graceful stop).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from fakeplatform import FakeJobApiServer
from tests.support.harness import wait_until

ROOT = Path(__file__).resolve().parents[2]
JOB_API_KEY = "e2e-job-api-key-51f0c2aa"
RUNPOD_KEY = "e2e-runpod-api-key-9b7d44e1"


def worker_env(
    api: FakeJobApiServer, state_dir: Path, *, runpod_names: bool = True, **extra: str
) -> dict[str, str]:
    """Settings for a worker on ``api``: today's RUNPOD_* names, or the seed's names."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "WEBHOOK_", "BUCKET_", "AI_API_KEY", "MODEL"))}
    names = (
        ("RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_WEBHOOK_POST_OUTPUT", "RUNPOD_WEBHOOK_PING",
         "RUNPOD_WEBHOOK_POST_STREAM", "RUNPOD_AI_API_KEY", "RUNPOD_PING_INTERVAL")
        if runpod_names
        else ("WEBHOOK_GET_WORK", "WEBHOOK_POST_OUTPUT", "WEBHOOK_PING", "WEBHOOK_POST_STREAM",
              "AI_API_KEY", "PING_INTERVAL")
    )
    values = (api.take_url, api.result_url, api.ping_url, api.stream_url, JOB_API_KEY, "100")
    env.update(dict(zip(names, values, strict=True)))
    env.update({
        "PYTHONPATH": str(ROOT),
        "RUNPOD_POD_ID": "e2e-pod",
        "MODEL": "echo",
        "STATE_DIR": str(state_dir),
        "OUTPUT_DIR": str(state_dir / "outputs"),
        "LOG_FORMAT": "json",
        "TERMINATE_IDLE_TIME": "0",
        "SHUTDOWN_GRACE": "5000",
    })
    env.update(extra)
    return env


class WorkerProcess:
    """One ``python -m app run`` subprocess with its log in ``log_path``."""

    def __init__(
        self, env: dict[str, str], cwd: Path, name: str = "worker",
        *, time_scale: float | None = None,
    ) -> None:
        """``time_scale`` scales every retry schedule (``tests.support.scaled_worker``)."""
        self.log_path = cwd / f"{name}.log"
        self._log = self.log_path.open("w")
        command = ["-m", "app", "run"] if time_scale is None else [
            "-m", "tests.support.scaled_worker", str(time_scale), "run"]
        self.proc = subprocess.Popen(
            [sys.executable, *command], cwd=cwd, env=env,
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def events(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                entries.append({"message": line, "event": "raw"})
        return entries

    def saw(self, event: str, **fields: Any) -> bool:
        return any(
            e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            for e in self.events()
        )

    def wait_for(self, event: str, timeout: float = 30.0, **fields: Any) -> None:
        wait_until(lambda: self.saw(event, **fields) or self.proc.poll() is not None,
                   timeout=timeout, what=f"log event {event} {fields}", interval=0.05)
        assert self.saw(event, **fields), f"worker exited first:\n{self.log_path.read_text()}"

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        self.proc.kill()
        return self.wait(10)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            self._log.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
