"""``python -m app fake-api`` (or ``python -m fakeplatform``): serve the fake platform.

Prints what to paste next, ready as it is: ``export NAME='value'`` lines (values single-quoted,
so the ``$ID`` placeholders survive a shell) that point a worker at it, ending with the command
that starts podworker on the tiny pipeline with images inside the results (``STORAGE=base64``),
and the lines for a client, RunPod's own ``runpod`` package (its endpoint id and key included),
ending with the command that sends ``test_inputs.json``'s input with ``run_sync``. The worker's
names are the ones RunPod's platform sets (``RUNPOD_WEBHOOK_*``), which podworker and RunPod's
SDK worker both read. Lines that are not for pasting start with ``#``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fakeplatform.server import ENDPOINT_ID, RUNSYNC_WAIT_S, FakeJobApiServer

TINY_MODEL = ".podworker/tiny-sd"
"""Where the worker command builds (once) and finds the tiny pipeline: the local run's own."""

WORKER_COMMAND = (f".venv/bin/podworker make-tiny-model {TINY_MODEL} && "
                  ".venv/bin/podworker run")
CLIENT_COMMAND = ".venv-runpod/bin/python examples/runpod_client.py"
"""RunPod's client in the venv ``make setup`` makes for RunPod's SDK (any Python with the
``runpod`` package will do)."""
CLIENT_KEY = "fake-api-client-key"  # any key: the fake checks none on the client API


def worker_settings(server: FakeJobApiServer, api_key: str | None = None) -> list[tuple[str, str]]:
    """The settings that point a worker at ``server`` (RunPod's names), then podworker's own
    for a try-out: the tiny pipeline, images inside the results, never idle out."""
    job_api = [
        ("RUNPOD_WEBHOOK_GET_JOB", server.take_url),
        ("RUNPOD_WEBHOOK_POST_OUTPUT", server.result_url),
        ("RUNPOD_WEBHOOK_POST_STREAM", server.stream_url),
        ("RUNPOD_WEBHOOK_PING", server.ping_url),
        *([("RUNPOD_AI_API_KEY", api_key)] if api_key else []),
        ("RUNPOD_API_URL", server.graphql_url),
    ]
    return [*job_api, ("MODEL_PATH", TINY_MODEL), ("STORAGE", "base64"),
            ("TERMINATE_IDLE_TIME", "0")]


def client_settings(server: FakeJobApiServer) -> list[tuple[str, str]]:
    """The settings of RunPod's client (``runpod`` reads RUNPOD_ENDPOINT_BASE_URL itself)."""
    return [
        ("RUNPOD_ENDPOINT_BASE_URL", server.endpoint_url),
        ("RUNPOD_ENDPOINT_ID", ENDPOINT_ID),
        ("RUNPOD_API_KEY", CLIENT_KEY),
    ]


def instructions(server: FakeJobApiServer, api_key: str | None = None) -> list[str]:
    """The lines printed once listening: comments, ``export`` lines and the two commands."""
    return [
        f"# fake RunPod platform listening on {server.url} (Ctrl-C to stop)",
        "#",
        "# A worker: paste these lines into another shell, in this folder",
        *exports(worker_settings(server, api_key)),
        WORKER_COMMAND,
        "#",
        "# A client, RunPod's own runpod package: paste these lines into a third shell, in this "
        "folder",
        *exports(client_settings(server)),
        CLIENT_COMMAND,
    ]


def exports(pairs: list[tuple[str, str]]) -> list[str]:
    return [f"export {name}='{value}'" for name, value in pairs]


def load_jobs(server: FakeJobApiServer, path: Path) -> list[str | None]:
    """Queue the jobs of a ``test_inputs.json``-style file (one job or a list); a job without
    an id gets one, as ``/run`` gives. Raises ``ValueError`` saying why it cannot."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"cannot read jobs from {path}: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"{path} must hold a job object or a non-empty list of them")
    return [server.submit_raw(item if "id" in item else {"id": server.new_id(), **item})
            for item in items]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; 2 when it cannot listen or read ``--jobs``."""
    parser = argparse.ArgumentParser(
        prog="python -m app fake-api",
        description="Serve a fake RunPod platform: the worker's job API and the client API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--jobs", type=Path, help="a test_inputs.json-style file to queue")
    parser.add_argument("--long-poll", type=float, default=1.0, dest="long_poll",
                        help="longest wait of a take or job-stop request, seconds (1.0)")
    parser.add_argument("--runsync-wait", type=float, default=RUNSYNC_WAIT_S,
                        dest="runsync_wait",
                        help=f"longest wait of /runsync for a result, seconds ({RUNSYNC_WAIT_S:g})")
    parser.add_argument("--api-key", help="require this Authorization on the job API")
    parser.add_argument("--pod-api-key", help="require 'Bearer <this>' on /graphql")
    args = parser.parse_args(argv)
    try:
        server = FakeJobApiServer(args.host, args.port, long_poll_s=args.long_poll,
                                  api_key=args.api_key, pod_api_key=args.pod_api_key,
                                  runsync_wait_s=args.runsync_wait)
    except OSError as exc:
        print(f"fake-api: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
    with server:
        if args.jobs is not None:
            try:
                count = len(load_jobs(server, args.jobs))
            except ValueError as exc:
                print(f"fake-api: {exc}", file=sys.stderr)
                return 2
            print(f"# queued {count} job(s) from {args.jobs}")
        print("\n".join(instructions(server, args.api_key)), flush=True)
        while not done.wait(1.0):
            pass
    return 0
