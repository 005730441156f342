"""Decoding one image file the way training does: Pillow, channel mode, resize, scale to ``[0, 1]``.

One function, :func:`load_image`, used by the ``imagefolder:`` source and by ``unified serve`` for an
uploaded image, so a served model sees exactly what it was trained on. Pillow is imported when an image is
decoded, never at ``import unified``.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from unified.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "MODES", "load_image", "decode_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
"""File suffixes (lower case) the ``imagefolder:`` source takes as images; other files are refused by name."""

MODES = {1: "L", 3: "RGB", 4: "RGBA"}
"""``data.image.channels`` -> the Pillow mode every image is converted to."""


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow ships with the image extra
        raise DataError("decoding images needs Pillow: pip install 'unified-trainer[images]' (or pip install Pillow)",
                        path="data.source") from e
    return Image


def _reason(e: BaseException) -> str:
    """Pillow's message without the in-memory file's repr (``<_io.BytesIO object at 0x...>``)."""
    text = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", str(e)).strip() or "truncated or corrupt data"
    return f"{type(e).__name__}: {text}"


def decode_image(image: "object", *, size: Optional[Sequence[int]], channels: int, where: str) -> np.ndarray:
    """An opened Pillow image -> ``uint8 [C, H, W]``: converted to ``channels``, resized to ``size`` (H, W).

    Resizing uses bilinear filtering (Pillow's ``Image.resize`` with ``BILINEAR``); no resize when ``size``
    is None or already matches.
    """
    Image = _pil()
    mode = MODES.get(int(channels))
    if mode is None:
        raise DataError(f"data.image.channels: expected one of {sorted(MODES)}, got {channels}", path="data.image")
    try:
        img = image.convert(mode) if image.mode != mode else image
        if size is not None:
            h, w = int(size[0]), int(size[1])
            if img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        raise DataError(f"{where}: cannot decode image ({_reason(e)})", path="data.source") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_image(src: Union[str, Path, bytes], *, size: Optional[Sequence[int]], channels: int = 3,
               where: Optional[str] = None, scale: bool = True) -> np.ndarray:
    """Decode one image file (a path or its bytes) like the ``imagefolder:`` source does.

    Args:
        src: a file path, or the file's bytes (an upload).
        size: ``(H, W)`` to resize to, or None to keep the file's size.
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA).
        where: how messages name the image (defaults to the path, or "uploaded image").
        scale: True -> float32 in ``[0, 1]``; False -> the uint8 pixels.

    Returns:
        ``[C, H, W]`` float32 in ``[0, 1]`` (or uint8 when ``scale`` is False), channels first.

    Raises:
        DataError: the file is missing, is not an image, or is corrupt; the message names it.
    """
    Image = _pil()
    name = where or (str(src) if not isinstance(src, (bytes, bytearray)) else "uploaded image")
    try:
        handle = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else open(src, "rb")
    except OSError as e:
        raise DataError(f"{name}: cannot read image ({e.strerror or e})", path="data.source") from None
    with handle:
        try:
            with Image.open(handle) as img:
                img.load()
                arr = decode_image(img, size=size, channels=channels, where=name)
        except DataError:
            raise
        except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"{name}: not a readable image ({_reason(e)})", path="data.source") from None
    if not scale:
        return arr
    return arr.astype(np.float32) * np.float32(1.0 / 255.0)
