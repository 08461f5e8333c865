"""Retention and expiry durations such as ``365d``, ``12w``, ``2y``, ``36h``."""

from __future__ import annotations

import re
from datetime import timedelta

from facewarden.core.errors import InvalidInput

_UNITS = {"h": 1 / 24, "d": 1, "w": 7, "y": 365}
_PATTERN = re.compile(r"^\s*(\d+)\s*([hdwy])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """Parse a positive duration; months are refused as ambiguous (use days)."""
    match = _PATTERN.match(text or "")
    if not match:
        raise InvalidInput(
            f"invalid duration {text!r}: use a whole number and a unit h, d, w or y (e.g. 365d)"
        )
    value = int(match.group(1))
    if value <= 0:
        raise InvalidInput(f"duration {text!r} must be positive")
    return timedelta(days=value * _UNITS[match.group(2).lower()])


def format_days(days: float) -> str:
    return f"{days:g}d"
