"""Local imitation of the Instagram API with Instagram Login: Business Login OAuth, short- and
long-lived tokens, ``/me`` and ``/{ig-user-id}/media`` with cursor paging, Business Use Case
rate limiting, Graph-style errors and injectable faults."""

from sync_pipeline.sandbox.common import ManualClock
from sync_pipeline.sandbox.instagram.app import create_app
from sync_pipeline.sandbox.instagram.state import (
    GraphError,
    InstagramSandboxConfig,
    InstagramSandboxState,
)

__all__ = [
    "GraphError",
    "InstagramSandboxConfig",
    "InstagramSandboxState",
    "ManualClock",
    "create_app",
]
