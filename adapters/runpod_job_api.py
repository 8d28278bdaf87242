"""The job API over HTTP, as RunPod's platform speaks it: take, result, progress, ping, job-stop.

Exists so that podworker can replace RunPod's own SDK worker: it implements the ``JobApi`` and
``JobStopSource`` ports (:mod:`domain.ports`) on one pooled ``requests.Session`` (keep-alive)
with explicit connect/read timeouts, the take and job-stop read timeout longer than the
server's long-poll.

What it promises:

- ``take`` asks once and never retries or sleeps (the worker loop owns the backoff, with
  ``adapters.retrying.Backoff``): ``200`` -> the jobs, ``204``/``400`` -> none, ``429`` ->
  ``RateLimited`` carrying ``Retry-After`` (seconds or an HTTP date), anything else and every
  connection error or timeout -> ``ApiUnavailable``. A body that cannot be read, or an object
  without a usable id, is logged (a warning with a short excerpt, never the whole body) and left
  out; the other jobs come back.
- ``post_result`` is retried in a short burst (``adapters.retrying.result_delivery``): ``2xx``
  accepted;
  ``429``, ``408``, ``5xx`` and connection errors are transient and, once the policy gives up,
  re-raised as ``TransientError`` (the worker keeps the result and sends it again later); any
  other ``4xx`` raises ``RejectedByApi`` at once.
- ``post_progress`` and ``ping`` are best effort (``adapters.retrying.best_effort``): they never
  raise and log at most one debug line.
- ``jobs_to_stop`` long-polls the take URL with ``/job-take/`` replaced by ``/job-stop/``. When
  the take URL has no ``/job-take/`` it returns ``[]`` at once (logged once): the worker calls it
  from a thread that waits between calls, so it never spins; ``stop_polling`` says whether it
  is on, so the worker may skip that thread altogether.
- The API key is sent raw in ``Authorization`` and appears in no log line, exception message or
  ``repr``. Error messages name the host and the status, never the URL's query. A down API is not
  logged once per try: the caller decides how often to warn.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from adapters import retrying
from domain.errors import (
    ApiUnavailable,
    ConfigurationError,
    PodworkerError,
    RateLimited,
    RejectedByApi,
)
from domain.job import Job, JobResult, job_from_wire
from domain.ports import Clock

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]

EXCERPT_CHARS = 120
"""How much of an unreadable body a warning shows: enough to recognise it, never a whole image."""

USER_AGENT = "podworker/0.1"


class RawKeyAuth(requests.auth.AuthBase):
    """``Authorization: <key>`` (RunPod's job API takes the raw key, no "Bearer").

    Set as ``auth=`` rather than as a plain header so that ``requests`` never replaces it with
    ``.netrc`` credentials, and drops it on a redirect to another host.
    """

    def __init__(self, key: str) -> None:
        self._key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._key
        return request

    def scrub(self, text: str) -> str:
        """``text`` with the key (should a server echo it) replaced by ``***``."""
        return text.replace(self._key, "***")

    def __repr__(self) -> str:
        return "RawKeyAuth(***)"


def pooled_session(pool_maxsize: int = 8) -> requests.Session:
    """A session with a small keep-alive pool and no hidden retries (our policies retry).

    The worker uses it from a few threads at once (take, job-stop, ping, delivery): the pool
    holds enough connections that none is opened and dropped per request.
    """
    session = requests.Session()
    # Without proxy variables there is nothing in the environment for requests to honour, and
    # reading it (proxies, .netrc, CA bundle) on every request costs ~130 µs of CPU each time.
    session.trust_env = any(
        name.lower().endswith("_proxy") for name in os.environ
    ) or bool(os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"))
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_maxsize, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def with_query(url: str, **params: str) -> str:
    """``url`` plus ``params``, after ``&`` when it already has a query (RunPod's templates do)."""
    if not params:
        return url
    extra = "&".join(f"{quote(k, safe='')}={quote(v, safe=',')}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def fill(template: str, *, pod_id: str | None = None, job_id: str | None = None) -> str:
    """Put the URL-quoted ids in ``template`` (``$RUNPOD_POD_ID`` first, then ``$ID``).

    Quoting turns ``$`` into ``%24``, so an id can never smuggle in another placeholder, and a
    ``/``, ``?`` or ``#`` in an id stays inside its path segment (an id of ``.`` or ``..`` is
    sent as ``%2E``s so that it is not taken for a dot segment).
    """
    url = template
    if pod_id is not None:
        url = url.replace("$RUNPOD_POD_ID", _segment(pod_id))
    if job_id is not None:
        url = url.replace("$ID", _segment(job_id))
    return url


def _segment(value: str) -> str:
    quoted = quote(value, safe="")
    # "." and ".." would be resolved away as dot segments by the HTTP client.
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def host_of(url: str) -> str:
    """``host[:port]`` of ``url``: what error messages name (never the path or the query)."""
    return urlsplit(url).netloc.rpartition("@")[2] or "?"


def parse_retry_after(
    value: str | None, *, date_header: str | None = None, now: datetime | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date.

    An HTTP date is measured from the answer's own ``Date`` header when there is one (so a skewed
    local clock does not matter), else from ``now`` (the wall clock by default). Returns None
    when absent or unreadable; never negative.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    reference = None
    if date_header:
        try:
            reference = email.utils.parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError):
            reference = None
    if reference is None:
        reference = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    return max(0.0, (when - reference).total_seconds())


def excerpt(data: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable excerpt of a body for a log line."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    short = text[:limit]
    shown = "".join(c if c.isprintable() else " " for c in short)
    return shown + (f"... ({len(text)} chars)" if len(text) > limit else "")


def describe_failure(exc: requests.RequestException) -> str:
    """What went wrong, in words that contain no URL (requests' own messages contain it)."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "read timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return f"request failed ({type(exc).__name__})"


class RunPodJobApi:
    """RunPod's job API (``JobApi`` and ``JobStopSource`` ports) over one pooled session."""

    def __init__(
        self,
        *,
        take_url: str,
        result_url: str,
        ping_url: str | None,
        api_key: str | None,
        worker_id: str,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        take_timeout: float = 95.0,
        clock: Clock,
        session: requests.Session | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if "$ID" not in result_url:
            raise ConfigurationError("the result URL template must contain $ID (the job id)")
        self._result_template = result_url
        self._ping_template = ping_url
        self._auth = RawKeyAuth(api_key) if api_key else None
        self.worker_id = worker_id
        self._timeout = (connect_timeout, read_timeout)
        self._poll_timeout = (connect_timeout, take_timeout)
        self._clock = clock
        self._owns_session = session is None
        self._session = session if session is not None else pooled_session()
        self._sleep = sleep
        self._take_url = fill(take_url, job_id=worker_id, pod_id=worker_id)
        self._stop_url = _stop_url_from(self._take_url)
        self._stop_off_logged = False
        self._host = host_of(take_url)

    def __repr__(self) -> str:
        key = "set" if self._auth is not None else "unset"
        return f"RunPodJobApi(host={self._host!r}, worker_id={self.worker_id!r}, api_key={key})"

    @property
    def stop_polling(self) -> bool:
        """Whether ``jobs_to_stop`` asks the API (the take URL has ``/job-take/``)."""
        return self._stop_url is not None

    # --- JobApi ---------------------------------------------------------------------------
    def take(self, *, job_in_progress: bool) -> list[Job]:
        url = with_query(self._take_url, job_in_progress="1" if job_in_progress else "0")
        response = self._get(url, self._poll_timeout)
        status = response.status_code
        if status in (204, 400):
            return []
        if status == 429:
            raise self._rate_limited(response)
        if status != 200:
            raise ApiUnavailable(f"job API at {self._host} answered {status} to take"
                                 + _auth_hint(status))
        return self._jobs_from(response.content)

    def post_result(self, result: JobResult) -> None:
        url = self._result_url(result.job_id)
        body = json.dumps(result.to_wire(), separators=(",", ":")).encode()
        for attempt in retrying.result_delivery(self._sleep):
            with attempt:
                self._post(url, body, what=f"the result of job {result.job_id!r}")

    def post_progress(self, job_id: str, progress: Any) -> None:
        try:
            body = json.dumps({"status": "IN_PROGRESS", "output": progress},
                              separators=(",", ":")).encode()
            url = self._result_url(job_id)
            for attempt in retrying.best_effort(self._sleep):
                with attempt:
                    self._post(url, body, what=f"progress of job {job_id!r}")
        except (PodworkerError, TypeError, ValueError) as exc:
            log.debug("progress update for job %r not delivered: %s", job_id, exc)

    def ping(self, job_ids: Sequence[str]) -> None:
        if self._ping_template is None:
            return
        url = fill(self._ping_template, pod_id=self.worker_id)
        if job_ids:
            url = with_query(url, job_id=",".join(job_ids))
        try:
            for attempt in retrying.best_effort(self._sleep):
                with attempt:
                    response = self._get(url, self._timeout)
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
        response = self._get(self._stop_url, self._poll_timeout)
        status = response.status_code
        if status == 204:
            return []
        if status == 429:
            raise self._rate_limited(response)
        if status != 200:
            raise ApiUnavailable(f"job API at {self._host} answered {status} to job-stop"
                                 + _auth_hint(status))
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
        """Close the pooled connections (only when this object made the session)."""
        if self._owns_session:
            self._session.close()

    # --- helpers --------------------------------------------------------------------------
    def _result_url(self, job_id: str) -> str:
        url = fill(self._result_template, pod_id=self.worker_id, job_id=job_id)
        return with_query(url, isStream="false")

    def _get(self, url: str, timeout: tuple[float, float]) -> requests.Response:
        try:
            return self._session.get(url, auth=self._auth, timeout=timeout,
                                     allow_redirects=False)
        except requests.RequestException as exc:
            raise ApiUnavailable(
                f"job API at {host_of(url)} unreachable: {describe_failure(exc)}"
            ) from None

    def _post(self, url: str, body: bytes, *, what: str) -> None:
        try:
            response = self._session.post(
                url, data=body, auth=self._auth, timeout=self._timeout, allow_redirects=False,
                headers={"Content-Type": "application/json"},
            )
        except requests.RequestException as exc:
            raise ApiUnavailable(
                f"job API at {host_of(url)} unreachable: {describe_failure(exc)}"
            ) from None
        self._check_accepted(response, what=what)

    def _check_accepted(self, response: requests.Response, *, what: str) -> None:
        status = response.status_code
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
            + (f" {reason}" if reason else "") + _auth_hint(status)
        )

    def _scrub(self, text: str) -> str:
        return self._auth.scrub(text) if self._auth is not None else text

    def _excerpt(self, data: bytes | str, limit: int = EXCERPT_CHARS) -> str:
        """An excerpt of a body with the key scrubbed first (scrubbing after the cut would miss
        a key that the cut splits in two)."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        return excerpt(self._scrub(text), limit)

    def _rate_limited(self, response: requests.Response) -> RateLimited:
        retry_after = parse_retry_after(
            response.headers.get("Retry-After"), date_header=response.headers.get("Date")
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
                            self._excerpt(_dumped(item)),
                            extra={"event": "job_without_id"})
                continue
            jobs.append(job)
        return jobs


def _dumped(item: object) -> str:
    """``item`` as JSON text for a log excerpt (one read from a body always dumps, unless it is
    nested almost as deep as the JSON reader allows)."""
    try:
        return json.dumps(item)
    except (ValueError, RecursionError):
        return f"(a JSON {type(item).__name__} nested too deeply to show)"


def _stop_url_from(take_url: str) -> str | None:
    for part in ("/job-take-batch/", "/job-take/"):
        if part in take_url:
            return take_url.replace(part, "/job-stop/", 1)
    return None


def _auth_hint(status: int) -> str:
    return " (check AI_API_KEY / RUNPOD_AI_API_KEY)" if status in (401, 403) else ""
