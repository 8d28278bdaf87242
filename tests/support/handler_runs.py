"""One handler file of ``tests/handlers/``, unchanged, under RunPod's worker or podworker's.

``sdk``: ``python handler.py [flags]``, RunPod's SDK worker loop; ``podworker``: ``python -m app
handler handler.py [flags]``. Both run from ``.venv-runpod`` (RunPod's SDK, pinned, with
podworker installed beside it: what a handler's image holds), in a folder of their own, in a
session of their own (so a server a handler started is stopped with it), pointed at a fake
platform. ``client_view`` is what a client of the endpoint sees of a job.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from fakeplatform import FakeJobApiServer
from tests.support.harness import wait_until
from tests.support.official_runpod import same_query
from tests.support.worker_process import worker_env

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "handlers"
API_KEY = "hk-9f3a7c2e5d1b77"
Side = Literal["sdk", "podworker"]


class HandlerRun:
    """One worker process running ``handler`` (a corpus file name) on ``platform``."""

    def __init__(self, side: Side, python: Path, platform: FakeJobApiServer, handler: str,
                 folder: Path, args: Sequence[str] = (), env: dict[str, str] | None = None,
                 pod_id: str = "handler-pod") -> None:
        self.side = side
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        script = CORPUS / handler
        if side == "sdk":
            take = platform.take_url
            base = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder),
                "LANG": "C.UTF-8",
                "RUNPOD_WEBHOOK_GET_JOB": take,
                "RUNPOD_WEBHOOK_POST_OUTPUT": same_query(platform.result_url, take),
                "RUNPOD_WEBHOOK_POST_STREAM": same_query(platform.stream_url, take),
                "RUNPOD_WEBHOOK_PING": same_query(platform.ping_url, take),
                "RUNPOD_AI_API_KEY": API_KEY, "RUNPOD_POD_ID": pod_id,
                "RUNPOD_PING_INTERVAL": "1000",
                "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true",
            }
            command = [str(python), str(script), *args]
        else:
            base = worker_env(platform, folder / "state", RUNPOD_AI_API_KEY=API_KEY,
                              RUNPOD_POD_ID=pod_id, HOME=str(folder))
            del base["MODEL"]
            command = [str(python), "-m", "app", "handler", str(script), *args]
        self.log_path = folder / f"{side}.log"
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen(command, cwd=folder, env={**base, **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        wait_until(lambda: text in self.log() or self.proc.poll() is not None,
                   timeout=timeout, what=f"{self.side} log text {text!r}")
        assert text in self.log(), f"the {self.side} worker exited first:\n{self.log()[-3000:]}"

    def events(self) -> list[dict[str, Any]]:
        """podworker's JSON log lines (other lines skipped)."""
        found = []
        for line in self.log().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                found.append(entry)
        return found

    def kill(self) -> int:
        """SIGKILL to the worker and everything it started."""
        self._signal_group(signal.SIGKILL)
        code = self.proc.wait(20)
        self._log.close()
        return code

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then (after ``timeout``) SIGKILL; the handler's own children go too."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(10)
        self._signal_group(signal.SIGKILL)  # what the handler started (a local server)
        self._log.close()
        return self.proc.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


def client_view(platform: FakeJobApiServer, job_id: str) -> dict[str, Any]:
    """What a client sees of a job: ``GET /status`` (status, output or error), the chunks
    ``GET /stream`` hands out, the progress shown while it ran, and whether the worker asked
    the platform for a fresh worker with the result (``stopPod``)."""
    job = platform.jobs[job_id]
    view = platform.status(job_id) or {}
    return {
        "status": view.get("status"),
        "output": view.get("output"),
        "error": view.get("error"),
        "stream": list(job.chunks),
        "progress": list(job.progress),
        "stopPod": bool(platform.results.get(job_id, {}).get("stopPod")),
    }
