"""Guarded image decoding: formats, size limits, decompression bombs, truncation, EXIF, and
every pixel mode (16-bit, alpha, palette with transparency, CMYK) to 8-bit RGB."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facewarden.core.errors import MediaError

ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

VIDEO_HINT = "this looks like a video: search it with the video search (POST /api/v1/search/video)"
IMAGE_HINT = "this is a photo: search it with the photo search (POST /api/v1/search)"


@dataclass
class Decoded:
    """An upright RGB uint8 image and the size of the original (before any reduction)."""

    rgb: np.ndarray
    original_size: tuple[int, int]

    @property
    def reduced(self) -> bool:
        return (self.rgb.shape[1], self.rgb.shape[0]) != self.original_size


def looks_like_video(data: bytes) -> bool:
    """Container signatures of the video formats facewarden reads (MP4/MOV, Matroska/WebM,
    AVI, MPEG program and transport streams, ASF)."""
    head = data[:16]
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")
        or head.startswith(b"\x1a\x45\xdf\xa3")
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or head.startswith(b"\x00\x00\x01\xba")
        or (len(data) > 188 and data[0] == 0x47 and data[188] == 0x47)
        or head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")
    )


def looks_like_image(data: bytes) -> bool:
    """Whether Pillow recognises ``data`` as one of the accepted image formats (header only)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format in ALLOWED_FORMATS
    except Exception:  # anything Pillow cannot open is not an image
        return False


def _truncated(fmt: str, data: bytes) -> bool:
    """Cheap end-of-stream checks, before any pixel is decoded: a JPEG ends with its EOI
    marker (some writers pad after it), a PNG with its IEND chunk."""
    tail = data[-4096:]
    if fmt in ("JPEG", "MPO"):
        return b"\xff\xd9" not in tail
    if fmt == "PNG":
        return b"IEND" not in tail
    return False


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit greyscale scaled (not clipped), transparency
    composited onto white, CMYK and palettes converted."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max(initial=0.0)
        if mode.startswith("I;16") or top > 255:
            arr = arr / (257.0 if top <= 65535 else top / 255.0)
        elif mode == "F" and 0 < top <= 1.0:
            arr = arr * 255.0
        grey = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def decode(data: bytes, *, max_pixels: int, max_side: int | None = None) -> Decoded:
    """Decode bytes to an upright RGB uint8 image, or raise :class:`MediaError` saying why.

    With ``max_side``, the image is reduced so that its longer side is at most that: a JPEG
    is decoded directly at a smaller scale (libjpeg's DCT scaling: a fraction of the time and
    memory of the full frame), other formats are reduced after decoding."""
    if not data:
        raise MediaError("empty file", code="empty")
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one that counts; Pillow's global is left alone.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
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
            if _truncated(img.format, data):
                raise MediaError(
                    f"truncated image: the {img.format} data ends before the image does",
                    code="truncated",
                )
            if img.format == "GIF":
                img.seek(0)
            turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF: a quarter turn
            if max_side and max(width, height) > max_side and img.format in ("JPEG", "MPO"):
                img.draft(img.mode, (max_side, max_side))
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
            if max_side and max(rgb.size) > max_side:
                rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError(f"decompression bomb refused: {exc}", code="decompression_bomb") from exc
    except UnidentifiedImageError as exc:
        if looks_like_video(data):
            raise MediaError(VIDEO_HINT, code="video_not_image") from exc
        raise MediaError("not an image or an unsupported format", code="not_an_image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        text = str(exc)
        code = "truncated" if "truncated" in text.lower() else "corrupt"
        raise MediaError(f"corrupt or truncated image: {text}", code=code) from exc
    upright = (height, width) if turned else (width, height)
    return Decoded(np.asarray(rgb, dtype=np.uint8), upright)


def decode_image(data: bytes, *, max_pixels: int, max_side: int | None = None) -> np.ndarray:
    """:func:`decode`'s RGB array."""
    return decode(data, max_pixels=max_pixels, max_side=max_side).rgb


def probe_crop_jpeg(image: np.ndarray, box: list[int], size: int = 200) -> bytes:
    """The probe face with a margin around its box, at most ``size`` pixels, as JPEG: what a
    reviewer compares with the candidate (the probe image itself is never stored)."""
    top, right, bottom, left = box
    margin = max(bottom - top, right - left) // 4
    height, width = image.shape[:2]
    crop = image[
        max(0, top - margin) : min(height, bottom + margin),
        max(0, left - margin) : min(width, right + margin),
    ]
    picture = Image.fromarray(np.ascontiguousarray(crop))
    picture.thumbnail((size, size))
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
