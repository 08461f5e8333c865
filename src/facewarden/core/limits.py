"""Limits on what one request or command may ask for: text lengths here (checked by the
services, so the CLI, the HTTP API and the console share them); durations and dates in
``core.durations``; image, face and queue budgets in the settings, whose defaults for the
work one image may cause are here."""

from __future__ import annotations

from typing import Literal, get_args

from facewarden.core.errors import InvalidInput

NAME_CHARS = 100
"""Names and references: users, sources, cases (their database columns hold 100)."""
REFERENCE_CHARS = 200
"""A data subject request's reference."""
TEXT_CHARS = 10_000
"""Free text: purposes, legal bases, authorisations, notes."""
MAX_QUOTA = 1_000_000
"""The most searches a case may allow."""
MAX_TOP_K = 1000
"""The most candidates per probe face."""
MAX_WORKERS = 256
"""The most worker processes one command may ask for."""
RECEIPTS_PAGE = 50
"""Receipts per page of the data-protection receipts list, unless asked otherwise."""
RECEIPTS_PAGE_MAX = 500
"""The most receipts one page may ask for."""
ReceiptKind = Literal["access", "erasure", "erasure-review", "restriction", "lifted", "purge"]
"""The kinds of receipt the receipts list holds (and filters by)."""
RECEIPT_KINDS: tuple[str, ...] = get_args(ReceiptKind)
MAX_ID = 2**31 - 1
"""Ids are INTEGER columns (32-bit on PostgreSQL)."""

DETECT_MAX_PIXELS = 4 * 1600 * 1600
"""Default pixels a face detector may work on for one image or frame, counted after its own
upsampling (its retry's included): a 1600x1600 probe at upsampling 1. A larger image is
detected on a reduced copy (faces are still aligned from the full image). Memory and time of
detection grow with these pixels: a 7000x4000 photo at HOG upsampling 1 (112 million) took
1.1 GB and 27 s in one process, and 2.6 GB in the server; the CNN needs about 130 bytes per
pixel (2.2 GB at 17 million)."""
MAX_IMAGE_FACES = 200
"""Default faces stored per ingested image or video frame: the largest this many."""
MAX_ARCHIVE_MEMBERS = 50_000
"""Default entries one archive may hold (its directory is read whole before any member)."""
MAX_ARCHIVE_BYTES = 8 * 1024**3
"""Default total declared (expanded) size of the image members read from one archive."""
INGEST_INFLIGHT_BYTES = 256 * 1024**2
"""Encoded bytes of images an ingest hands to its workers at once (at least one image)."""


def check_id(value: int, what: str = "id") -> int:
    """An id as given by a user: anything outside the column's range is bad input."""
    if not 1 <= value <= MAX_ID:
        raise InvalidInput(f"{what} {value} is out of range (1 to {MAX_ID})")
    return value


def check_text(value: str | None, what: str, limit: int = TEXT_CHARS) -> str | None:
    """``value`` unchanged, or :class:`InvalidInput` when it is too long or holds NUL
    (PostgreSQL cannot store it)."""
    if value is None:
        return None
    if len(value) > limit:
        raise InvalidInput(
            f"{what} is {len(value)} characters long: the limit is {limit}", code="too_long"
        )
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL characters")
    return value
