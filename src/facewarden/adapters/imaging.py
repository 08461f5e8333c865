"""Guarded image decoding: formats, size limits, decompression bombs, truncation, EXIF."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facewarden.core.errors import MediaError

ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode bytes to an upright RGB uint8 array, or raise :class:`MediaError` saying why."""
    if not data:
        raise MediaError("empty file", code="empty")
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one that counts; Pillow's global is left alone.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in ALLOWED_FORMATS:
                raise MediaError(
                    f"unsupported image format {img.format}", code="unsupported_format"
                )
            width, height = img.size
            if width * height > max_pixels:
                # Few bytes for many pixels is the signature of a decompression bomb.
                bomb = len(data) * 50 < width * height
                raise MediaError(
                    f"{'decompression bomb refused' if bomb else 'image too large'}: "
                    f"{width}x{height} exceeds {max_pixels} pixels",
                    code="decompression_bomb" if bomb else "too_large",
                )
            if img.format == "GIF":
                img.seek(0)
            img.load()
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError(f"decompression bomb refused: {exc}", code="decompression_bomb") from exc
    except UnidentifiedImageError as exc:
        raise MediaError("not an image or an unsupported format", code="not_an_image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        code = "truncated" if "truncated" in text.lower() else "corrupt"
        raise MediaError(f"corrupt or truncated image: {text}", code=code) from exc
    return np.asarray(rgb, dtype=np.uint8)
