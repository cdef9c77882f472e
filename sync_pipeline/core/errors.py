"""Error classes every source uses to say how a failure should be handled."""

from __future__ import annotations


class SyncError(Exception):
    """Base class; `error_class` names the handling in state, metadata and dead letters."""

    error_class = "error"


class TransientError(SyncError):
    """5xx, timeouts, connection errors: retry with exponential backoff and jitter."""

    error_class = "transient"


class RateLimitedError(SyncError):
    """The shared budget is spent until `retry_at` (epoch seconds): park the work until then."""

    error_class = "rate_limited"

    def __init__(self, message: str, retry_at: float) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class PermanentError(SyncError):
    """Retrying cannot help (deleted object, missing scope): record the reason, do not retry."""

    error_class = "permanent"


class NotFoundError(PermanentError):
    """The object no longer exists at the provider."""

    error_class = "not_found"


class AuthRevokedError(PermanentError):
    """The provider rejected our tokens even after a refresh: the user must reconnect."""

    error_class = "needs_reconnect"


class ConfigError(SyncError):
    """The configuration is wrong; the message says what to change."""

    error_class = "config"
