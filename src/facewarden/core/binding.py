"""What each encrypted value is bound to (AEAD associated data): a ciphertext moved to
another record, or another position in the same media, fails to decrypt."""

from __future__ import annotations


def template_aad(sha256: str, face_index: int) -> bytes:
    """Associated data binding a template to its media and position (swaps fail to decrypt)."""
    return f"face:{sha256}:{face_index}".encode()


def crop_aad(sha256: str, face_index: int) -> bytes:
    """Associated data binding a face crop to its media and position."""
    return f"crop:{sha256}:{face_index}".encode()
