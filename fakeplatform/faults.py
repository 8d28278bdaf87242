"""Fault injection: the next requests to an endpoint wait, fail or answer GraphQL errors.

A spec is ``{"status": 503, "count": 5, "retry_after": 2, "delay_s": 3, "body": {...},
"errors": ["message"]}``: the next ``count`` requests to that endpoint (default 1) first wait
``delay_s``, then answer ``status`` (with ``Retry-After`` when given; the request is not acted
on) or, for ``graphql``, answer 200 with those GraphQL ``errors``; a spec with only ``delay_s``
delays, then answers normally. Specs queue up per endpoint, first in first out.
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# The names requests are counted and faulted under. Worker side: take (batch too), done,
# stream (job-stream posts), ping, stop, graphql. Client side: run, runsync, status,
# stream_status (GET /stream), cancel, retry, health, purge_queue.
ENDPOINTS = frozenset({
    "take", "done", "stream", "ping", "stop", "graphql",
    "run", "runsync", "status", "stream_status", "cancel", "retry", "health", "purge_queue",
})

_FAULT_KEYS = frozenset({"status", "count", "retry_after", "delay_s", "body", "errors"})


@dataclass
class Fault:
    """One injected misbehaviour for the next ``count`` requests to an endpoint."""

    status: int | None = None
    count: int = 1
    retry_after: float | str | None = None
    delay_s: float = 0.0
    body: Any = None
    errors: list[str] | None = None

    @classmethod
    def from_json(cls, spec: object) -> Fault:
        """Build a fault from its JSON spec; raises ``ValueError`` saying what is wrong."""
        if not isinstance(spec, dict):
            raise ValueError("a fault spec must be a JSON object")
        unknown = set(spec) - _FAULT_KEYS
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        fault = cls(**spec)
        fault.check()
        return fault

    def check(self) -> None:
        """Raise ``ValueError`` when a field is out of its range."""
        if self.status is not None and not (
            isinstance(self.status, int) and 100 <= self.status <= 599
        ):
            raise ValueError("status must be an HTTP status code")
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError("count must be a positive integer")
        if not isinstance(self.delay_s, int | float) or not 0 <= self.delay_s <= 600:
            raise ValueError("delay_s must be between 0 and 600 seconds")
        if self.errors is not None and not (
            isinstance(self.errors, list) and all(isinstance(e, str) for e in self.errors)
        ):
            raise ValueError("errors must be a list of strings")
        if self.status is None and self.errors is None and not self.delay_s:
            raise ValueError("a fault needs status, errors or delay_s")


def parse_faults(data: object) -> dict[str, list[Fault]]:
    """``{endpoint: spec or [spec, ...]}`` (the body of ``POST /_faults``) as faults."""
    if not isinstance(data, dict):
        raise ValueError("the body must be {endpoint: spec or [spec, ...]}")
    return {
        str(endpoint): [Fault.from_json(s) for s in (spec if isinstance(spec, list) else [spec])]
        for endpoint, spec in data.items()
    }


class FaultBook:
    """The pending faults per endpoint, and how many requests were served one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, collections.deque[Fault]] = {}
        self.served = 0

    def add(self, faults: Mapping[str, Sequence[Fault]]) -> None:
        """Queue faults; raises ``ValueError`` for an endpoint the fake does not have."""
        unknown = set(faults) - ENDPOINTS
        if unknown:
            raise ValueError(f"unknown endpoints {sorted(unknown)}; known: {sorted(ENDPOINTS)}")
        with self._lock:
            for endpoint, specs in faults.items():
                self._pending.setdefault(endpoint, collections.deque()).extend(specs)

    def next(self, endpoint: str) -> Fault | None:
        """The fault for this request to ``endpoint``, None when none is pending."""
        if not self._pending:  # the common case, read without the lock
            return None
        with self._lock:
            pending = self._pending.get(endpoint)
            if not pending:
                return None
            fault = pending[0]
            fault.count -= 1
            if fault.count <= 0:
                pending.popleft()
                if not pending:
                    del self._pending[endpoint]
            self.served += 1
            return fault

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def answer(self, method: str, body: bytes) -> tuple[int, Any]:
        """``/_faults``: POST adds (``{endpoint: spec or [spec, ...]}``), GET lists, DELETE
        clears; the status and JSON answer."""
        if method == "DELETE":
            self.clear()
            return 200, {}
        if method == "POST":
            try:
                self.add(parse_faults(json.loads(body)))
            except (ValueError, TypeError) as exc:
                return 400, {"error": str(exc)}
        elif method != "GET":
            return 405, {"error": "use GET, POST or DELETE"}
        return 200, self.listing()

    def listing(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {k: [asdict(f) for f in q] for k, q in self._pending.items() if q}


def graphql_errors(messages: Sequence[str]) -> dict[str, Any]:
    """A GraphQL answer carrying ``messages`` as errors of ``podTerminate``."""
    return {
        "errors": [{"message": m, "path": ["podTerminate"]} for m in messages],
        "data": {"podTerminate": None},
    }
