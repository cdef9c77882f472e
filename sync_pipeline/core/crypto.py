"""Encryption of tokens at rest (Fernet; several comma-separated keys allow key rotation)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from sync_pipeline.core.errors import ConfigError


def generate_key() -> str:
    """A new random key, as `SYNC_TOKEN_KEY` expects it."""
    return Fernet.generate_key().decode()


class TokenCipher:
    """Encrypts with the first key; decrypts with any of them."""

    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise ConfigError(
                "No token encryption key configured. Set SYNC_TOKEN_KEY to the output of "
                "`sync-pipeline keygen` (keep it secret; losing it means users must reconnect)."
            )
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in parts])
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                "SYNC_TOKEN_KEY is not a valid key (32 url-safe base64 bytes). "
                "Generate one with `sync-pipeline keygen`."
            ) from exc

    def encrypt(self, value: str) -> bytes:
        """Ciphertext of a token."""
        return self._fernet.encrypt(value.encode())

    def decrypt(self, value: bytes) -> str:
        """Plaintext of a stored token; a clear error when the key does not match."""
        try:
            return self._fernet.decrypt(value).decode()
        except InvalidToken as exc:
            raise ConfigError(
                "Stored tokens cannot be decrypted with SYNC_TOKEN_KEY: the key changed. "
                "Restore the old key (it may be listed after the new one, comma-separated)."
            ) from exc
