"""The worker's side of the protocol: take, done, stream, ping, job-stop, and podTerminate.

Each route is a function of the platform state and the request, answering a ``Reply``.
Bodies are parsed as JSON whatever their ``Content-Type`` says, as RunPod does (its SDK sends
JSON as ``application/x-www-form-urlencoded``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fakeplatform.faults import graphql_errors
from fakeplatform.state import PlatformState
from fakeplatform.wire import EMPTY_OK, NO_CONTENT, Reply

MAX_BATCH = 1000
_INLINE_POD_ID = re.compile(r'podId\s*:\s*("(?:[^"\\]|\\.)*")')


@dataclass(frozen=True)
class Request:
    """One request as the routes see it: path arguments, query, lower-case headers, body."""

    args: list[str]
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def json_object(self) -> dict[str, Any] | Reply:
        """The body as a JSON object, or the 400 answer saying why it is not one."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return Reply.json(400, {"error": "the body is not JSON"})
        if not isinstance(data, dict):
            return Reply.json(400, {"error": "the body must be a JSON object"})
        return data


def take(state: PlatformState, req: Request) -> Reply:
    """``GET .../job-take/<worker>``: one job as an object, or 204 after the long poll."""
    handed = state.hand_out(req.args[0], 1)
    return Reply.json(200, handed[0]) if handed else NO_CONTENT


def take_batch(state: PlatformState, req: Request) -> Reply:
    """``GET .../job-take-batch/<worker>?batch_size=N``: a list of up to N jobs, or 204."""
    try:
        size = max(1, min(MAX_BATCH, int(req.query.get("batch_size", ["1"])[0])))
    except ValueError:
        return Reply.json(400, {"error": "batch_size must be an integer"})
    handed = state.hand_out(req.args[0], size)
    return Reply.json(200, handed) if handed else NO_CONTENT


def done(state: PlatformState, req: Request) -> Reply:
    """``POST .../job-done/<worker>/<job>``: a result or a progress update; 404 for a job
    the platform never queued."""
    data = req.json_object()
    if isinstance(data, Reply):
        return data
    is_stream = req.query.get("isStream", ["false"])[-1] == "true"
    if not state.finish(req.args[1], data, is_stream):
        return Reply.json(404, {"error": "unknown job"})
    return EMPTY_OK


def stream(state: PlatformState, req: Request) -> Reply:
    """``POST .../job-stream/<worker>/<job>`` with ``{"output": chunk}``: one streamed chunk."""
    data = req.json_object()
    if isinstance(data, Reply):
        return data
    if "output" not in data:
        return Reply.json(400, {"error": 'the body must be {"output": ...}'})
    if not state.add_chunk(req.args[1], data["output"]):
        return Reply.json(404, {"error": "unknown job"})
    return EMPTY_OK


def ping(state: PlatformState, req: Request) -> Reply:
    """``GET .../ping/<worker>?job_id=a,b``: recorded."""
    raw = ",".join(req.query.get("job_id", []))
    state.ping(req.args[0], tuple(i for i in raw.split(",") if i))
    return EMPTY_OK


def job_stop(state: PlatformState, req: Request) -> Reply:
    """``GET .../job-stop/<worker>``: long-polled; ``{"jobsToStop": [...]}`` or 204."""
    ids = state.stops_for(req.args[0])
    return Reply.json(200, {"jobsToStop": ids}) if ids else NO_CONTENT


def graphql(state: PlatformState, req: Request) -> Reply:
    """``POST /graphql``: ``podTerminate`` only, recorded in ``terminations``."""
    try:
        data = json.loads(req.body)
    except ValueError:
        return Reply.json(400, {"errors": [{"message": "the body is not JSON"}]})
    text = data.get("query") if isinstance(data, dict) else None
    if not isinstance(text, str) or "podTerminate" not in text:
        return Reply.json(200, graphql_errors(["the fake knows only podTerminate"]))
    pod_id = _pod_id_of(data, text)
    if pod_id is None:
        return Reply.json(200, graphql_errors(["podId is required"]))
    state.terminate(pod_id)
    return Reply.json(200, {"data": {"podTerminate": None}})


def _pod_id_of(data: dict[str, Any], query: str) -> str | None:
    variables = data.get("variables")
    if isinstance(variables, dict) and isinstance(variables.get("podId"), str):
        return str(variables["podId"])
    match = _INLINE_POD_ID.search(query)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, str) else None
