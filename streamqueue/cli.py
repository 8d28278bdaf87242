"""The queue's command line: ``python -m app queue COMMAND`` (or ``python -m streamqueue``).

    submit [--id ID] [INPUT]   queue one job (INPUT: JSON, @FILE, or - for standard input)
    submit-file FILE           queue the jobs of a file like test_inputs.json ({"id","input"})
    status ID                  the job as RunPod's /status shows it (JSON)
    wait ID [--timeout S]      block until it is final; print it
    stream ID [--timeout S]    print its streamed chunks, one JSON line each, until it is final
    cancel ID                  cancel it
    health                     jobs waiting (lag), held by workers (pending), workers, counters

Where the queue is: ``python -m app queue`` reads podworker's settings (``JOB_QUEUE``,
``REDIS_PASSWORD``, ``JOB_QUEUE_NAME``, from the environment and ``.env``); ``python -m
streamqueue`` reads the same variables from the environment only. The password is never an
argument (it would show in the process list).

Exit codes: 0 done (``wait``: COMPLETED), 1 the job failed, was cancelled or is unknown, 2 a
usage or setting error, 3 Redis unavailable, 4 a wait timed out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from streamqueue import layout
from streamqueue.client import JobQueue, QueueUnavailable, UnknownJob, WaitTimeout

OK, JOB_NOT_OK, USAGE, UNAVAILABLE, TIMED_OUT = 0, 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podworker queue",
                                     description="Submit and follow jobs on a Redis queue.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    submit = sub.add_parser("submit", help="queue one job")
    submit.add_argument("input", nargs="?", default="{}",
                        help="the job's input: JSON, @FILE, or - for standard input")
    submit.add_argument("--id", help="the job's id (default: a new random one)")
    many = sub.add_parser("submit-file", help="queue the jobs of a file ({'id','input'} each)")
    many.add_argument("file", type=Path)
    for name, text in (("status", "show a job"), ("cancel", "cancel a job")):
        sub.add_parser(name, help=text).add_argument("id")
    for name, text in (("wait", "wait until a job is final"),
                       ("stream", "print a job's streamed chunks until it is final")):
        command = sub.add_parser(name, help=text)
        command.add_argument("id")
        command.add_argument("--timeout", type=float, default=None, help="seconds")
    sub.add_parser("health", help="the queue's state")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    url: str | None = None,
    password: str | None = None,
    name: str | None = None,
    result_ttl_s: int | None = None,
    max_input_bytes: int | None = None,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    url = url or os.environ.get("JOB_QUEUE")
    if not url:
        print("podworker queue: JOB_QUEUE is not set (a Redis URL: redis://HOST:6379/0)",
              file=sys.stderr)
        return USAGE
    password = password if password is not None else os.environ.get("REDIS_PASSWORD") or None
    options: dict[str, Any] = {}
    if result_ttl_s is not None:
        options["result_ttl_s"] = result_ttl_s
    if max_input_bytes is not None:
        options["max_input_bytes"] = max_input_bytes
    try:
        queue = JobQueue.from_url(url, name or os.environ.get("JOB_QUEUE_NAME")
                                  or layout.DEFAULT_QUEUE, password=password, **options)
    except ValueError as exc:
        print(f"podworker queue: {exc}", file=sys.stderr)
        return USAGE
    try:
        return _run(queue, args, out)
    except ValueError as exc:
        print(f"podworker queue: {exc}", file=sys.stderr)
        return USAGE
    except UnknownJob as exc:
        print(f"podworker queue: {exc}", file=sys.stderr)
        return JOB_NOT_OK
    except QueueUnavailable as exc:
        print(f"podworker queue: {exc}", file=sys.stderr)
        return UNAVAILABLE
    except WaitTimeout as exc:
        print(f"podworker queue: {exc}", file=sys.stderr)
        return TIMED_OUT
    finally:
        queue.close()


def _run(queue: JobQueue, args: argparse.Namespace, out: TextIO) -> int:
    command = args.command
    if command == "submit":
        job_id = queue.submit(_read_input(args.input), args.id)
        _print({"id": job_id, "status": queue.status(job_id).status}, out)
    elif command == "submit-file":
        jobs = _read_jobs(args.file)
        for done in queue.submit_many(jobs):
            _print({"id": done.id, "status": done.status, "added": done.added}, out)
    elif command == "status":
        _print(queue.status(args.id).to_json(), out)
    elif command == "wait":
        state = queue.wait(args.id, args.timeout)
        _print(state.to_json(), out)
        return OK if state.status == layout.COMPLETED else JOB_NOT_OK
    elif command == "stream":
        for chunk in queue.stream(args.id, args.timeout):
            _print({"output": chunk.output, "attempt": chunk.attempt}, out)
        state = queue.status(args.id)
        return OK if state.status == layout.COMPLETED else JOB_NOT_OK
    elif command == "cancel":
        _print({"id": args.id, "status": queue.cancel(args.id)}, out)
    elif command == "health":
        _print(queue.health(), out)
    return OK


def _read_input(text: str) -> dict[str, Any]:
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the input is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError("the input must be a JSON object")
    return value


def _read_jobs(path: Path) -> list[tuple[str | None, dict[str, Any]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read jobs from {path}: {exc}") from None
    items = data if isinstance(data, list) else [data]
    jobs: list[tuple[str | None, dict[str, Any]]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("input"), dict):
            raise ValueError(f"{path}: each job must be an object with an 'input' object")
        job_id = item.get("id")
        jobs.append((None if job_id is None else str(job_id), item["input"]))
    return jobs


def _print(value: Any, out: TextIO) -> None:
    print(json.dumps(value), file=out, flush=True)


if __name__ == "__main__":
    sys.exit(main())
