"""Local imitation of GitHub (OAuth for GitHub Apps, REST events, GraphQL contributions)."""

from sync_pipeline.sandbox.common import ManualClock
from sync_pipeline.sandbox.github.app import create_app
from sync_pipeline.sandbox.github.state import (
    GitHubApiError,
    GitHubSandboxConfig,
    GitHubSandboxState,
)

__all__ = [
    "GitHubApiError",
    "GitHubSandboxConfig",
    "GitHubSandboxState",
    "ManualClock",
    "create_app",
]
