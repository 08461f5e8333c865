"""AES-256-GCM encryption of templates and crops, and the template key's storage."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from facewarden.core.errors import FacewardenError, NotInitialised

KEY_BYTES = 32
NONCE_BYTES = 12


class TemplateKeyError(FacewardenError):
    code = "bad_key"


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


def create_key_file(path: Path) -> bytes:
    """Write a new random key with mode 0600; refuse to overwrite an existing one."""
    key = AESGCM.generate_key(bit_length=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(key).decode() + "\n")
    return key


def load_key(env_value: str | None, path: Path) -> bytes:
    if env_value:
        return parse_key(env_value)
    if not path.is_file():
        raise NotInitialised(f"template key file {path} not found: run 'facewarden init'")
    mode = path.stat().st_mode & 0o077
    if mode:
        raise TemplateKeyError(
            f"key file {path} is readable by others (mode {oct(path.stat().st_mode)}); chmod 600"
        )
    return parse_key(path.read_text())


class TemplateCipher:
    """Encrypts float32 templates and other blobs, bound to their record by associated data."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"facewarden-key-id" + key).hexdigest()[:16]

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)

    def encrypt_template(self, vector: np.ndarray, aad: bytes) -> bytes:
        return self.encrypt(np.asarray(vector, dtype="<f4").tobytes(), aad)

    def decrypt_template(self, blob: bytes, aad: bytes) -> np.ndarray:
        return np.frombuffer(self.decrypt(blob, aad), dtype="<f4").copy()
