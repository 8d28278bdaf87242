"""No job input can make the worker reach a private address, and no input image can hurt it.

The address classifier is tested on literal IPs of every class (no network). The fetcher is
tested against loopback servers (tests/support/image_server.py): a loopback URL is refused by
default and its server never sees a request; with ``allow_private`` it is fetched; redirects
are re-checked at every hop; a name is resolved once and the connection goes to the address that
was checked; https connects to the checked address and names the host in TLS. A stand-in
"public" host is a server on 127.0.0.2 that the test's classifier calls public, so no test
leaves the machine (tests/support/image_fetch_kit.py). Images: a decompression bomb, a
non-image, an oversized body and a trickling server are each refused, the last one at the
deadline (test_input_image_urls_content.py).
"""

from __future__ import annotations

import socket
import threading

import pytest

from adapters.http.addresses import ALLOWABLE, AddressClass, classify, refusal
from adapters.http.safe_fetch import FetchRefused
from tests.support.image_fetch_kit import STAND_IN_PUBLIC, fetcher, png
from tests.support.image_server import ImageServer, Route

Image = pytest.importorskip("PIL.Image")


# --- the address classifier, on literal addresses --------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("127.255.0.9", AddressClass.LOOPBACK),
        ("::1", AddressClass.LOOPBACK),
        ("10.1.2.3", AddressClass.PRIVATE),
        ("172.16.0.1", AddressClass.PRIVATE),
        ("172.31.255.254", AddressClass.PRIVATE),
        ("192.168.1.1", AddressClass.PRIVATE),
        ("fd12:3456::1", AddressClass.PRIVATE),
        ("169.254.1.1", AddressClass.LINK_LOCAL),
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("100.64.0.1", AddressClass.SHARED),
        ("100.127.255.254", AddressClass.SHARED),
        ("224.0.0.1", AddressClass.MULTICAST),
        ("239.255.255.250", AddressClass.MULTICAST),
        ("ff02::1", AddressClass.MULTICAST),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("::", AddressClass.UNSPECIFIED),
        ("169.254.169.254", AddressClass.METADATA),
        ("169.254.170.2", AddressClass.METADATA),
        ("fd00:ec2::254", AddressClass.METADATA),
        ("168.63.129.16", AddressClass.METADATA),
        ("100.100.100.200", AddressClass.METADATA),
        ("0.1.2.3", AddressClass.RESERVED),
        ("192.0.2.1", AddressClass.RESERVED),
        ("198.18.0.1", AddressClass.RESERVED),
        ("240.0.0.1", AddressClass.RESERVED),
        ("255.255.255.255", AddressClass.RESERVED),
        ("2001:db8::1", AddressClass.RESERVED),
        ("8.8.8.8", AddressClass.PUBLIC),
        ("172.32.0.1", AddressClass.PUBLIC),
        ("2606:4700:4700::1111", AddressClass.PUBLIC),
    ],
)
def test_every_address_class_is_recognised(address: str, kind: AddressClass) -> None:
    assert classify(address) is kind


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("::ffff:127.0.0.1", AddressClass.LOOPBACK),  # IPv4-mapped
        ("::ffff:169.254.169.254", AddressClass.METADATA),
        ("::ffff:10.0.0.1", AddressClass.PRIVATE),
        ("::127.0.0.1", AddressClass.LOOPBACK),  # IPv4-compatible (deprecated)
        ("2002:7f00:1::1", AddressClass.LOOPBACK),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", AddressClass.METADATA),  # 6to4 of 169.254.169.254
        ("64:ff9b::a00:1", AddressClass.PRIVATE),  # NAT64 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", AddressClass.METADATA),  # NAT64 of 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", AddressClass.LOOPBACK),  # Teredo, 127.0.0.1
        ("::ffff:8.8.8.8", AddressClass.PUBLIC),
    ],
)
def test_ipv6_forms_that_carry_an_ipv4_address_are_judged_by_it(
    address: str, kind: AddressClass
) -> None:
    assert classify(address) is kind


@pytest.mark.parametrize("kind", list(AddressClass))
def test_only_public_addresses_pass_by_default_and_the_allow_setting_lifts_only_lan_classes(
    kind: AddressClass,
) -> None:
    example = {
        AddressClass.PUBLIC: "8.8.8.8", AddressClass.LOOPBACK: "127.0.0.1",
        AddressClass.PRIVATE: "192.168.0.2", AddressClass.LINK_LOCAL: "fe80::2",
        AddressClass.SHARED: "100.64.1.1", AddressClass.MULTICAST: "224.0.0.251",
        AddressClass.UNSPECIFIED: "0.0.0.0", AddressClass.RESERVED: "240.1.2.3",
        AddressClass.METADATA: "169.254.169.254",
    }[kind]

    assert refusal(example, allow_private=False) == (None if kind is AddressClass.PUBLIC else kind)
    allowed = kind is AddressClass.PUBLIC or kind in ALLOWABLE
    assert refusal(example, allow_private=True) == (None if allowed else kind)


# --- fetching: private addresses ------------------------------------------------------------


def test_a_url_to_loopback_is_refused_by_default_and_never_requested(
    loopback: ImageServer,
) -> None:
    with pytest.raises(FetchRefused, match=r"127\.0\.0\.1: loopback addresses are not fetched"):
        fetcher().fetch(loopback.url("/cat.png"))
    assert loopback.requests == []


def test_a_name_resolving_to_loopback_is_refused(loopback: ImageServer) -> None:
    with pytest.raises(FetchRefused, match=r"localhost \(resolves to (127\.0\.0\.1|::1)\)"):
        fetcher().fetch(loopback.url("/cat.png", host="localhost"))
    assert loopback.requests == []


def test_with_the_allow_setting_a_loopback_url_is_fetched(loopback: ImageServer) -> None:
    fetched = fetcher(allow_private=True).fetch(loopback.url("/cat.png"))

    assert fetched.content == png()
    assert fetched.content_type == "image/png"


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.1:{port}/cat.png", "http://169.254.169.254/latest/meta-data/",
     "http://[::ffff:127.0.0.1]:{port}/cat.png", "http://0.0.0.0:{port}/cat.png",
     "http://10.0.0.1/x.png"],
)
def test_a_redirect_from_an_allowed_host_to_a_private_address_is_refused(
    public: ImageServer, loopback: ImageServer, target: str
) -> None:
    location = target.format(port=loopback.port)
    public.routes["/go"] = Route(302, headers={"Location": location})

    with pytest.raises(FetchRefused, match="addresses are not fetched"):
        fetcher().fetch(public.url("/go"))
    assert [path for path, _ in public.requests] == ["/go"]
    assert loopback.requests == []


def test_metadata_addresses_stay_refused_even_with_the_allow_setting(
    loopback: ImageServer,
) -> None:
    loopback.routes["/go"] = Route(301, headers={"Location": "http://169.254.169.254/latest/"})
    with pytest.raises(FetchRefused, match="cloud metadata service addresses are not fetched"):
        fetcher(allow_private=True).fetch(loopback.url("/go"))

    def metadata_dns(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    with pytest.raises(FetchRefused, match=r"metadata\.google\.internal \(resolves to"):
        fetcher(allow_private=True, resolve=metadata_dns).fetch(
            "http://metadata.google.internal/computeMetadata/v1/"
        )


def test_a_relative_redirect_on_an_allowed_host_is_followed(public: ImageServer) -> None:
    public.routes["/old"] = Route(308, headers={"Location": "/cat.png"})

    fetched = fetcher().fetch(public.url("/old"))

    assert fetched.content == png()
    assert fetched.url == public.url("/cat.png")


def test_a_redirect_loop_stops_at_the_redirect_limit(public: ImageServer) -> None:
    public.routes["/loop"] = Route(302, headers={"Location": "/loop"})

    with pytest.raises(FetchRefused, match="more than 3 redirects"):
        fetcher(max_redirects=3).fetch(public.url("/loop"))
    assert len(public.requests) == 4


def test_a_name_is_resolved_once_and_every_address_it_has_is_checked(public: ImageServer) -> None:
    calls: list[str] = []

    def two_faced(host: str, port: int) -> list[str]:
        calls.append(host)
        return [STAND_IN_PUBLIC, "127.0.0.1"]

    with pytest.raises(FetchRefused, match=r"resolves to 127\.0\.0\.1\): loopback"):
        fetcher(resolve=two_faced).fetch(public.url("/cat.png", host="images.example"))
    assert calls == ["images.example"]
    assert public.requests == []


def test_the_connection_goes_to_the_checked_address_whatever_dns_says_later(
    public: ImageServer,
) -> None:
    answers = iter([[STAND_IN_PUBLIC]])  # a second lookup (rebinding) would find nothing

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers, ["127.0.0.1"])

    fetched = fetcher(resolve=rebinding).fetch(public.url("/cat.png", host="images.example"))

    assert fetched.content == png()
    # the name "images.example" exists nowhere else: the connect used the checked address,
    # while the Host header kept the URL's name
    assert public.requests == [("/cat.png", f"images.example:{public.port}")]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("gopher://127.0.0.1:70/", "only http and https"),
        ("http://user:pw@127.0.0.2/cat.png", "user name or password"),
        ("http:///cat.png", "names no host"),
        ("http://127.0.0.2:99999/", "not a valid URL"),
    ],
)
def test_urls_of_other_kinds_are_refused_before_any_connection(url: str, message: str) -> None:
    with pytest.raises(FetchRefused, match=message):
        fetcher().fetch(url)


def test_refusals_name_the_host_never_the_path_or_query(loopback: ImageServer) -> None:
    with pytest.raises(FetchRefused) as caught:
        fetcher().fetch(loopback.url("/private/cat.png?token=s3cr3t"))
    assert "s3cr3t" not in str(caught.value) and "private" not in str(caught.value)


def test_https_connects_to_the_checked_address_and_names_the_host_in_tls() -> None:
    """The TLS ClientHello (sent in clear) carries the URL's name as SNI, so the certificate is
    checked against the name, while the TCP connection went to the address that was checked."""
    hello: list[bytes] = []
    with socket.socket() as listener:
        listener.bind((STAND_IN_PUBLIC, 0))
        listener.listen(1)
        listener.settimeout(30)
        port = listener.getsockname()[1]

        def accept_one() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                hello.append(conn.recv(4096))

        thread = threading.Thread(target=accept_one, daemon=True)
        thread.start()
        with pytest.raises(FetchRefused, match=r"images\.example"):
            fetcher(resolve=lambda host, port: [STAND_IN_PUBLIC]).fetch(
                f"https://images.example:{port}/cat.png"
            )
        thread.join(timeout=30)

    assert hello and hello[0][:1] == b"\x16"  # a TLS handshake record
    assert b"images.example" in hello[0]
