"""Recognising a full disk (or a refused write) under whatever layer raised it: the file
system (ENOSPC, EDQUOT, EFBIG), SQLite ("database or disk is full", "disk I/O error") or
PostgreSQL (SQLSTATE 53100 disk_full, 53200 out of memory). A pure function of the exception
chain (no database library imported), so every layer, the CLI's and the API's error handlers
included, can ask it."""

from __future__ import annotations

import errno

from facewarden.core.errors import StorageFull

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
SQLITE_FULL_TEXT = ("database or disk is full", "disk i/o error", "no space left on device")
PG_FULL_STATES = {"53100", "53200"}


def storage_failure(exc: BaseException) -> StorageFull | None:
    """A :class:`StorageFull` describing ``exc`` when it (or anything it was raised from) is a
    full disk or a refused write; else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageFull):
            return current
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return StorageFull(_message(f"{current.strerror or current}"))
        orig = getattr(current, "orig", None)  # SQLAlchemy wraps the driver's error
        if getattr(orig, "sqlstate", None) in PG_FULL_STATES or (
            getattr(orig, "pgcode", None) in PG_FULL_STATES
        ):
            return StorageFull(_message(str(orig).strip().splitlines()[0]))
        text = str(orig if orig is not None else current).lower()
        if any(t in text for t in SQLITE_FULL_TEXT):
            return StorageFull(_message(str(orig if orig is not None else current).strip()))
        current = current.__cause__ or current.__context__
    return None


def _message(detail: str) -> str:
    return (
        f"storage full or not writable ({detail}): nothing was half written; free space and "
        "run the operation again (reads still work)"
    )
