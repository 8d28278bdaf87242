"""No job input can make the worker reach a private address, and no input image can hurt it.

The address classifier is tested on literal IPs of every class (no network). The fetcher is
tested against loopback servers (tests/support/image_server.py): a loopback URL is refused by
default and its server never sees a request; with ``allow_private`` it is fetched; redirects
are re-checked at every hop; a name is resolved once and the connection goes to the address that
was checked. A stand-in "public" host is a server on 127.0.0.2 that the test's classifier calls
public, so no test leaves the machine. Images: a decompression bomb, a non-image, an oversized
body and a trickling server are each refused, the last one at the deadline.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.addresses import ALLOWABLE, AddressClass, IPAddress, classify, refusal
from adapters.image_inputs import ImageInputLimits, ImageLoader
from adapters.safe_fetch import FetchPolicy, FetchRefused, SafeFetcher
from domain.errors import InvalidInput
from tests.support.image_server import ImageServer, Route

Image = pytest.importorskip("PIL.Image")

STAND_IN_PUBLIC = "127.0.0.2"


def png(size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


PNG = {"Content-Type": "image/png"}


def public_stand_in(address: str | IPAddress) -> AddressClass:
    return AddressClass.PUBLIC if str(address) == STAND_IN_PUBLIC else classify(address)


def fetcher(allow_private: bool = False, resolve: Any = None, **policy: Any) -> SafeFetcher:
    extra = {"resolve": resolve} if resolve else {}
    return SafeFetcher(FetchPolicy(allow_private=allow_private, **{"deadline_s": 10.0, **policy}),
                       classify=public_stand_in, **extra)


@pytest.fixture
def loopback() -> Iterator[ImageServer]:
    with ImageServer({"/cat.png": Route(body=png(), headers=PNG)}) as server:
        yield server


@pytest.fixture
def public() -> Iterator[ImageServer]:
    with ImageServer({"/cat.png": Route(body=png(), headers=PNG)}, host=STAND_IN_PUBLIC) as server:
        yield server


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


# --- fetching: what comes back --------------------------------------------------------------


def loader(fetch: SafeFetcher | None, **limits: Any) -> ImageLoader:
    return ImageLoader(ImageInputLimits(**limits), fetch)


def test_with_fetching_off_a_url_is_refused_and_nothing_is_requested(
    loopback: ImageServer,
) -> None:
    with pytest.raises(InvalidInput, match="init_image: URLs are not fetched by this worker"):
        loader(None).load("init_image", loopback.url("/cat.png"))
    assert loopback.requests == []


def test_a_fetched_image_is_decoded(public: ImageServer) -> None:
    image = loader(fetcher()).load("init_image", public.url("/cat.png"))
    assert image.size == (8, 8) and image.mode == "RGB"


def test_a_non_image_answer_is_refused_by_its_content_type(public: ImageServer) -> None:
    public.routes["/page"] = Route(body=b"<html>hi</html>", headers={"Content-Type": "text/html"})

    with pytest.raises(InvalidInput, match="init_image: the URL answered 'text/html', not an "):
        loader(fetcher()).load("init_image", public.url("/page"))


def test_a_non_image_under_an_image_content_type_is_refused_by_its_bytes(
    public: ImageServer,
) -> None:
    public.routes["/fake.png"] = Route(body=b"#!/bin/sh\necho hi\n", headers=PNG)

    with pytest.raises(InvalidInput, match="mask: not a PNG, JPEG or WEBP image"):
        loader(fetcher()).load("mask", public.url("/fake.png"))


def test_an_oversized_body_is_refused(public: ImageServer) -> None:
    public.routes["/huge.png"] = Route(body=png() + bytes(300_000), headers=PNG)

    with pytest.raises(InvalidInput, match=r"could not be fetched: .*over the 100000-byte limit"):
        loader(fetcher(max_bytes=100_000)).load("init_image", public.url("/huge.png"))


def test_a_trickling_server_is_cut_at_the_deadline(public: ImageServer) -> None:
    public.routes["/slow.png"] = Route(body=png(), headers=PNG, trickle_s=0.2)
    started = time.monotonic()

    with pytest.raises(FetchRefused, match="no complete answer within 1 s"):
        fetcher(deadline_s=1.0).fetch(public.url("/slow.png"))

    assert time.monotonic() - started < 6.0  # the deadline (1 s) plus generous slack
    assert len(png()) * 0.2 > 6.0  # the whole body would have taken much longer


def test_the_deadline_covers_every_hop_together(public: ImageServer) -> None:
    public.routes["/hop"] = Route(302, headers={"Location": "/slow.png"})
    public.routes["/slow.png"] = Route(body=png(), headers=PNG, trickle_s=0.2)

    with pytest.raises(FetchRefused, match="within 1 s"):
        fetcher(deadline_s=1.0).fetch(public.url("/hop"))


# --- decoding, whatever the source ----------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bomb(side: int) -> bytes:
    """A PNG of ``side`` x ``side`` one-bit pixels: a few KB that unpack to side**2 pixels."""
    out = io.BytesIO()
    Image.new("1", (side, side), 0).save(out, "PNG", optimize=True)
    return out.getvalue()


def test_a_decompression_bomb_is_refused_from_its_header_before_decoding() -> None:
    data = bomb(6000)  # 36 million pixels
    assert len(data) < 100_000

    with pytest.raises(InvalidInput, match="init_image: 6000x6000 is 36000000 pixels, more than "
                                           "the limit of 16777216"):
        loader(None).load("init_image", b64(data))


def test_a_bomb_past_pillows_own_limit_is_refused_cleanly_too() -> None:
    small = bomb(64)
    # rewrite the IHDR's size to 200000 x 200000 (40 billion pixels), with a valid checksum;
    # the image data never matters
    at = small.index(b"IHDR")
    fields = (200_000).to_bytes(4, "big") * 2 + small[at + 12 : at + 17]
    forged = (small[: at + 4] + fields + zlib.crc32(b"IHDR" + fields).to_bytes(4, "big")
              + small[at + 21 :])

    with pytest.raises(InvalidInput, match=r"init_image: more pixels than the limit of 10{12} "
                                           r"\(a decompression bomb\?\)"):
        loader(None, max_pixels=10**12).load("init_image", b64(forged))


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_formats_outside_png_jpeg_and_webp_are_refused(fmt: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, fmt)

    with pytest.raises(InvalidInput, match="not a PNG, JPEG or WEBP image"):
        loader(None).load("init_image", b64(out.getvalue()))


def test_base64_longer_than_the_byte_limit_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidInput, match="larger than the limit of 1000 bytes"):
        loader(None, max_bytes=1000).load("init_image", "A" * 10_000)


def test_a_truncated_image_is_refused() -> None:
    out = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(out, "JPEG")
    with pytest.raises(InvalidInput, match="does not decode"):
        loader(None).load("init_image", b64(out.getvalue()[: len(out.getvalue()) // 2]))


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
