"""Authenticated encryption of the index files (AES-256-GCM), written 0600 and durably.

Each sealed file is a plaintext header (magic, file generation, chunk number, row count)
followed by a 12-byte nonce and the ciphertext with its 16-byte tag; the header is the
associated data, so a chunk cannot be moved to another position or passed off as another
generation, and the state file records each chunk's generation and tag, so an older copy of
a chunk (a replay) does not verify either.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct("<8sQQQ")  # magic, generation, chunk number, rows
STATE_MAGIC = b"FWIXST01"
CHUNK_MAGIC = b"FWIXCH01"


class SealError(Exception):
    """A sealed file is missing, truncated, altered, replayed or under another key."""


@dataclass(frozen=True)
class Header:
    magic: bytes
    generation: int
    chunk: int
    rows: int

    def pack(self) -> bytes:
        return _HEADER.pack(self.magic, self.generation, self.chunk, self.rows)


def seal(key: bytes, header: Header, plaintext: bytes | memoryview) -> bytes:
    aad = header.pack()
    nonce = os.urandom(NONCE_BYTES)
    return aad + nonce + AESGCM(key).encrypt(nonce, bytes(plaintext), aad)


def unseal(key: bytes, blob: bytes, magic: bytes) -> tuple[Header, bytes]:
    """(header, plaintext); ``SealError`` unless ``blob`` verifies under ``key``."""
    if len(blob) < _HEADER.size + NONCE_BYTES + TAG_BYTES:
        raise SealError("file truncated")
    aad = blob[: _HEADER.size]
    header = Header(*_HEADER.unpack(aad))
    if header.magic != magic:
        raise SealError("not a sealed facewarden index file")
    nonce = blob[_HEADER.size : _HEADER.size + NONCE_BYTES]
    try:
        plaintext = AESGCM(key).decrypt(nonce, blob[_HEADER.size + NONCE_BYTES :], aad)
    except Exception as exc:  # cryptography's InvalidTag: altered, truncated or another key
        raise SealError("does not verify (altered, truncated or sealed under another key)") from exc
    return header, plaintext


def tag_of(blob: bytes) -> bytes:
    return blob[-TAG_BYTES:]


def private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as 0700; tighten ``path`` if it exists."""
    missing = [level for level in [path, *path.parents] if not level.exists()]
    for level in reversed(missing):  # parents created here are private too
        level.mkdir(exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``: a 0600 temporary file, fsynced, renamed
    over it, and the directory fsynced (a crash leaves the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # a full disk leaves no partial temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def shred(path: Path) -> None:
    """Overwrite a file with zeros in place, fsync, and unlink it (for plaintext files an
    earlier version left; on copy-on-write file systems the old blocks may survive)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b") as f:
            for start in range(0, size, 1 << 24):
                f.write(b"\0" * min(1 << 24, size - start))
            f.flush()
            os.fsync(f.fileno())
    finally:
        path.unlink(missing_ok=True)
