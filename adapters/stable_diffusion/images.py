"""PNG encoding of generated images: deterministic bytes for a given image.

The same pixels always give the same bytes (no timestamp, no text chunks, a fixed compression
level), so a job re-run with the same seed on the same machine stores a byte-identical file,
and a stored output can be checked against a fresh run. Pillow is imported only when called.
"""

from __future__ import annotations

import io
from typing import Any

# zlib's default. On generated images level 9 saves almost nothing; level 1 costs ~4% more bytes.
PNG_COMPRESS_LEVEL = 6


def encode_png(image: Any) -> bytes:
    """``image`` (a PIL image, RGB) as PNG bytes, with no metadata."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    # A fresh image carries no info dict; pnginfo=None and no exif keep the file metadata-free.
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buffer.getvalue()
