"""Test helpers shared by the consistency-platform tests: sandboxes and client resources."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sync_pipeline.core.daily import DailyActivityClient
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.settings import Env
from sync_pipeline.defs.users.accounts import add_user, connect
from sync_pipeline.sandbox.platforms import SANDBOXES
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sources import SOURCES

CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret"
_ids = Env({f"{n.upper()}_{k}": "test" for n in SOURCES for k in ("CLIENT_ID", "CLIENT_SECRET")})


@dataclass
class Box:
    """A running platform sandbox and its control API."""

    platform: str
    state: Any
    url: str

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST to the sandbox's control API (asserts success)."""
        response = httpx.post(f"{self.url}/_sandbox{path}", json=body or {}, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def stats(self) -> dict[str, Any]:
        """The sandbox's request and response counters."""
        result: dict[str, Any] = httpx.get(f"{self.url}/_sandbox/stats", timeout=5).json()
        return result

    def account(self, **body: Any) -> str:
        """A new sandbox account (body: history_days, count, time_zone ...)."""
        return str(self.control("/accounts", body)["id"])


@pytest.fixture
def boxes() -> Iterator[Callable[..., Box]]:
    """Start platform sandboxes with config overrides; all are stopped after the test."""
    servers: list[SandboxServer] = []

    def make(platform: str, **config: Any) -> Box:
        package, config_name, state_name = SANDBOXES[platform]
        module = importlib.import_module(package)
        cfg = getattr(module, config_name)(
            **{"accounts": 0, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **config}
        )
        state = getattr(module, state_name)(cfg)
        server = SandboxServer(module.create_app(state)).start()
        servers.append(server)
        return Box(platform, state, server.url)

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def clients(app_db: AppDatabaseResource) -> Iterator[Callable[..., DailyActivityClient]]:
    """Build a platform's client resource pointed at a sandbox; all closed after the test."""
    made: list[DailyActivityClient] = []

    def make(box: Box, **overrides: Any) -> DailyActivityClient:
        fields: dict[str, Any] = {
            "app_db": app_db,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "base_url": box.url,
            "oauth_base_url": box.url,
            "timeout_seconds": 5.0,
            "connect_timeout_seconds": 2.0,
            **overrides,
        }
        client: DailyActivityClient = type(SOURCES[box.platform].resource(app_db, _ids))(**fields)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def join(client: DailyActivityClient, user_id: str, account: str, tz: str = "UTC") -> None:
    """Add an app user (if new) and connect them to the sandbox account through OAuth."""
    add_user(client.app_db.url, user_id, timezone=tz)
    conn = connect(client, user_id, auto_approve=True, sandbox_user=account)
    assert conn.state == "connected"
