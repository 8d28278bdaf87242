"""What a fetched URL brings back, and input images whatever their source, cannot hurt the worker.

With fetching off a URL is refused and nothing is requested; a fetched image is decoded; a
non-image (by its content type or its bytes), an oversized body and a trickling server are each
refused, the last one at the deadline, which covers every redirect hop together. Decoding: a
decompression bomb is refused from its header, formats other than PNG, JPEG and WEBP, base64
past the byte limit and truncated images are refused. The fetching rules for addresses are in
test_input_image_urls.py.
"""

from __future__ import annotations

import base64
import io
import time
import zlib

import pytest

from adapters.http.safe_fetch import FetchRefused
from domain.errors import InvalidInput
from tests.support.image_fetch_kit import PNG, fetcher, loader, png
from tests.support.image_server import ImageServer, Route

Image = pytest.importorskip("PIL.Image")


# --- fetching: what comes back --------------------------------------------------------------


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
