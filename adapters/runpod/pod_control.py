"""Pod control over RunPod's GraphQL API: the ``PodControl`` port's ``terminate``.

Exists so that an idle worker can delete its own pod (it stops billing). It sends one GraphQL
mutation with the pod id as a *variable* (never spliced into the query text, so no id can break
or change the query)::

    POST {api_url}
    Authorization: Bearer <RUNPOD_API_KEY>
    {"query": "mutation Terminate($podId: String!) { podTerminate(input: {podId: $podId}) }",
     "variables": {"podId": "<pod id>"}}

What it promises: the key travels only in the ``Authorization`` header (the seed put it in the
URL's query string, and so in every access log) and appears in no log line, exception or
``repr``. ``5xx``, ``429`` and connection errors raise ``PodControlUnavailable`` and are retried
with ``domain.waiting.POD_CONTROL``; a ``200`` carrying a GraphQL ``errors`` array and any other
``4xx`` raise ``RejectedByApi`` at once (``401``/``403`` say to check ``RUNPOD_API_KEY``); a
``200`` that is not JSON is treated as transient. Every request runs on the shared
:class:`~adapters.http.client.HttpClient` (an overall deadline, a size cap on the answer), and
retries follow ``domain.waiting.POD_CONTROL``, each wait interruptible by ``interrupt`` (a stop
request never waits behind this loop). No piece of the key survives in an error (``scrub``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from adapters.http.client import HttpClient, HttpFailure, Response
from adapters.http.parts import excerpt, host_of, parse_retry_after
from adapters.retrying import retrying
from domain import waiting
from domain.errors import PodControlUnavailable, RejectedByApi
from domain.scrubbing import Scrubber

log = logging.getLogger(__name__)

TERMINATE_MUTATION = (
    "mutation Terminate($podId: String!) { podTerminate(input: {podId: $podId}) }"
)


def terminate_request(pod_id: str) -> dict[str, Any]:
    """The JSON body of the podTerminate mutation for ``pod_id``."""
    return {"query": TERMINATE_MUTATION, "variables": {"podId": pod_id}}


class RunPodPodControl:
    """Deletes the pod ``pod_id`` through RunPod's GraphQL endpoint ``api_url``."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        pod_id: str,
        *,
        timeout: float = 10.0,
        client: HttpClient | None = None,
        scrub: Scrubber | None = None,
        interrupt: threading.Event | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self._url = api_url
        self._key = api_key
        self._scrub = scrub or Scrubber([api_key])
        self.pod_id = pod_id
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client or HttpClient(max_connections=1)
        self._interrupt = interrupt
        self._sleep = sleep
        self._host = host_of(api_url)

    def __repr__(self) -> str:
        return f"RunPodPodControl(host={self._host!r}, pod_id={self.pod_id!r}, api_key=***)"

    def terminate(self) -> None:
        body = json.dumps(terminate_request(self.pod_id)).encode()
        for attempt in retrying(waiting.POD_CONTROL, interrupt=self._interrupt,
                                sleep=self._sleep):
            with attempt:
                self._terminate_once(body)
        log.info("pod terminate accepted", extra={"event": "pod_terminated",
                                                   "pod_id": self.pod_id})

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def _terminate_once(self, body: bytes) -> None:
        try:
            response: Response = self._client.request(
                "POST", self._url, body=body, deadline_s=self._timeout,
                max_answer_bytes=64 * 1024,
                headers={"Authorization": f"Bearer {self._key}",
                         "Content-Type": "application/json"},
            )
        except HttpFailure as exc:
            raise PodControlUnavailable(
                f"pod control at {self._host} unreachable: {exc}"
            ) from None
        status = response.status
        if status in (401, 403):
            raise RejectedByApi(
                f"pod control at {self._host} answered {status}: check RUNPOD_API_KEY"
            )
        if status == 429:
            raise PodControlUnavailable(
                f"pod control at {self._host} answered 429",
                retry_after=parse_retry_after(response.headers.get("retry-after"),
                                              date_header=response.headers.get("date")),
            )
        if status >= 500 or status == 408:
            raise PodControlUnavailable(f"pod control at {self._host} answered {status}")
        if not 200 <= status < 300:
            # scrub, then cut: a key the cut split in two would escape the scrub
            shown = self._scrub(
                excerpt(self._scrub(response.content.decode("utf-8", "replace")), 200)
            )
            raise RejectedByApi(
                f"pod control at {self._host} refused podTerminate: {status} {shown}".rstrip()
            )
        try:
            data = json.loads(response.content)
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
            raise PodControlUnavailable(
                f"pod control at {self._host} sent an unreadable answer ({status})"
            ) from None
        errors = data.get("errors") if isinstance(data, dict) else None
        if errors:
            raise RejectedByApi(
                f"pod control at {self._host}: podTerminate failed: {self._messages(errors)}"
            )

    def _messages(self, errors: object) -> str:
        items = errors if isinstance(errors, list) else [errors]
        texts = []
        for item in items[:3]:
            message = item.get("message") if isinstance(item, dict) else item
            texts.append(self._scrub(excerpt(self._scrub(str(message)), 200)))  # scrub, cut
        more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
        return "; ".join(texts) + more

