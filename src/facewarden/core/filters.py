"""Search filters: which gallery faces a search may return, as the CLI and the HTTP API take
them. A ``SearchFilter`` is valid by construction (bad values raise ``InvalidInput`` with the
code ``invalid_filter``), so the search services can trust every one they are given."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from facewarden.core.errors import InvalidInput
from facewarden.core.limits import NAME_CHARS

MAX_FILTER_VALUES = 100
"""The most sources, and the most jurisdictions, one filter may name."""
_JURISDICTION = re.compile(r"[A-Z]{2}")


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_filter")


def _sources(values: Iterable[str]) -> frozenset[str]:
    out = set()
    for value in values:
        name = value.strip()
        if not name:
            raise _invalid("a source filter names an empty source")
        if len(name) > NAME_CHARS or "\x00" in name:
            raise _invalid(
                f"source filter {name[:20]!r}: a source name is at most {NAME_CHARS} "
                "characters, with no NUL"
            )
        out.add(name)
    return frozenset(out)


def _jurisdictions(values: Iterable[str]) -> frozenset[str]:
    out = set()
    for value in values:
        code = value.strip().upper()
        if not _JURISDICTION.fullmatch(code):
            raise _invalid(f"jurisdiction filter {value[:20]!r} must be a two-letter ISO 3166 code")
        out.add(code)
    return frozenset(out)


@dataclass(frozen=True)
class SearchFilter:
    """Only gallery faces of these sources (by name) and of these jurisdictions (two-letter
    codes, upper case); None: any. Both given: a face must satisfy both. Build one with
    :meth:`of`, which checks and normalises what a user typed; the constructor checks too."""

    sources: frozenset[str] | None = None
    jurisdictions: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for values, what in ((self.sources, "sources"), (self.jurisdictions, "jurisdictions")):
            if values is None:
                continue
            if not values:
                raise _invalid(f"a filter on {what} names none (leave it out to allow any)")
            if len(values) > MAX_FILTER_VALUES:
                raise _invalid(f"a filter names at most {MAX_FILTER_VALUES} {what}")
        if self.sources is not None and _sources(self.sources) != self.sources:
            raise _invalid("source filter values must be stripped source names")
        if self.jurisdictions is not None and (
            _jurisdictions(self.jurisdictions) != self.jurisdictions
        ):
            raise _invalid("jurisdiction filter values must be upper-case two-letter codes")

    @classmethod
    def of(
        cls,
        sources: Iterable[str] | None = None,
        jurisdictions: Iterable[str] | None = None,
    ) -> SearchFilter | None:
        """The filter a user asked for (None when they named no source and no
        jurisdiction): source names stripped, jurisdictions upper-cased, duplicates folded;
        ``InvalidInput`` (``invalid_filter``) for an empty or over-long name, a jurisdiction
        that is not two letters, or more than ``MAX_FILTER_VALUES`` values."""
        source_list = list(sources or [])
        jurisdiction_list = list(jurisdictions or [])
        if len(source_list) > MAX_FILTER_VALUES or len(jurisdiction_list) > MAX_FILTER_VALUES:
            raise _invalid(f"a filter names at most {MAX_FILTER_VALUES} values of each kind")
        if not source_list and not jurisdiction_list:
            return None
        return cls(
            _sources(source_list) if source_list else None,
            _jurisdictions(jurisdiction_list) if jurisdiction_list else None,
        )

    def as_dict(self) -> dict[str, list[str] | None]:
        """The filter as recorded in the audit log (sorted lists; None: any)."""
        return {
            "sources": sorted(self.sources) if self.sources is not None else None,
            "jurisdictions": sorted(self.jurisdictions) if self.jurisdictions is not None else None,
        }
