"""Fetchers, loaders and image servers for tests/security/test_input_image_urls*.py.

A stand-in "public" host is a server on 127.0.0.2 that the fetcher's classifier
(:func:`public_stand_in`) calls public, so no test leaves the machine. The fixtures (registered
in tests/conftest.py) are ``loopback``, a server on 127.0.0.1, and ``public``, one on the
stand-in public address; both serve an 8x8 PNG at ``/cat.png``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.http.addresses import AddressClass, IPAddress, classify
from adapters.http.safe_fetch import FetchPolicy, SafeFetcher
from adapters.stable_diffusion.input_images import ImageInputLimits, ImageLoader
from tests.support.image_server import ImageServer, Route

STAND_IN_PUBLIC = "127.0.0.2"
PNG = {"Content-Type": "image/png"}


def png(size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def public_stand_in(address: str | IPAddress) -> AddressClass:
    return AddressClass.PUBLIC if str(address) == STAND_IN_PUBLIC else classify(address)


def fetcher(allow_private: bool = False, resolve: Any = None, **policy: Any) -> SafeFetcher:
    extra = {"resolve": resolve} if resolve else {}
    return SafeFetcher(FetchPolicy(allow_private=allow_private, **{"deadline_s": 10.0, **policy}),
                       classify=public_stand_in, **extra)


def loader(fetch: SafeFetcher | None, **limits: Any) -> ImageLoader:
    return ImageLoader(ImageInputLimits(**limits), fetch)


@pytest.fixture
def loopback() -> Iterator[ImageServer]:
    with ImageServer({"/cat.png": Route(body=png(), headers=PNG)}) as server:
        yield server


@pytest.fixture
def public() -> Iterator[ImageServer]:
    with ImageServer({"/cat.png": Route(body=png(), headers=PNG)}, host=STAND_IN_PUBLIC) as server:
        yield server
