"""Subkeys derived from the deployment's template key, one per named purpose (HKDF-SHA256).

The template key itself only ever encrypts templates and crops; everything else that needs
secret material (sealing the index files, the index's keyed rotation) takes a subkey derived
for its purpose, so that no two uses share a key and a subkey reveals nothing of the
template key. Rotating the template key changes every subkey: the index is then rebuilt
(its files no longer verify, its rotation no longer matches), which is also how a leaked
index is renewed.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INDEX_FILE = "index-file-v1"
"""AES-256-GCM key sealing the FAISS index files."""
INDEX_TRANSFORM = "index-transform-v1"
"""Seed of the secret orthogonal rotation applied to every vector an index backend holds."""

PURPOSES = (INDEX_FILE, INDEX_TRANSFORM)
_SALT = b"facewarden-subkey-v1"


def derive_key(master: bytes, purpose: str, length: int = 32) -> bytes:
    """The ``length``-byte subkey of ``master`` for ``purpose`` (one of ``PURPOSES``)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}")
    if len(master) < 16:
        raise ValueError("the master key is too short to derive subkeys from")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=purpose.encode()).derive(
        master
    )


def key_fingerprint(subkey: bytes) -> str:
    """A short public identifier of a subkey (which key built an index), revealing nothing."""
    return hmac.new(subkey, b"facewarden-subkey-fingerprint", hashlib.sha256).hexdigest()[:16]
