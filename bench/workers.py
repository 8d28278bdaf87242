"""How to start each worker the benchmark compares: podworker, RunPod's SDK worker, the floor.

Every launch gets a folder of its own (home, state, outputs, log) under the run's temporary
folder, and an environment built from nothing but ``PATH`` and what it needs, so no setting of
the shell running the benchmark leaks in. ``podworker(..., repo=...)`` runs the podworker of
another checkout (``PYTHONPATH`` and the working folder point at it): the A/B check
(``bench/ab.py``) drives an older commit with this code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.harness import API_KEY, BenchServer, Launch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SDK_HANDLER = BENCH / "sdk_handler.py"
MODEL_S, STORE_S = 0.200, 0.150  # the "sleepy" scenario: model, then storage
IO_S = 1.0  # the I/O-bound scenario's wait per job


class Workers:
    """Builds the launch of each worker for a scenario."""

    def __init__(self, server: BenchServer, tmp: Path, runpod_python: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.runpod_python = runpod_python
        self._n = 0

    def _dirs(self, tag: str) -> tuple[Path, Path, Path]:
        self._n += 1
        run = self.tmp / f"{self._n:02d}-{tag}"
        home = run / "home"
        home.mkdir(parents=True)
        return run, home, run / "log.txt"

    def _base_env(self, home: Path) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                "LANG": "C.UTF-8", "TMPDIR": str(home)}

    def podworker(self, tag: str, model: str = "echo", *, storage: str | None = None,
                  concurrency: int | None = None, stream: bool = False,
                  repo: Path = REPO) -> Launch:
        """``python -m app run`` with ``MODEL=model``; ``concurrency`` sets ``CONCURRENCY``,
        ``stream`` the stream URL (``RUNPOD_WEBHOOK_POST_STREAM``, as the platform sets it)."""
        run, home, log = self._dirs(tag)
        env = self._base_env(home) | {
            "WEBHOOK_GET_WORK": self.server.take_url,
            "WEBHOOK_POST_OUTPUT": self.server.result_url,
            "WEBHOOK_PING": self.server.ping_url,
            "AI_API_KEY": API_KEY,
            "RUNPOD_POD_ID": tag,
            "MODEL": model,
            "STATE_DIR": str(run / "state"),
            "OUTPUT_DIR": str(run / "outputs"),
            "TERMINATE_IDLE_TIME": "0",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(repo),
        }
        if storage is not None:
            env["STORAGE"] = storage
        if concurrency is not None:
            env["CONCURRENCY"] = str(concurrency)
        if stream:
            env["RUNPOD_WEBHOOK_POST_STREAM"] = self.server.stream_url
        argv = [sys.executable, "-m", "app", "--env-file", str(run / "absent.env"), "run"]
        return Launch("podworker", argv, env, repo, log)

    def runpod(self, tag: str, handler: str = "noop", concurrency: int = 1) -> Launch:
        """``bench/sdk_handler.py`` in the SDK's venv with ``BENCH_HANDLER=handler``."""
        run, home, log = self._dirs(tag)
        env = self._sdk_env(tag, handler, concurrency, run, home)
        return Launch("runpod", [str(self.runpod_python), str(SDK_HANDLER)], env, run, log)

    def handler(self, tag: str, handler: str = "noop", concurrency: int = 1) -> Launch:
        """The same ``bench/sdk_handler.py``, unchanged, under podworker: ``python -m app
        handler bench/sdk_handler.py`` in the SDK's venv (podworker is installed there too)."""
        run, home, log = self._dirs(tag)
        env = self._sdk_env(tag, handler, concurrency, run, home) | {
            "STATE_DIR": str(run / "state"),
            "TERMINATE_IDLE_TIME": "0",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
        }
        argv = [str(self.runpod_python), "-m", "app", "handler", "--env-file",
                str(run / "absent.env"), str(SDK_HANDLER)]
        return Launch("podworker", argv, env, run, log)

    def _sdk_env(self, tag: str, handler: str, concurrency: int, run: Path,
                 home: Path) -> dict[str, str]:
        return self._base_env(home) | {
            "RUNPOD_WEBHOOK_GET_JOB": self.server.take_url,
            "RUNPOD_WEBHOOK_POST_OUTPUT": self.server.result_url,
            "RUNPOD_WEBHOOK_POST_STREAM": self.server.stream_url,
            "RUNPOD_WEBHOOK_PING": self.server.ping_url,
            "RUNPOD_AI_API_KEY": API_KEY,
            "RUNPOD_POD_ID": tag,
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "BENCH_HANDLER": handler,
            "BENCH_CONCURRENCY": str(concurrency),
            "BENCH_MODEL_S": str(MODEL_S),
            "BENCH_STORE_S": str(STORE_S),
            "BENCH_IO_S": str(IO_S),
            "BENCH_OUTPUT_DIR": str(run / "outputs"),
            "BENCH_PNG_HEX": tiny_png().hex(),
        }

    def floor(self, tag: str, count: int, seconds: float) -> Launch:
        run, home, log = self._dirs(tag)
        argv = [sys.executable, str(BENCH / "floor_client.py"), self.server.take_url,
                self.server.result_url, str(count), "--key", API_KEY, "--seconds", str(seconds)]
        return Launch("floor", argv, self._base_env(home), run, log)


def tiny_png() -> bytes:
    from adapters.local.echo_model import TINY_PNG

    return TINY_PNG
