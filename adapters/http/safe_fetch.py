"""Fetching a URL a job gave, without letting the job reach into the pod's own network.

A job's URL is chosen by whoever sends jobs, and the worker fetches it from inside the pod: a
URL naming ``127.0.0.1``, a LAN address or the cloud's metadata service (``169.254.169.254``,
which hands out credentials) would make the worker a proxy into places the sender cannot reach.
So, for every hop (the first URL and each redirect):

- only ``http`` and ``https``, no user name or password in the URL;
- the host is **resolved once**, **every** address it resolves to is classified
  (:func:`adapters.http.addresses.classify`), and the hop is refused when any is loopback, private,
  link-local, shared (CGNAT), multicast, unspecified, reserved or a cloud metadata address
  (IPv6 forms that carry an IPv4 address, such as ``::ffff:127.0.0.1``, 6to4, Teredo and NAT64,
  are judged by that address). ``allow_private`` lets loopback, private, link-local and shared
  addresses through (an image server on the LAN); metadata, multicast, unspecified and reserved
  addresses never;
- the connection goes to **the address that was checked**: the TCP connect uses it, while the
  ``Host`` header, TLS's server name and the certificate check keep the URL's host name. A DNS
  answer that changes between the check and the connect (DNS rebinding) changes nothing;
- proxies (``*_PROXY``) are not used: a proxy would resolve the name itself, unchecked;
- redirects are followed here, at most ``max_redirects``, each target checked as above;
- one **overall deadline** covers resolving, connecting and reading every hop, and the body has
  a **size cap** (:class:`adapters.http.client.HttpClient` enforces both per request: a server
  that trickles a byte a second is cut at the deadline; an endless body is dropped at the cap).

Errors: :class:`FetchRefused`, whose message is safe to return to the job's sender (it names
the host and the reason, never the path or the query, never what a private address answered).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3

from adapters.http.addresses import ALLOWABLE, AddressClass, IPAddress, classify, refusal
from adapters.http.client import (
    DeadlineExceeded,
    GuardedHTTPPool,
    GuardedHTTPSPool,
    HttpClient,
    HttpFailure,
    OnCancel,
    Response,
    Sink,
)

IMAGE_TYPES = "image/png, image/jpeg, image/webp"
"""The ``Accept`` header of a fetch unless the caller names another."""

Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``: how host names are resolved (tests pass their own)."""


class FetchRefused(Exception):
    """The URL was not fetched, or its answer not accepted. ``str()`` is safe to show the sender:
    it names the host and the reason, never the path or the query."""


@dataclass(frozen=True)
class FetchPolicy:
    """Limits on one fetch (all of its hops together).

    - ``deadline_s``: resolving, connecting and reading every hop, from the first byte sent;
    - ``max_bytes``: the body of the final answer;
    - ``max_redirects``: hops after the first;
    - ``allow_private``: let loopback, private, link-local and shared addresses through.
    """

    deadline_s: float = 15.0
    max_bytes: int = 10_000_000
    max_redirects: int = 5
    allow_private: bool = False


@dataclass(frozen=True)
class Fetched:
    content: bytes  # empty when the body went to the fetch's ``sink``
    content_type: str  # lower case, without parameters; "" when the answer named none
    url: str  # the final URL, after redirects


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, each once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class SafeFetcher:
    """GETs URLs under a :class:`FetchPolicy`, refusing every address the policy forbids."""

    REDIRECTS = frozenset({301, 302, 303, 307, 308})

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        resolve: Resolver = system_resolver,
        monotonic: Callable[[], float] = time.monotonic,
        classify: Callable[[str | IPAddress], AddressClass] = classify,
    ) -> None:
        """``resolve``, ``monotonic`` and ``classify`` are for tests (a test's loopback server
        can stand in for a public host by being classified public)."""
        self.policy = policy
        self._resolve = resolve
        self._monotonic = monotonic
        self._classify = classify

    def fetch(self, url: str, *, accept: str = IMAGE_TYPES, sink: Sink | None = None,
              on_cancel: OnCancel | None = None) -> Fetched:
        """The body at ``url``, following redirects. Raises :class:`FetchRefused`.

        ``accept`` is the ``Accept`` header sent (images by default). ``sink``: the final
        answer's body is written there as it arrives, never held whole (a large file); after
        a refusal, what it got is incomplete and the caller drops it. ``on_cancel`` (a job's
        ``on_cancel``): a cancel cuts the fetch at once, a refusal."""
        deadline = self._monotonic() + self.policy.deadline_s
        for _hop in range(self.policy.max_redirects + 1):
            host, port = _checked_url(url)
            address = self._checked_address(host, port, deadline)
            left = deadline - self._monotonic()
            if left <= 0:
                raise FetchRefused(f"{host}: no answer within {self.policy.deadline_s:g} s")
            response = _get(url, address, left, self.policy.max_bytes, self.policy.deadline_s,
                            accept, sink, on_cancel)
            if response.status in self.REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise FetchRefused(f"{host}: redirect (HTTP {response.status}) with no target")
                url = urljoin(url, location.strip())
                continue
            if not 200 <= response.status < 300:
                raise FetchRefused(f"{host}: answered HTTP {response.status}")
            content_type = response.headers.get("content-type", "")
            kind = content_type.split(";")[0].strip().lower()
            return Fetched(response.content, kind, url)
        raise FetchRefused(f"more than {self.policy.max_redirects} redirects")

    def _checked_address(self, host: str, port: int, deadline: float) -> str:
        """The address to connect to: the first ``host`` resolves to, all of them checked."""
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            addresses = _resolve_by(self._resolve, host, port, deadline - self._monotonic())
        if not addresses:
            raise FetchRefused(f"{host}: the name resolves to no address")
        for address in addresses:
            kind = refusal(address.split("%")[0], allow_private=self.policy.allow_private,
                           classify=self._classify)
            if kind is not None:
                shown = host if host == address else f"{host} (resolves to {address})"
                raise FetchRefused(
                    f"{shown}: {kind} addresses are not fetched"
                    + ("" if kind not in ALLOWABLE else " (INPUT_URL_ALLOW_PRIVATE is off)")
                )
        return addresses[0]


def _checked_url(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchRefused("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs are fetched (got {parts.scheme or 'none'})")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("URLs with a user name or password are not fetched")
    host = parts.hostname
    if not host:
        raise FetchRefused("the URL names no host")
    return host, port or (443 if parts.scheme == "https" else 80)


def _resolve_by(resolve: Resolver, host: str, port: int, timeout_s: float) -> list[str]:
    """``resolve(host, port)`` within ``timeout_s`` (the system resolver has no timeout of its
    own; a hung lookup is left to finish on its daemon thread)."""
    result: dict[str, Any] = {}

    def lookup() -> None:
        try:
            result["addresses"] = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            result["error"] = exc

    thread = threading.Thread(target=lookup, name="fetch-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, timeout_s))
    if thread.is_alive():
        raise FetchRefused(f"{host}: the name did not resolve in time")
    if "error" in result:
        raise FetchRefused(f"{host}: the name does not resolve")
    return list(result["addresses"])


def _get(url: str, address: str, left_s: float, max_bytes: int, whole_s: float,
         accept: str, sink: Sink | None, on_cancel: OnCancel | None) -> Response:
    host = urlsplit(url).hostname or "?"
    client = _PinnedClient(address)
    try:
        return client.request("GET", url, deadline_s=left_s, max_answer_bytes=max_bytes,
                              headers={"Accept": accept}, sink=sink, on_cancel=on_cancel)
    except DeadlineExceeded:
        raise FetchRefused(f"{host}: no complete answer within {whole_s:g} s") from None
    except HttpFailure as exc:
        raise FetchRefused(f"{host}: {exc}") from None
    finally:
        client.close()


class _PinnedClient(HttpClient):
    """An :class:`HttpClient` whose connections go to ``address`` whatever the URL's host name
    resolves to now (the name still goes in ``Host``, in TLS's SNI and in the certificate
    check), and never through a proxy."""

    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__(max_connections=1)

    def _manager(self, proxy: str | None) -> urllib3.PoolManager:
        manager = super()._manager(None)
        manager.pool_classes_by_scheme = {
            "http": _pinned(GuardedHTTPPool, self._address),
            "https": _pinned(GuardedHTTPSPool, self._address),
        }
        return manager

    def _for(self, url: str) -> urllib3.PoolManager:
        return self._direct


def _pinned(pool_class: type[Any], address: str) -> type[Any]:
    """``pool_class`` whose connections' TCP connect goes to ``address``.

    urllib3 connects to ``_dns_host`` and uses ``host`` (the same attribute, read back) for the
    ``Host`` header, TLS's server name and the certificate check; the address is put in only
    for the connect, so all of those keep the URL's name.
    """

    class PinnedConnection(pool_class.ConnectionCls):  # type: ignore[misc, name-defined]
        _dns_host: str

        def _new_conn(self) -> Any:
            name = self._dns_host
            self._dns_host = address
            try:
                return super()._new_conn()
            finally:
                self._dns_host = name

    class PinnedPool(pool_class):  # type: ignore[misc]
        ConnectionCls = PinnedConnection

    return PinnedPool
