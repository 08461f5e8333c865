"""Limits on what one request or command may ask for: text lengths here (checked by the
services, so the CLI, the HTTP API and the console share them); durations and dates in
``core.durations``; image, face and queue budgets in the settings."""

from __future__ import annotations

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
MAX_ID = 2**31 - 1
"""Ids are INTEGER columns (32-bit on PostgreSQL)."""


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
