"""Ingest manifests: a sidecar file (CSV or JSON) that maps media files to the subject the
source system knows them by (e.g. a custody record number), with optional metadata fields
the source is allowed to hold (``source add --subject-field``).

CSV: a header row with ``file`` and ``subject`` and, optionally, one column per allowed
field. JSON: a list of objects with the same keys (``{"file": ..., "subject": ..., "dob":
...}``). ``file`` is a path relative to the manifest's folder (or absolute). Everything is
validated before anything is ingested; a bad manifest is refused as a whole.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facewarden.core.errors import InvalidInput

MAX_MANIFEST_BYTES = 50 * 1024 * 1024
MAX_ENTRIES = 1_000_000
MAX_REFERENCE = 200
MAX_FIELDS = 20
MAX_VALUE = 500
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
RESERVED = {"file", "subject"}


@dataclass(frozen=True)
class ManifestEntry:
    file: Path
    subject: str
    fields: dict[str, str] = field(default_factory=dict)


def valid_field_names(names: Sequence[str]) -> list[str]:
    """Field names a source may allow: lower-case identifiers, at most ``MAX_FIELDS``."""
    out = sorted({n.strip() for n in names})
    for n in out:
        if not FIELD_NAME.match(n) or n in RESERVED:
            raise InvalidInput(
                f"subject field {n!r}: use a lower-case name of letters, digits and _ "
                "(not 'file' or 'subject')"
            )
    if len(out) > MAX_FIELDS:
        raise InvalidInput(f"at most {MAX_FIELDS} subject fields per source")
    return out


def _text(value: object, what: str, limit: int, row: int) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput(f"manifest row {row}: {what} must be text")
    text = str(value).strip()
    if len(text) > limit:
        raise InvalidInput(f"manifest row {row}: {what} longer than {limit} characters")
    if CONTROL.search(text):
        raise InvalidInput(f"manifest row {row}: {what} contains control characters")
    return text


def load_manifest(path: Path, allowed: Sequence[str]) -> dict[Path, ManifestEntry]:
    """The manifest's entries by resolved file path. Refuses unknown fields (those the
    source is not allowed to hold), duplicate files, over-long or malformed values, and one
    subject given different metadata in different rows."""
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise InvalidInput(f"manifest {path} is larger than {MAX_MANIFEST_BYTES} bytes")
        raw = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InvalidInput(f"cannot read manifest {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"manifest {path} is not UTF-8 text") from exc
    rows: list[dict[str, object]]
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"manifest {path} is not valid JSON: {exc.msg}") from exc
        if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
            raise InvalidInput("a JSON manifest is a list of objects with file and subject")
        rows = doc
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(raw))
        if not reader.fieldnames or not set(reader.fieldnames) >= RESERVED:
            raise InvalidInput("a CSV manifest needs a header with the columns file and subject")
        try:
            rows = [dict(r) for r in reader]
        except csv.Error as exc:
            raise InvalidInput(f"manifest {path}: {exc}") from exc
    else:
        raise InvalidInput("a manifest is a .csv or .json file")
    if len(rows) > MAX_ENTRIES:
        raise InvalidInput(f"a manifest has at most {MAX_ENTRIES} rows")
    allowed_set = set(allowed)
    entries: dict[Path, ManifestEntry] = {}
    subjects: dict[str, dict[str, str]] = {}
    for n, row in enumerate(rows, 1):
        if None in row:
            raise InvalidInput(f"manifest row {n}: more values than columns")
        extra = set(row) - RESERVED - allowed_set
        if extra:
            raise InvalidInput(
                f"manifest row {n}: field(s) {', '.join(sorted(map(str, extra)))} are not "
                "allowed for this source (source add --subject-field)"
            )
        file = _text(row.get("file") or "", "file", 4096, n)
        subject = _text(row.get("subject") or "", "subject", MAX_REFERENCE, n)
        if not file or not subject:
            raise InvalidInput(f"manifest row {n}: file and subject are required")
        fields = {
            k: _text(v, k, MAX_VALUE, n)
            for k, v in row.items()
            if k not in RESERVED and v not in (None, "")
        }
        known = subjects.setdefault(subject, fields)
        if known != fields and fields:
            if any(known.get(k, v) != v for k, v in fields.items()):
                raise InvalidInput(
                    f"manifest row {n}: subject {subject!r} has different metadata in another row"
                )
            known.update(fields)
        where = Path(file)
        resolved = (where if where.is_absolute() else path.parent / where).resolve()
        if resolved in entries:
            raise InvalidInput(f"manifest row {n}: file {file!r} is listed twice")
        entries[resolved] = ManifestEntry(resolved, subject, fields)
    # every row of one subject carries the subject's merged metadata
    return {
        p: ManifestEntry(e.file, e.subject, dict(subjects[e.subject])) for p, e in entries.items()
    }
