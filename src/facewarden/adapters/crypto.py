"""AES-256-GCM encryption of templates and crops, and the storage of the keys.

Every encrypted value is stored with the id of the key that sealed it, and every decryption
names that id: a value sealed under a key this process does not hold stops with
``key_missing`` (naming the id the data needs) instead of a cryptographic traceback."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from facewarden.core.errors import DecryptionFailed, FacewardenError, NotInitialised

KEY_BYTES = 32
NONCE_BYTES = 12


class TemplateKeyError(FacewardenError):
    code = "bad_key"


class KeyMissing(NotInitialised):
    """The data needs a key this deployment does not hold (lost, not restored, not set)."""

    code = "key_missing"


class WrongKey(NotInitialised):
    """The configured key is not the one the data is encrypted under."""

    code = "wrong_key"


def key_id_of(key: bytes) -> str:
    """A public fingerprint of a key (16 hex digits), stored with every value it seals."""
    return hashlib.sha256(b"facewarden-key-id" + key).hexdigest()[:16]


def parse_key(text: str) -> bytes:
    """A 256-bit key given as 64 hex digits or base64."""
    text = text.strip()
    try:
        key = (
            bytes.fromhex(text)
            if len(text) == 2 * KEY_BYTES
            else base64.b64decode(text, validate=True)
        )
    except (ValueError, binascii.Error) as exc:
        raise TemplateKeyError("template key must be 64 hex digits or base64 of 32 bytes") from exc
    if len(key) != KEY_BYTES:
        raise TemplateKeyError(f"template key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: Path, key: bytes, *, replace: bool = False) -> None:
    """Write ``key`` with mode 0600, durably, through a temporary file (a crash never leaves
    a half-written key). Without ``replace``, refuse to overwrite (``FileExistsError``)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(key).decode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if ``path`` exists
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def create_key_file(path: Path) -> bytes:
    """Write a new random key with mode 0600; refuse to overwrite an existing one."""
    key = AESGCM.generate_key(bit_length=256)
    write_key_file(path, key)
    return key


def read_key_file(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o077
    if mode:
        raise TemplateKeyError(
            f"key file {path} is readable by others (mode {oct(path.stat().st_mode)}); chmod 600"
        )
    return parse_key(path.read_text())


def load_key(env_value: str | None, path: Path) -> bytes:
    if env_value:
        return parse_key(env_value)
    if not path.is_file():
        raise NotInitialised(f"template key file {path} not found: run 'facewarden init'")
    return read_key_file(path)


def pending_key_path(path: Path) -> Path:
    """The new key of a rotation in progress (until it replaces the key file)."""
    return path.with_name(path.name + ".new")


def retiring_key_path(path: Path) -> Path:
    """The old key of a rotation in progress (removed when the rotation completes)."""
    return path.with_name(path.name + ".old")


class TemplateCipher:
    """Encrypts float32 templates and other blobs, bound to their record by associated data.

    Encrypts under the current key; decrypts under whichever held key the value's key id
    names (during a key rotation: the retiring key, or the new one)."""

    def __init__(
        self,
        key: bytes,
        others: list[bytes] | None = None,
        reload: Callable[[], TemplateCipher | None] | None = None,
    ) -> None:
        """``reload``: reads the configured keys again when a value names a key id this
        cipher does not hold (a rotation run by another process since this one started)."""
        self.key = key
        self._aead = AESGCM(key)
        self.key_id = key_id_of(key)
        self._ring = {key_id_of(k): AESGCM(k) for k in others or []}
        self._ring[self.key_id] = self._aead
        self._reload = reload

    @property
    def held_key_ids(self) -> frozenset[str]:
        return frozenset(self._ring)

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes, key_id: str | None) -> bytes:
        """Decrypt a value sealed under ``key_id`` (None: a value stored before key ids were
        recorded with it, tried under the current key)."""
        aead = self._ring.get(key_id or self.key_id)
        if aead is None and self._reload is not None:
            fresh = self._reload()
            if fresh is not None:
                self._ring = fresh._ring | self._ring  # decrypt-only: encryption is unchanged
            aead = self._ring.get(key_id or self.key_id)
        if aead is None:
            raise KeyMissing(
                f"the data needs the key with id {key_id}, which is not loaded (the configured "
                f"key has id {self.key_id}): restore that key file from its backup"
            )
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            if key_id is None:
                raise WrongKey(
                    f"a value stored without a key id does not decrypt under the configured "
                    f"key (id {self.key_id}): it needs the key it was written with"
                ) from None
            raise DecryptionFailed(
                f"a value sealed under key {key_id} does not decrypt: it was altered or "
                "moved to another record"
            ) from None

    def encrypt_template(self, vector: np.ndarray, aad: bytes) -> bytes:
        return self.encrypt(np.asarray(vector, dtype="<f4").tobytes(), aad)

    def decrypt_template(self, blob: bytes, aad: bytes, key_id: str | None) -> np.ndarray:
        return np.frombuffer(self.decrypt(blob, aad, key_id), dtype="<f4").copy()
