"""A scripted, hostile stand-in for RunPod's job API (and its GraphQL endpoint), on loopback.

The fake job API (``fault_kit``'s ``rig``) misbehaves politely: a status, a delay, then a whole
answer. This server does what a broken proxy or a confused platform does, for the tests of
``tests/faults/test_hostile_platform.py`` and its neighbours:

- ``Trickle()``: answer one byte a second, starting with the status line, and never finish
  (so no status is ever known: a per-read timeout never trips, only an overall deadline does);
- ``Endless()``: a ``200`` with a chunked body that never ends, as fast as the socket takes it;
- ``Answer(status, body)``: a plain answer (a 500 while job-done is "down");
- ``EchoKey(status)``: a 400/401/403 (or a GraphQL error) that echoes the request's own key,
  masked (``mask``), yet with a six-character piece of it;
- take answers scripted whole (``hand_out``): the same job id again, or several copies in one
  batch.

It speaks the fake's URL shapes (``take_url``, ``result_url``, ``ping_url``, ``graphql_url``),
so ``worker_env(server, state_dir)`` wires a worker to it. Behaviours are queued per endpoint
(``script``) and used first in first out; ``always`` sets one for every later request until
cleared. With none pending, it behaves: a take hands out the next queued answer (long-polled
``long_poll_s`` when there is none), job-done accepts (``accepted``), ping records the job ids
it names (``pings``), job-stop holds ``stop_hold_s`` then answers 204, GraphQL accepts
``podTerminate`` (``terminations``). Every request is recorded in ``seen`` (with the time it
arrived, monotonic), whatever it was answered. Any job id is accepted: this server keeps no
job table, so tests count what reached it.

The behaviours, ``Seen`` and the HTTP handler that plays them are in ``hostile_answers``; the
behaviours and ``Seen`` can be imported from here too.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import pytest

from tests.support.hostile_answers import (
    Answer,
    Behaviour,
    EchoKey,
    Endless,
    HostileHandler,
    Seen,
    Trickle,
    mask,
)
from tests.support.worker_process import WorkerProcess, worker_env

__all__ = [
    "ENDPOINT_ID",
    "Answer",
    "Behaviour",
    "EchoKey",
    "Endless",
    "HostileRig",
    "HostileServer",
    "Seen",
    "Trickle",
    "hostile",
    "mask",
]

ENDPOINT_ID = "hostile"


@dataclass
class HostileServer:
    """See the module docstring. ``start()`` it; ``stop()`` ends every stream it is sending."""

    long_poll_s: float = 0.3
    stop_hold_s: float = 0.3
    seen: list[Seen] = field(default_factory=list)
    accepted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # final results
    progress: list[tuple[str, Any]] = field(default_factory=list)
    pings: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)
    terminations: list[str] = field(default_factory=list)
    endless_served: int = 0  # bytes sent in endless bodies so far
    endless_ended: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._takes: collections.deque[Any] = collections.deque()
        self._scripts: dict[str, collections.deque[Behaviour]] = collections.defaultdict(
            collections.deque)
        self._always: dict[str, Behaviour] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
        self._httpd.daemon_threads = True
        self._httpd.hostile = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # --- life ---------------------------------------------------------------------------
    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- URLs ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def take_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/job-take/$ID?gpu=hostile"

    @property
    def result_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/job-done/$RUNPOD_POD_ID/$ID?gpu=hostile"

    @property
    def ping_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/ping/$RUNPOD_POD_ID?gpu=hostile"

    @property
    def stream_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/job-stream/$RUNPOD_POD_ID/$ID?gpu=hostile"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    # --- scripting ----------------------------------------------------------------------
    def hand_out(self, answer: Any) -> None:
        """Queue one take answer as it will be sent: a job object, or a list of them."""
        with self._cond:
            self._takes.append(answer)
            self._cond.notify_all()

    def submit(self, job_input: Any, job_id: str) -> str:
        """Queue ``{"id", "input"}`` as the answer of one take; returns the id."""
        self.hand_out({"id": job_id, "input": job_input})
        return job_id

    def script(self, endpoint: str, *behaviours: Behaviour) -> None:
        """The next requests to ``endpoint`` get ``behaviours``, one each, in order."""
        with self._cond:
            self._scripts[endpoint].extend(behaviours)

    def always(self, endpoint: str, behaviour: Behaviour | None) -> None:
        """Every later request to ``endpoint`` (after its script) gets ``behaviour``; None for
        normal service again."""
        with self._cond:
            if behaviour is None:
                self._always.pop(endpoint, None)
            else:
                self._always[endpoint] = behaviour

    @property
    def takes_waiting(self) -> int:
        with self._cond:
            return len(self._takes)

    # --- what reached it ----------------------------------------------------------------
    def requests_to(self, endpoint: str, since: float = 0.0, until: float = float("inf"),
                    ) -> list[Seen]:
        with self._cond:
            return [s for s in self.seen if s.endpoint == endpoint and since <= s.at <= until]

    def posts_for(self, job_id: str) -> list[dict[str, Any]]:
        """Every final-result body posted for ``job_id`` (accepted or not), in order."""
        bodies = []
        for seen in self.requests_to("done"):
            if seen.path.rstrip("/").rsplit("/", 1)[-1] == job_id:
                data = _loads(seen.body)
                if isinstance(data, dict) and data.get("status") != "IN_PROGRESS":
                    bodies.append(data)
        return bodies

    def wait_until(self, condition: Callable[[HostileServer], bool], timeout: float) -> bool:
        """Wait (on the server's condition, no polling) until ``condition(self)``; its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    # --- serving (handler threads) ------------------------------------------------------
    def _record(self, seen: Seen) -> Behaviour | None:
        with self._cond:
            self.seen.append(seen)
            self._cond.notify_all()
            pending = self._scripts.get(seen.endpoint)
            if pending:
                return pending.popleft()
            return self._always.get(seen.endpoint)

    def _normal(self, seen: Seen) -> tuple[int, Any]:
        if seen.endpoint == "take":
            with self._cond:
                self._cond.wait_for(lambda: self._takes or self._stopping.is_set(),
                                    self.long_poll_s)
                if not self._takes:
                    return 204, b""
                answer = self._takes.popleft()
                self._cond.notify_all()
            return 200, answer
        if seen.endpoint == "done":
            job_id = unquote(seen.path.rstrip("/").rsplit("/", 1)[-1])
            data = _loads(seen.body)
            if not isinstance(data, dict):
                return 400, {"error": "the body must be a JSON object"}
            with self._cond:
                if data.get("status") == "IN_PROGRESS":
                    self.progress.append((job_id, data.get("output")))
                else:
                    self.accepted.setdefault(job_id, []).append(data)
                self._cond.notify_all()
            return 200, b""
        if seen.endpoint == "ping":
            ids = tuple(i for i in ",".join(seen.query.get("job_id", [])).split(",") if i)
            with self._cond:
                self.pings.append((seen.at, ids))
                self._cond.notify_all()
            return 200, b""
        if seen.endpoint == "stop":
            if self.stop_hold_s > 0:
                self._stopping.wait(self.stop_hold_s)
            return 204, b""
        if seen.endpoint == "graphql":
            data = _loads(seen.body)
            text = data.get("query", "") if isinstance(data, dict) else ""
            if "podTerminate" not in str(text):
                return 200, {"errors": [{"message": "only podTerminate here"}]}
            with self._cond:
                self.terminations.append(str(text))
                self._cond.notify_all()
            return 200, {"data": {"podTerminate": None}}
        return 404, {"error": "no such endpoint"}


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


@dataclass
class HostileRig:
    """One test's hostile server, folder and ``python -m app run`` processes (killed at the end)."""

    root: Path
    api: HostileServer
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.root / "state"

    def start(self, name: str = "worker", **extra: str) -> WorkerProcess:
        """A worker on this server: JSON logs, echo model, pings every 500 ms, plus ``extra``."""
        settings = {"RUNPOD_PING_INTERVAL": "500", "EXECUTION_TIMEOUT": "60000", **extra}
        env = worker_env(cast(Any, self.api), self.state)
        env.update(settings)
        worker = WorkerProcess(env, self.root, name=f"{name}-{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.api.stop()


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[HostileRig]:
    """A started ``HostileServer`` with a folder for workers; all stopped when the test ends."""
    made = HostileRig(root=tmp_path, api=HostileServer().start())
    try:
        yield made
    finally:
        made.close()
