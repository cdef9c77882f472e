"""Local imitation of the X (Twitter) API v2: OAuth 2.0 with PKCE, users/me, user timelines,
15-minute rate-limit windows with ``x-rate-limit-*`` headers, and injectable faults."""

from sync_pipeline.sandbox.common import ManualClock
from sync_pipeline.sandbox.x.app import create_app
from sync_pipeline.sandbox.x.state import (
    XApiError,
    XSandboxConfig,
    XSandboxState,
    pkce_s256,
)

__all__ = [
    "ManualClock",
    "XApiError",
    "XSandboxConfig",
    "XSandboxState",
    "create_app",
    "pkce_s256",
]
