"""Generated images: to 8-bit pixels on the device, to PNG bytes later, on the store thread.

- **uint8 on the device.** The pipeline returns float images in [0, 1] (``output_type="pt"``);
  :func:`to_pixels` scales, rounds and converts them to ``uint8`` where they are (the GPU), so
  only a quarter of the bytes crosses to the host and the CPU does no float work. The rounding
  is diffusers' own (``(x * 255).round()`` in float32), so the pixels equal its PIL output's.
- **PNG off the model thread.** :func:`png_artifact` returns an ``Artifact`` whose bytes are
  encoded when first read, which is the store stage (its own thread) storing it: the model
  thread goes on to the next job instead of spending ~30 ms an image in zlib.
- **Deterministic bytes.** The same pixels always give the same bytes (no timestamp, no text
  chunks, a fixed compression level), so a job re-run with the same seed on the same machine
  stores a byte-identical file.
- **Compression level 1 by default** (``SD_PNG_COMPRESSION``): on generated images zlib's
  default (6) costs about four times the time for a few percent fewer bytes; 9 saves almost
  nothing more. Pillow and numpy are imported only when called.
"""

from __future__ import annotations

import io
from typing import Any

from domain.job import Artifact

PNG_COMPRESS_LEVEL = 1
"""zlib level used unless the caller says otherwise (0: none, fastest; 9: smallest)."""


def to_pixels(torch: Any, images: Any) -> Any:
    """``images`` (a float tensor, N x 3 x H x W in [0, 1], on any device) as a numpy uint8
    array N x H x W x 3 on the host. The conversion runs on the tensor's device."""
    pixels = images.float().mul(255).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def encode_png(image: Any, level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """``image`` (a PIL image, or a uint8 array H x W x 3) as PNG bytes, with no metadata."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        shape = getattr(image, "shape", None)
        if shape is None or len(shape) != 3 or shape[2] not in (3, 4):
            raise TypeError(f"expected a PIL image or an H x W x 3 array, got {type(image)}")
        image = Image.fromarray(image)
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    # A fresh image carries no info dict; pnginfo=None and no exif keep the file metadata-free.
    image.save(buffer, format="PNG", compress_level=level, optimize=False)
    return buffer.getvalue()


def png_artifact(pixels: Any, level: int = PNG_COMPRESS_LEVEL) -> Artifact:
    """An ``Artifact`` of ``pixels`` (H x W x 3 uint8) that becomes PNG bytes when first read."""
    if not 0 <= level <= 9:
        raise ValueError(f"PNG compression level must be 0 to 9 (got {level})")
    return Artifact.rendered(_Encoder(pixels, level), "image/png", "png")


class _Encoder:
    """The render function of one image (a class rather than a lambda: readable in a repr)."""

    def __init__(self, pixels: Any, level: int) -> None:
        self.pixels = pixels
        self.level = level

    def __call__(self) -> bytes:
        return encode_png(self.pixels, self.level)
