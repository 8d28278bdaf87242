"""The client's side: what ``runpod.Endpoint`` calls under ``/v2/<endpoint id>/``.

    POST /run {"input", "id"?, "s3Config"?}   {"id", "status": "IN_QUEUE"}
    POST /runsync                waits up to ``runsync_wait_s`` for a final status, then
                                 answers the status as it is (not final: poll /status)
    GET  /status/<id>            {"id", "status", "delayTime", "executionTime", "workerId",
                                  "output" | "error"}; the last progress shows as "output"
                                  while IN_PROGRESS
    GET  /stream/<id>            {"status", "stream": [{"output": chunk}, ...]}: the chunks
                                 since the last call
    POST /cancel/<id>            {"id", "status"}; a running job's worker is told through
                                 its job-stop poll
    POST /retry/<id>             re-queues a FAILED or TIMED_OUT job: {"id", "status"}
    GET  /health                 {"jobs": {...}, "workers": {"idle", "running"}}
    POST /purge-queue            {"removed": n, "status": "completed"}

An unknown job is a 404 ``{"error": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fakeplatform.state import RETRYABLE, PlatformState
from fakeplatform.wire import Reply
from fakeplatform.worker_routes import Request

_UNKNOWN = Reply.json(404, {"error": "unknown job"})


PASSED_ON = ("s3Config",)
"""Fields of a run body the platform hands the worker with the job, beside ``id`` and ``input``:
the bucket an SDK handler's ``rp_upload`` may upload to."""


def _queue_from(state: PlatformState, req: Request) -> str | Reply:
    """Queue the job a run body describes: its id, or the 4xx answer saying what is wrong."""
    try:
        data = json.loads(req.body)
    except ValueError:
        return Reply.json(400, {"error": "the body is not JSON"})
    if not isinstance(data, dict) or "input" not in data:
        return Reply.json(400, {"error": 'the body must be {"input": ...}'})
    raw_id = data.get("id")
    if raw_id is not None and (not isinstance(raw_id, str) or not raw_id):
        return Reply.json(400, {"error": "id must be a non-empty string"})
    try:
        fields = {key: data[key] for key in PASSED_ON if key in data}
        return state.submit(data["input"], raw_id, fields)
    except ValueError as exc:
        return Reply.json(409, {"error": str(exc)})


def run(state: PlatformState, req: Request) -> Reply:
    queued = _queue_from(state, req)
    if isinstance(queued, Reply):
        return queued
    return Reply.json(200, {"id": queued, "status": "IN_QUEUE"})


def runsync(wait_s: float) -> Callable[[PlatformState, Request], Reply]:
    """``POST /runsync``, waiting up to ``wait_s`` for the job to end."""

    def route(state: PlatformState, req: Request) -> Reply:
        queued = _queue_from(state, req)
        if isinstance(queued, Reply):
            return queued
        state.wait_final(queued, wait_s)
        return _known(state.status(queued, full=True))

    return route


def status(state: PlatformState, req: Request) -> Reply:
    return _known(state.status(req.args[0], full=True))


def stream(state: PlatformState, req: Request) -> Reply:
    return _known(state.stream_since(req.args[0]))


def cancel(state: PlatformState, req: Request) -> Reply:
    now = state.cancel(req.args[0])
    return _UNKNOWN if now is None else Reply.json(200, {"id": req.args[0], "status": now})


def retry(state: PlatformState, req: Request) -> Reply:
    was = state.retry(req.args[0])
    if was is None:
        return _UNKNOWN
    if was not in RETRYABLE:
        return Reply.json(400, {"error": f"only a FAILED or TIMED_OUT job can be retried, "
                                         f"this one is {was}"})
    return Reply.json(200, {"id": req.args[0], "status": "IN_QUEUE"})


def health(state: PlatformState, req: Request) -> Reply:
    return Reply.json(200, state.health())


def purge_queue(state: PlatformState, req: Request) -> Reply:
    return Reply.json(200, {"removed": state.purge(), "status": "completed"})


def _known(answer: dict[str, Any] | None) -> Reply:
    return _UNKNOWN if answer is None else Reply.json(200, answer)
