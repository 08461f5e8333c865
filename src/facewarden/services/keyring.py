"""The template key in use: one holder every service reads the cipher from."""

from __future__ import annotations

from facewarden.adapters.crypto import TemplateCipher


class Keyring:
    """Holds the current template cipher. A key rotation (``KeyService``) replaces it here,
    so every service and the index see the new key at once."""

    def __init__(self, cipher: TemplateCipher) -> None:
        self.cipher = cipher
