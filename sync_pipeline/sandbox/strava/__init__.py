"""Local imitation of the Strava API v3 (OAuth, activities, streams, rate limits, faults)."""

from sync_pipeline.sandbox.strava.app import create_app
from sync_pipeline.sandbox.strava.state import (
    ManualClock,
    StravaApiError,
    StravaSandboxConfig,
    StravaSandboxState,
)

__all__ = [
    "ManualClock",
    "StravaApiError",
    "StravaSandboxConfig",
    "StravaSandboxState",
    "create_app",
]
