"""The job API over HTTP, as RunPod's platform speaks it: take, result, progress, ping, job-stop.

Exists so that podworker can replace RunPod's own SDK worker: it implements the ``JobApi`` and
``JobStopSource`` ports (:mod:`domain.ports`) on the shared :class:`~adapters.http.client.
HttpClient` (keep-alive, an overall deadline and a size cap on every request).

What it promises:

- ``take`` asks once and never retries or sleeps (the worker owns the backoff): ``200`` -> the
  jobs, ``204``/``400`` -> none, ``429`` -> ``RateLimited`` carrying ``Retry-After``, anything
  else, every connection error, an answer not complete within ``take_timeout`` or larger than
  ``max_jobs`` inputs of ``max_input_bytes`` (plus overhead) -> ``ApiUnavailable``. A body that
  cannot be read, or an object without a usable id, is logged (a warning with a short excerpt,
  never the whole body) and left out; the other jobs come back. More than one job is asked for
  with ``/job-take-batch/`` and ``batch_size``.
- ``post_result`` tries once within ``read_timeout`` (plus a second per MB of body): ``2xx``
  accepted; ``429``, ``408``, ``5xx``, timeouts and connection errors raise ``ApiUnavailable``
  (the worker keeps the result in its outbox and tries again on its own schedule); any other
  ``4xx`` raises ``RejectedByApi``.
- ``post_stream`` posts one chunk ``{"output": chunk}`` to the stream URL (like the SDK, with
  ``isStream=false``) and answers like ``post_result``; a streamed job's final result goes to
  job-done with ``isStream=true``.
- ``post_progress`` and ``ping`` are best effort: they never raise and log at most one debug
  line; a ping is tried twice (``domain.waiting.BEST_EFFORT``) and names at most
  ``PING_IDS_CHARS`` characters of job ids, the first ones given (running jobs come first).
- ``jobs_to_stop`` long-polls the take URL with ``/job-take/`` replaced by ``/job-stop/``. When
  the take URL has no ``/job-take/`` it returns ``[]`` (logged once); ``stop_polling`` says
  whether it is on, so the worker may skip that thread altogether.
- The API key is sent raw in ``Authorization`` and no piece of it appears in a log line,
  exception message or ``repr`` (``scrub`` runs over every excerpt before it is cut). Error
  messages name the host and the status, never the URL's path or query.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from adapters import retrying
from adapters.http.client import AnswerTooLarge, HttpClient, HttpFailure, Response
from adapters.http.parts import excerpt, fill, host_of, parse_retry_after, with_query
from adapters.runpod.wire import auth_hint, batch_url_from, dumped, ping_job_ids, stop_url_from
from domain import waiting
from domain.errors import (
    ApiUnavailable,
    ConfigurationError,
    PodworkerError,
    RateLimited,
    RejectedByApi,
)
from domain.job import Job, JobResult, job_from_wire
from domain.ports import Clock
from domain.scrubbing import Scrubber

log = logging.getLogger(__name__)

Sleep = Callable[[float], object]
SMALL_ANSWER_BYTES = 64 * 1024
"""Largest answer read to a post, a ping or a job-stop poll (they carry a few ids at most)."""
ENVELOPE_BYTES = 64 * 1024
WIRE_EXPANSION = 6
"""JSON on the wire may escape each character of an input as ``\\uXXXX``: six bytes for one."""
MAX_TAKE_BYTES = 256 * 1024 * 1024
"""However many jobs a take asks for, its answer is never read past this (memory stays bounded)."""


class RunPodJobApi:
    """RunPod's job API (``JobApi`` and ``JobStopSource`` ports) over one pooled client."""

    def __init__(
        self,
        *,
        take_url: str,
        result_url: str,
        ping_url: str | None,
        api_key: str | None,
        stream_url: str | None = None,
        worker_id: str,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        take_timeout: float = 95.0,
        max_input_bytes: int = 1_000_000,
        clock: Clock,
        client: HttpClient | None = None,
        scrub: Scrubber | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if "$ID" not in result_url:
            raise ConfigurationError("the result URL template must contain $ID (the job id)")
        self._result_template = result_url
        self._ping_template = ping_url
        self._stream_template = stream_url
        self._headers = {"Authorization": api_key} if api_key else {}
        self._scrub = scrub or Scrubber([api_key])
        self.worker_id = worker_id
        self._connect_timeout = connect_timeout
        self._timeout = read_timeout
        self._poll_timeout = take_timeout
        self._max_input_bytes = max_input_bytes
        self._clock = clock
        self._owns_client = client is None
        self._client = client or HttpClient()
        self._sleep = sleep
        self._take_url = fill(take_url, job_id=worker_id, pod_id=worker_id)
        self._batch_url = batch_url_from(self._take_url)
        self._stop_url = stop_url_from(self._take_url)
        self._stop_off_logged = False
        self._host = host_of(take_url)

    def __repr__(self) -> str:
        key = "set" if self._headers else "unset"
        return f"RunPodJobApi(host={self._host!r}, worker_id={self.worker_id!r}, api_key={key})"

    @property
    def stop_polling(self) -> bool:
        """Whether ``jobs_to_stop`` asks the API (the take URL has ``/job-take/``)."""
        return self._stop_url is not None

    # --- JobApi ---------------------------------------------------------------------------
    def take(self, *, job_in_progress: bool, max_jobs: int = 1) -> list[Job]:
        params = {"job_in_progress": "1" if job_in_progress else "0"}
        url = self._take_url
        if max_jobs > 1 and self._batch_url is not None:
            url, params["batch_size"] = self._batch_url, str(max_jobs)
        cap = min(max(1, max_jobs) * (WIRE_EXPANSION * self._max_input_bytes + ENVELOPE_BYTES),
                  MAX_TAKE_BYTES)
        response = self._call("GET", with_query(url, **params), self._poll_timeout, cap,
                              what="take")
        status = response.status
        if status in (204, 400):
            return []
        if status == 429:
            raise self._rate_limited(response)
        if status != 200:
            raise ApiUnavailable(f"job API at {self._host} answered {status} to take"
                                 + auth_hint(status))
        return self._jobs_from(response.content)

    def post_result(self, result: JobResult) -> None:
        body = json.dumps(result.to_wire(), separators=(",", ":")).encode()
        self._post(self._result_url(result.job_id, streamed=result.streamed), body,
                   what=f"the result of job {result.job_id!r}")

    def post_stream(self, job_id: str, chunk: Any) -> None:
        if self._stream_template is None:
            raise RejectedByApi("no stream URL is configured (set WEBHOOK_POST_STREAM or "
                                "RUNPOD_WEBHOOK_POST_STREAM) for a model that streams")
        body = json.dumps({"output": chunk}, separators=(",", ":")).encode()
        url = with_query(fill(self._stream_template, pod_id=self.worker_id, job_id=job_id),
                         isStream="false")
        self._post(url, body, what=f"a streamed chunk of job {job_id!r}")

    def post_progress(self, job_id: str, progress: Any) -> None:
        try:
            body = json.dumps({"status": "IN_PROGRESS", "output": progress},
                              separators=(",", ":"), allow_nan=False).encode()
            self._post(self._result_url(job_id), body, what=f"progress of job {job_id!r}")
        except (PodworkerError, TypeError, ValueError) as exc:
            log.debug("progress update for job %r not delivered: %s", job_id, exc)

    def ping(self, job_ids: Sequence[str]) -> None:
        if self._ping_template is None:
            return
        url = fill(self._ping_template, pod_id=self.worker_id)
        listed = ping_job_ids(job_ids)
        if listed:
            url = with_query(url, job_id=listed)
        try:
            for attempt in retrying.retrying(waiting.BEST_EFFORT, sleep=self._sleep):
                with attempt:
                    response = self._call("GET", url, self._timeout, SMALL_ANSWER_BYTES,
                                          what="a ping")
                    self._check_accepted(response, what="a ping")
        except PodworkerError as exc:
            log.debug("ping not delivered: %s", exc)

    # --- JobStopSource --------------------------------------------------------------------
    def jobs_to_stop(self) -> list[str]:
        if self._stop_url is None:
            if not self._stop_off_logged:
                self._stop_off_logged = True
                log.info("job-stop polling is off: the take URL has no /job-take/ part",
                         extra={"event": "job_stop_off"})
            return []
        response = self._call("GET", self._stop_url, self._poll_timeout,
                              SMALL_ANSWER_BYTES * 16, what="job-stop")
        status = response.status
        if status == 204:
            return []
        if status == 429:
            raise self._rate_limited(response)
        if status != 200:
            raise ApiUnavailable(f"job API at {self._host} answered {status} to job-stop"
                                 + auth_hint(status))
        try:
            data = json.loads(response.content) if response.content.strip() else {}
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
            raise ApiUnavailable(
                f"job API at {self._host} sent an unreadable job-stop answer"
            ) from None
        ids = data.get("jobsToStop") if isinstance(data, dict) else None
        if not isinstance(ids, list):
            return []
        return [str(i) for i in ids if isinstance(i, str | int) and not isinstance(i, bool)]

    def close(self) -> None:
        """Close the pooled connections (only when this object made the client)."""
        if self._owns_client:
            self._client.close()

    # --- helpers --------------------------------------------------------------------------
    def _result_url(self, job_id: str, *, streamed: bool = False) -> str:
        url = fill(self._result_template, pod_id=self.worker_id, job_id=job_id)
        return with_query(url, isStream="true" if streamed else "false")

    def _call(self, method: str, url: str, deadline: float, cap: int, *, what: str,
              body: bytes | None = None) -> Response:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            return self._client.request(
                method, url, body=body, headers=headers, deadline_s=deadline,
                max_answer_bytes=cap, connect_timeout_s=self._connect_timeout,
            )
        except AnswerTooLarge as exc:
            if 200 <= exc.status < 300 and method == "POST":
                return Response(exc.status, {}, b"", url)  # accepted; its chatter is not read
            raise ApiUnavailable(f"job API at {host_of(url)}: {what}: {exc}") from None
        except HttpFailure as exc:
            raise ApiUnavailable(
                f"job API at {host_of(url)} unreachable ({what}): {exc}"
            ) from None

    def _post(self, url: str, body: bytes, *, what: str) -> None:
        deadline = self._timeout + len(body) / 1_000_000  # at least 1 MB/s for large bodies
        response = self._call("POST", url, deadline, SMALL_ANSWER_BYTES, what=what, body=body)
        self._check_accepted(response, what=what)

    def _check_accepted(self, response: Response, *, what: str) -> None:
        status = response.status
        host = host_of(response.url)
        if 200 <= status < 300:
            return
        if status == 429:
            raise self._rate_limited(response)
        if status == 408 or status >= 500 or status < 400:
            raise ApiUnavailable(f"job API at {host} answered {status} to {what}")
        reason = self._excerpt(response.content, 200) if response.content else ""
        raise RejectedByApi(
            f"job API at {host} refused {what}: {status}"
            + (f" {reason}" if reason else "") + auth_hint(status)
        )

    def _excerpt(self, data: bytes | str, limit: int = 120) -> str:
        """An excerpt of a body with every piece of a secret scrubbed first (scrubbing after
        the cut would miss a key that the cut splits in two)."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        return self._scrub(excerpt(self._scrub(text), limit))

    def _rate_limited(self, response: Response) -> RateLimited:
        retry_after = parse_retry_after(
            response.headers.get("retry-after"), date_header=response.headers.get("date")
        )
        shown = f", retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimited(f"job API at {host_of(response.url)} answered 429{shown}",
                           retry_after=retry_after)

    def _jobs_from(self, content: bytes) -> list[Job]:
        if not content.strip():
            return []
        try:
            data = json.loads(content)
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deeply
            log.warning("take answer is not JSON (%s), ignored: %s", exc.__class__.__name__,
                        self._excerpt(content), extra={"event": "take_unreadable"})
            return []
        if data is None:
            return []
        items = data if isinstance(data, list) else [data]
        now = self._clock.now()
        jobs: list[Job] = []
        for item in items:
            job = job_from_wire(item, now)
            if job is None:
                log.warning("take answer holds a job without a usable id, dropped: %s",
                            self._excerpt(dumped(item)),
                            extra={"event": "job_without_id"})
                continue
            jobs.append(job)
        return jobs
