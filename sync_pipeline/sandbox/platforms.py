"""Start the consistency-tracker platform sandboxes (GitHub, YouTube, X, Instagram) together."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from sync_pipeline.sandbox.server import SandboxServer

#: platform → (package, config class, state class)
SANDBOXES = {
    "github": ("sync_pipeline.sandbox.github", "GitHubSandboxConfig", "GitHubSandboxState"),
    "youtube": ("sync_pipeline.sandbox.youtube", "YouTubeSandboxConfig", "YouTubeSandboxState"),
    "x": ("sync_pipeline.sandbox.x", "XSandboxConfig", "XSandboxState"),
    "instagram": (
        "sync_pipeline.sandbox.instagram",
        "InstagramSandboxConfig",
        "InstagramSandboxState",
    ),
}


@dataclass
class RunningSandbox:
    """One platform sandbox serving on loopback."""

    platform: str
    server: SandboxServer
    state: Any

    @property
    def url(self) -> str:
        """Base URL (API and OAuth hosts are both served here)."""
        return self.server.url

    def account_ids(self) -> list[str]:
        """Ids of the sandbox's accounts, in creation order."""
        return [str(a["id"]) for a in self.state.list_accounts()]


def start_platform(
    platform: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 42,
    accounts: int = 4,
    client_id: str,
    client_secret: str,
    time_scale: float = 1.0,
) -> RunningSandbox:
    """Start one platform sandbox (OSError when the port is taken)."""
    package, config_name, state_name = SANDBOXES[platform]
    module = importlib.import_module(package)
    config = getattr(module, config_name)(
        seed=seed,
        accounts=accounts,
        client_id=client_id,
        client_secret=client_secret,
        time_scale=time_scale,
    )
    state = getattr(module, state_name)(config)
    server = SandboxServer(module.create_app(state), host=host, port=port).start()
    return RunningSandbox(platform, server, state)
