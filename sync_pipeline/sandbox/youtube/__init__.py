"""Local imitation of the YouTube Data API v3 with Google OAuth 2.0 and daily quota."""

from sync_pipeline.sandbox.common import ManualClock
from sync_pipeline.sandbox.youtube.app import create_app
from sync_pipeline.sandbox.youtube.state import (
    GoogleApiError,
    YouTubeSandboxConfig,
    YouTubeSandboxState,
)

__all__ = [
    "GoogleApiError",
    "ManualClock",
    "YouTubeSandboxConfig",
    "YouTubeSandboxState",
    "create_app",
]
