"""Enumerate the local files, folders and .zip archives an operator points ingest at.

There is deliberately no URL or crawler support: facewarden only reads what the operator
already holds. Archive members with absolute paths, ``..`` components or suspicious
compression ratios are reported, never read.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from facewarden.adapters.imaging import IMAGE_SUFFIXES
from facewarden.core.errors import MediaError
from facewarden.core.limits import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_MEMBERS
from facewarden.core.media import is_video_path


@dataclass
class InputItem:
    """One candidate media file; ``read`` returns its bytes or raises :class:`MediaError`."""

    path: str
    read: Callable[[], bytes] | None
    error: MediaError | None = None
    video: Path | None = None
    """Set for a video file: it is decoded as a stream from disk, never read whole."""


@dataclass
class InputLimits:
    max_file_bytes: int
    max_archive_ratio: int
    max_video_bytes: int = 4 * 1024**3
    max_archive_members: int = MAX_ARCHIVE_MEMBERS
    """Entries one archive may hold (its whole directory is read into memory first)."""
    max_archive_bytes: int = MAX_ARCHIVE_BYTES
    """Total declared size of the image members read from one archive."""


CENTRAL_ENTRY_BYTES = 1024
"""Central directory bytes allowed per permitted entry (a name of ~1,000 characters)."""


def _zip_directory(archive: Path) -> tuple[int, int] | None:
    """(entries, central directory bytes) the archive's end record declares, read from its
    last 64 KiB before the directory itself is; None when no end record is found."""
    with archive.open("rb") as fh:
        size = fh.seek(0, 2)
        start = max(0, size - (65535 + 22))
        fh.seek(start)
        tail = fh.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        entries, directory = struct.unpack("<HI", tail[at + 10 : at + 16])
        locator = tail[at - 20 : at] if at >= 20 else b""
        if locator[:4] == b"PK\x06\x07":  # zip64: the counts are in its own end record
            (offset,) = struct.unpack("<Q", locator[8:16])
            fh.seek(offset)
            record = fh.read(56)
            if record[:4] == b"PK\x06\x06" and len(record) == 56:
                entries, directory = struct.unpack("<QQ", record[32:48])
        return entries, directory


def _read_file(path: Path, limit: int) -> Callable[[], bytes]:
    def read() -> bytes:
        size = path.stat().st_size
        if size > limit:
            raise MediaError(f"file too large: {size} bytes exceeds {limit}", code="too_large")
        return path.read_bytes()

    return read


def _unsafe_member(name: str) -> str | None:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path in archive"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path traversal ('..') in archive"
    return None


def _zip_items(archive: Path, limits: InputLimits) -> Iterator[InputItem]:
    try:
        declared = _zip_directory(archive)
    except (OSError, struct.error):
        declared = None
    if declared is not None:
        entries, directory = declared
        most = limits.max_archive_members
        if entries > most or directory > max(1 << 20, most * CENTRAL_ENTRY_BYTES):
            yield InputItem(
                str(archive),
                None,
                MediaError(
                    f"archive declares {entries} entries ({directory} bytes of directory): "
                    f"the limit is {most} (FACEWARDEN_MAX_ARCHIVE_MEMBERS); split it",
                    code="too_many_members",
                ),
            )
            return
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        yield InputItem(
            str(archive), None, MediaError(f"broken archive: {exc}", code="bad_archive")
        )
        return
    with zf:
        names: dict[str, int] = {}
        expanded = 0
        for info in zf.infolist():
            if info.is_dir():
                continue
            # A zip may hold several members of one name: each is read by its own entry and
            # labelled apart (the second "a.jpg" is "a.jpg [2]").
            names[info.filename] = names.get(info.filename, 0) + 1
            copy = names[info.filename]
            label = f"{archive}!{info.filename}" + (f" [{copy}]" if copy > 1 else "")
            problem = _unsafe_member(info.filename)
            if problem:
                yield InputItem(label, None, MediaError(problem, code="unsafe_archive_path"))
                continue
            if is_video_path(info.filename):
                yield InputItem(
                    label,
                    None,
                    MediaError(
                        "videos inside archives are not ingested; extract them first",
                        code="video_in_archive",
                    ),
                )
                continue
            if Path(info.filename).suffix.lower() not in IMAGE_SUFFIXES:
                yield InputItem(label, None, MediaError("not an image file", code="not_an_image"))
                continue
            if info.file_size > limits.max_file_bytes:
                yield InputItem(
                    label,
                    None,
                    MediaError(
                        f"archive member too large: {info.file_size} bytes", code="too_large"
                    ),
                )
                continue
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_archive_ratio:
                yield InputItem(
                    label,
                    None,
                    MediaError(
                        f"compression ratio {ratio:.0f}:1 looks like a zip bomb", code="zip_bomb"
                    ),
                )
                continue
            if expanded + info.file_size > limits.max_archive_bytes:
                yield InputItem(
                    label,
                    None,
                    MediaError(
                        f"the archive's image members exceed {limits.max_archive_bytes} bytes "
                        "expanded (FACEWARDEN_MAX_ARCHIVE_BYTES): not read; split the archive",
                        code="archive_too_large",
                    ),
                )
                continue
            expanded += info.file_size
            yield InputItem(label, _zip_reader(archive, info, limits.max_file_bytes))


def _zip_reader(archive: Path, member: zipfile.ZipInfo, limit: int) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with zipfile.ZipFile(archive) as zf, zf.open(member) as fh:
                data = fh.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise MediaError(f"cannot read archive member: {exc}", code="bad_archive") from exc
        if len(data) > limit:
            raise MediaError("archive member larger than declared", code="too_large")
        return data

    return read


def _video_item(path: Path, limit: int) -> InputItem:
    size = path.stat().st_size
    if size > limit:
        error = MediaError(f"video too large: {size} bytes exceeds {limit}", code="too_large")
        return InputItem(str(path), None, error)
    return InputItem(str(path), None, video=path)


def iter_inputs(paths: list[Path], limits: InputLimits) -> Iterator[InputItem]:
    """Files, folders (recursive, sorted) and .zip archives, in a stable order. Videos
    are recognised by their suffix."""
    for root in paths:
        if not root.exists():
            yield InputItem(str(root), None, MediaError("no such file or folder", code="missing"))
            continue
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if path.is_symlink():
                yield InputItem(
                    str(path), None, MediaError("symbolic links are not followed", code="symlink")
                )
            elif path.suffix.lower() == ".zip":
                yield from _zip_items(path, limits)
            elif is_video_path(path):
                yield _video_item(path, limits.max_video_bytes)
            elif path.suffix.lower() in IMAGE_SUFFIXES or root == path:
                yield InputItem(str(path), _read_file(path, limits.max_file_bytes))
            else:
                yield InputItem(
                    str(path), None, MediaError("not an image file", code="not_an_image")
                )
