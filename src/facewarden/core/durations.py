"""Retention and expiry durations such as ``365d``, ``12w``, ``2y``, ``36h``, and the bounds on
every date the system accepts or computes (validated here, once, for every interface)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from facewarden.core.errors import InvalidInput

_UNITS = {"h": 1 / 24, "d": 1, "w": 7, "y": 365}
_PATTERN = re.compile(r"^\s*([0-9]{1,12})\s*([hdwy])\s*$", re.IGNORECASE | re.ASCII)

MAX_DURATION_DAYS = 100 * 365
"""The longest retention or case lifetime accepted: 100 years (36500 days)."""
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Dates given as filters are accepted between these bounds (far from datetime's limits, so
adding a duration or converting a time zone can never overflow)."""


def parse_duration(text: str) -> timedelta:
    """Parse a positive duration of at most 100 years; months are refused as ambiguous."""
    match = _PATTERN.match(text or "")
    if not match:
        raise InvalidInput(
            f"invalid duration {str(text)[:40]!r}: use a whole number and a unit h, d, w or y "
            "(e.g. 365d)",
            code="bad_duration",
        )
    value = int(match.group(1))
    if value <= 0:
        raise InvalidInput(f"duration {text!r} must be positive", code="bad_duration")
    days = value * _UNITS[match.group(2).lower()]
    if days > MAX_DURATION_DAYS:
        raise InvalidInput(
            f"duration {text.strip()!r} is over the limit of {MAX_DURATION_DAYS} days (100 years)",
            code="bad_duration",
        )
    return timedelta(days=days)


def bounded_instant(value: datetime, what: str = "date") -> datetime:
    """A date given as a filter, as aware UTC (naive means UTC), within the accepted range."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not EARLIEST <= value <= LATEST:
        raise InvalidInput(
            f"{what} {value.isoformat()} is out of range: give a date between "
            f"{EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}",
            code="bad_date",
        )
    return value.astimezone(UTC)


def format_days(days: float) -> str:
    return f"{days:g}d"
