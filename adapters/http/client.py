"""One HTTP client policy for every call podworker makes to the job API and to pod control.

Why it exists: ``requests``' read timeout applies to each socket read, so a server that trickles
a byte a second never trips it, and it reads bodies whole, so an endless answer grows the
process until it dies. Here every request has

- an **overall deadline**, connect and whole answer together: a watchdog thread
  (:mod:`adapters.http.deadlines`) shuts the socket down at the deadline, which ends even a read
  that keeps receiving a byte at a time (under TLS too, where per-read timeouts cannot change
  mid-request);
- a **size cap** on the answer, read as a stream: past it the connection is dropped and
  ``AnswerTooLarge`` raised, having held at most the cap plus one chunk in memory (or, with a
  ``sink``, one chunk: a 2xx body is written there as it arrives, never held whole);
- no hidden retries and no redirects (the callers' schedules retry; a redirect could carry the
  key elsewhere), TLS always verified (certifi's bundle, or ``SSL_CERT_FILE`` /
  ``REQUESTS_CA_BUNDLE``), keep-alive connections pooled per host, proxies from the standard
  ``*_PROXY`` variables.

Built on urllib3 directly (requests' own transport): it exposes the connection a request runs
on, which the watchdog needs, and costs about a third of requests' per-call CPU, which is most
of a no-op job's time at hundreds of jobs a second.

Errors: :class:`HttpFailure` (could not connect, timed out, broken answer, too large) carries a
description that never contains the URL's path or query; callers turn it into their domain
error (``ApiUnavailable``, ``PodControlUnavailable``).
"""

from __future__ import annotations

import os
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import certifi
import urllib3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from adapters.http.deadlines import WATCHDOG, Guard

USER_AGENT = "podworker/0.2"
CHUNK = 64 * 1024
ERROR_EXCERPT_BYTES = 64 * 1024
"""Of an answer that is not 2xx only this much is read (for an excerpt); the rest is dropped."""
_current = threading.local()


class HttpFailure(Exception):
    """The request got no complete, acceptable answer. ``str()`` names no URL."""


class DeadlineExceeded(HttpFailure):
    """No complete answer within the request's overall deadline."""


class AnswerTooLarge(HttpFailure):
    """The answer's body was larger than the caller's cap; it was abandoned unread.

    ``status`` is the answer's status code (a ``2xx`` still means the request was accepted).
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Cancelled(HttpFailure):
    """The caller cancelled the request (its job was stopped) before the answer was whole."""


OnCancel = Callable[[Callable[[], object]], object]
"""Registers a hook to call when the caller's work is cancelled (``RunningJob.on_cancel``)."""


class Sink(Protocol):
    """Where a large body goes as it arrives (an open file, a hashing writer)."""

    def write(self, chunk: bytes, /) -> object: ...


@dataclass(frozen=True)
class Response:
    """A complete answer: status, headers (lower-case names), the whole (capped) body (empty
    when a 2xx body went to the request's ``sink``)."""

    status: int
    headers: Mapping[str, str]
    content: bytes = field(repr=False)
    url: str = field(repr=False)


class GuardedHTTPPool(HTTPConnectionPool):
    """A connection pool that tells the running request's guard which connection it uses."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        guard = getattr(_current, "guard", None)
        if guard is not None:
            guard.conn = conn
        return super()._make_request(conn, *args, **kwargs)


class GuardedHTTPSPool(HTTPSConnectionPool):
    """The same, over TLS."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        guard = getattr(_current, "guard", None)
        if guard is not None:
            guard.conn = conn
        return super()._make_request(conn, *args, **kwargs)


def _ca_bundle() -> str:
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        value = os.environ.get(name)
        if value and os.path.isfile(value):
            return value
    return certifi.where()


class HttpClient:
    """Pooled keep-alive HTTP with an overall deadline and a size cap on every request."""

    def __init__(self, *, max_connections: int = 8, user_agent: str = USER_AGENT) -> None:
        self._headers = {"User-Agent": user_agent}
        self._max_connections = max_connections
        self._ca = _ca_bundle()
        self._direct = self._manager(None)
        self._proxies = urllib.request.getproxies()  # read once: scanning the environment
        # on every request cost a measurable share of the post thread
        self._proxied: dict[str, urllib3.PoolManager] = {}
        self._lock = threading.Lock()

    def _manager(self, proxy: str | None) -> urllib3.PoolManager:
        options: dict[str, Any] = {
            "num_pools": 8, "maxsize": self._max_connections, "cert_reqs": "CERT_REQUIRED",
            "ca_certs": self._ca, "retries": False,
        }
        manager = (urllib3.ProxyManager(proxy, **options) if proxy
                   else urllib3.PoolManager(**options))
        manager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}
        return manager

    def _for(self, url: str) -> urllib3.PoolManager:
        if not self._proxies:  # the usual case: no proxy variable set, nothing to look up
            return self._direct
        parts = urlsplit(url)
        proxy = self._proxies.get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
            return self._direct
        with self._lock:
            if proxy not in self._proxied:
                self._proxied[proxy] = self._manager(proxy)
            return self._proxied[proxy]

    def request(
        self,
        method: str,
        url: str,
        *,
        deadline_s: float,
        max_answer_bytes: int,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float | None = None,
        sink: Sink | None = None,
        on_cancel: OnCancel | None = None,
    ) -> Response:
        """Send one request; the whole answer within ``deadline_s`` seconds and
        ``max_answer_bytes`` bytes, or ``HttpFailure``. With ``sink``, a 2xx body is written
        there chunk by chunk (an answer cut short leaves part of it written: the caller
        discards it) and the response's ``content`` is empty. With ``on_cancel``, a cancel
        cuts the request at once (``Cancelled``), whatever it is waiting for."""
        started = time.monotonic()
        guard = Guard(started + deadline_s)
        connect = min(connect_timeout_s or deadline_s, deadline_s)
        timeout = urllib3.Timeout(connect=connect, read=deadline_s)
        all_headers = {**self._headers, **(headers or {})}
        _current.guard = guard
        WATCHDOG.arm(guard)
        cancelled = threading.Event()
        if on_cancel is not None:

            def cut() -> None:
                cancelled.set()
                WATCHDOG.expire(guard)

            on_cancel(cut)
        response: Any = None
        try:
            response = self._for(url).urlopen(
                method, url, body=body, headers=all_headers, redirect=False, retries=False,
                timeout=timeout, preload_content=False, assert_same_host=False,
            )
            ok = 200 <= response.status < 300
            content = _read_capped(response, max_answer_bytes if ok else ERROR_EXCERPT_BYTES,
                                   guard, truncate=not ok, sink=sink if ok else None)
            answer_headers = {k.lower(): v for k, v in response.headers.items()}
            result = Response(response.status, answer_headers, content, url)
            response.release_conn()
            return result
        except HttpFailure:
            _discard(response)
            if cancelled.is_set():
                raise Cancelled("cancelled before the answer was whole") from None
            raise
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            _discard(response)
            if cancelled.is_set():
                raise Cancelled("cancelled before the answer was whole") from None
            if guard.expired:
                raise DeadlineExceeded(
                    f"timed out: no complete answer within {deadline_s:g} s"
                ) from None
            raise HttpFailure(describe(exc)) from None
        finally:
            guard.done = True
            _current.guard = None

    def close(self) -> None:
        self._direct.clear()
        with self._lock:
            for manager in self._proxied.values():
                manager.clear()


def _read_capped(response: Any, cap: int, guard: Guard, *, truncate: bool,
                 sink: Sink | None = None) -> bytes:
    """The body, at most ``cap`` bytes: past it, cut (``truncate``) or ``AnswerTooLarge``.
    With ``sink`` (never together with ``truncate``) each chunk is written there instead of
    kept, and the body returned is empty."""
    declared = response.headers.get("Content-Length")
    if not truncate and declared is not None and declared.isdigit() and int(declared) > cap:
        raise AnswerTooLarge(f"answer of {int(declared)} bytes is over the {cap}-byte limit",
                             response.status)
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = response.read1(CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > cap:
            if truncate:
                parts.append(chunk[: cap - size + len(chunk)])
                response.shutdown()  # the rest is not read: this connection cannot be reused
                response.close()
                break
            raise AnswerTooLarge(f"answer over the {cap}-byte limit (abandoned unread)",
                                 response.status)
        if sink is None:
            parts.append(chunk)
        else:
            sink.write(chunk)
        if guard.expired:
            raise DeadlineExceeded(f"no complete answer by the deadline ({size} bytes read)")
    return b"".join(parts)


def _discard(response: Any) -> None:
    """Drop a response's connection without reading the rest of it."""
    if response is None:
        return
    try:
        response.shutdown()
        response.close()
        response.release_conn()
    except Exception:  # the connection is being thrown away anyway
        pass


def describe(exc: BaseException) -> str:
    """What went wrong, in words that contain no URL (urllib3's own messages contain it)."""
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: a refused connection is
    # told apart before a timeout
    if isinstance(exc, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
        return "connection failed"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "connect timed out"
    if isinstance(exc, urllib3.exceptions.SSLError | ssl.SSLError):
        return "TLS failed (certificate not verified?)"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | TimeoutError):
        return "read timed out"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection broken"
    if isinstance(exc, urllib3.exceptions.LocationParseError | ValueError):
        return "invalid URL"
    return f"request failed ({type(exc).__name__})"
