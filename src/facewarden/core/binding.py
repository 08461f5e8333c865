"""What each encrypted value is bound to (AEAD associated data): a ciphertext moved to
another record, or another position in the same media, fails to decrypt."""

from __future__ import annotations


def template_aad(sha256: str, face_index: int) -> bytes:
    """Associated data binding a template to its media and position (swaps fail to decrypt)."""
    return f"face:{sha256}:{face_index}".encode()


def crop_aad(sha256: str, face_index: int) -> bytes:
    """Associated data binding a face crop to its media and position."""
    return f"crop:{sha256}:{face_index}".encode()


def probe_aad(case_ref: str, probe_sha256: str) -> bytes:
    """Associated data binding a kept probe template to its case and probe image."""
    return f"probe:{case_ref}:{probe_sha256}".encode()


def probe_face_aad(search_id: int, face_index: int) -> bytes:
    """Binds a kept probe face crop to its search and position (swaps fail to decrypt)."""
    return f"probe-face:{search_id}:{face_index}".encode()


def suppression_aad(request_id: int) -> bytes:
    """Associated data binding a suppression template to its erasure request."""
    return f"suppress:{request_id}".encode()
