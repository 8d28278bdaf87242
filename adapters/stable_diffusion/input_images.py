"""Images a job sends (``init_image``, ``mask``): read, fetched and decoded without surprises.

A reference is one of

- a **data URL**, ``data:image/png;base64,...`` (always accepted);
- **plain base64** of the file's bytes (always accepted; whitespace and line breaks ignored);
- an **http(s) URL**, only when the setting ``INPUT_URL_FETCH`` is on, fetched by
  :class:`adapters.http.safe_fetch.SafeFetcher` (no private addresses, a deadline, a size cap).

Whatever the source, the bytes are then checked before they cost anything:

- at most ``max_bytes`` (for base64, checked on the text's length before decoding);
- a fetched answer's ``Content-Type`` must be an image type (or a generic binary type, which
  object stores often send);
- the format, read from the bytes themselves, must be PNG, JPEG or WebP (Pillow is told to try
  no other decoder);
- the pixel count, read from the header, must be at most ``max_pixels`` **before** the image is
  decoded: a 50 KB PNG that unpacks to 100 000 x 100 000 pixels (a decompression bomb) is
  refused having cost nothing; Pillow's own bomb check stays on behind it;
- the image must then decode completely (a truncated or corrupt file is refused).

Errors are ``InvalidInput`` naming the field: ``invalid input: init_image: not a PNG, JPEG or
WebP image``. Pillow is imported when an image is loaded, not at import.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

from adapters.http.safe_fetch import FetchRefused, SafeFetcher
from domain.errors import InvalidInput

FORMATS = ("PNG", "JPEG", "WEBP")
CONTENT_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/webp",
     "application/octet-stream", "binary/octet-stream", ""}
)
"""What a fetched answer's Content-Type may be ("": none given). The bytes decide the format."""

_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)"
                       r";base64,(?P<data>.*)", re.DOTALL | re.IGNORECASE)
_BASE64 = re.compile(r"[A-Za-z0-9+/\s]+=*\s*")


@dataclass(frozen=True)
class ImageInputLimits:
    """Bounds on one input image.

    - ``max_bytes``: the encoded file (decoded base64, or a fetched body);
    - ``max_pixels``: width x height, checked from the header before decoding.
    """

    max_bytes: int = 10_000_000
    max_pixels: int = 4096 * 4096

    @property
    def max_base64_chars(self) -> int:
        return (self.max_bytes + 2) // 3 * 4 + 1024  # line breaks and a data URL's header


def reference_kind(value: str) -> str:
    """``"url"``, ``"data"`` (a data URL) or ``"base64"``: what a reference looks like."""
    head = value[:16].lstrip().lower()
    if head.startswith(("http://", "https://")):
        return "url"
    if head.startswith("data:"):
        return "data"
    return "base64"


def describe_reference_problem(value: Any, *, fetch_urls: bool) -> str | None:
    """What is wrong with ``value`` as an image reference, from its shape alone, or None.

    Cheap enough for an input schema: nothing is decoded or fetched.
    """
    if not isinstance(value, str):
        return "must be a string: base64, a data URL (data:image/png;base64,...) or a URL"
    if not value.strip():
        return "must not be empty"
    kind = reference_kind(value)
    if kind == "url" and not fetch_urls:
        return ("URLs are not fetched by this worker (INPUT_URL_FETCH is off): send the image "
                "as base64 or a data URL")
    if kind == "data" and not _DATA_URL.fullmatch(value.strip()):
        return "a data URL must be data:<type>;base64,<data>"
    if kind == "base64" and not _BASE64.fullmatch(value[:4096]):
        return ("must be base64, a data URL (data:image/png;base64,...)"
                + (" or an http(s) URL" if fetch_urls else ""))
    return None


class ImageLoader:
    """Turns references into decoded RGB or L Pillow images, under :class:`ImageInputLimits`.

    ``fetcher`` is None when URLs are not fetched (``INPUT_URL_FETCH`` off).
    """

    def __init__(self, limits: ImageInputLimits, fetcher: SafeFetcher | None = None) -> None:
        self.limits = limits
        self.fetcher = fetcher

    def load(self, field: str, reference: str, *, mode: str = "RGB") -> Any:
        """The image ``reference`` holds, converted to ``mode``. Raises ``InvalidInput``."""
        try:
            return decode_image(self.read(reference), self.limits, mode=mode)
        except _Refused as exc:
            raise InvalidInput(f"invalid input: {field}: {exc}") from None

    def read(self, reference: str) -> bytes:
        """The file's bytes behind ``reference``. Raises ``_Refused``."""
        problem = describe_reference_problem(reference, fetch_urls=self.fetcher is not None)
        if problem:
            raise _Refused(problem)
        kind = reference_kind(reference)
        if kind == "url":
            assert self.fetcher is not None  # describe_reference_problem refused it otherwise
            try:
                fetched = self.fetcher.fetch(reference.strip())
            except FetchRefused as exc:
                raise _Refused(f"could not be fetched: {exc}") from None
            if fetched.content_type not in CONTENT_TYPES:
                raise _Refused(f"the URL answered {fetched.content_type!r}, not an image")
            return fetched.content
        if len(reference) > self.limits.max_base64_chars:
            raise _Refused(f"larger than the limit of {self.limits.max_bytes} bytes")
        text = reference.strip()
        if kind == "data":
            match = _DATA_URL.fullmatch(text)
            assert match is not None  # checked by describe_reference_problem
            text = match.group("data")
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise _Refused("is not valid base64") from None
        if len(data) > self.limits.max_bytes:
            raise _Refused(f"larger than the limit of {self.limits.max_bytes} bytes")
        return data


class _Refused(Exception):
    """An image that is not accepted; the message completes ``invalid input: <field>: ``."""


def decode_image(data: bytes, limits: ImageInputLimits, *, mode: str = "RGB") -> Any:
    """Decode ``data`` (PNG, JPEG or WebP, at most ``limits.max_pixels``) into ``mode``.

    The first frame of an animated image; EXIF orientation applied. Raises ``_Refused``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise _Refused("is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _Refused(f"more pixels than the limit of {limits.max_pixels} (a decompression "
                       "bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise _Refused(f"not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image") from None
    width, height = image.size
    if width < 1 or height < 1 or width * height > limits.max_pixels:
        image.close()
        raise _Refused(f"{width}x{height} is {width * height} pixels, more than the limit of "
                       f"{limits.max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            oriented: Any = ImageOps.exif_transpose(image) or image
            return oriented.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, EOFError):
        raise _Refused(f"a {image.format} image that does not decode (truncated or corrupt?)"
                       ) from None
