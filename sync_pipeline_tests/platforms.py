"""Test helpers shared by the consistency-platform tests: sandboxes and client resources."""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.daily import DailyActivityClient
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import DailyActivity
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.settings import Env
from sync_pipeline.defs.users.accounts import add_user, connect
from sync_pipeline.sandbox.platforms import SANDBOXES
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sources import SOURCES
from sync_pipeline_tests.serving import SlotServer

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


@dataclass
class SlotEnv:
    """A platform sandbox (real clock) plugged into the module's server, its control client and
    client resources pointed at it (closed after the test)."""

    platform: str
    state: Any
    url: str
    control: httpx.Client
    app_db: AppDatabaseResource
    account_field: str
    made: list[DailyActivityClient] = field(default_factory=list)

    def resource(self, **overrides: Any) -> Any:
        """The platform's client resource on the sandbox (its default app credentials)."""
        fields: dict[str, Any] = {
            "app_db": self.app_db,
            "client_id": self.state.config.client_id,
            "client_secret": self.state.config.client_secret,
            "base_url": self.url,
            "oauth_base_url": self.url,
            "timeout_seconds": 5.0,
            "connect_timeout_seconds": 2.0,
            **overrides,
        }
        client: DailyActivityClient = type(SOURCES[self.platform].resource(self.app_db, _ids))(
            **fields
        )
        self.made.append(client)
        return client

    def account(self, time_zone: str, history_days: int = 120) -> str:
        """A new sandbox account with history; returns its id (login, channel id, ...)."""
        body = {"history_days": history_days, "time_zone": time_zone}
        response = self.control.post("/_sandbox/accounts", json=body).json()
        return str(response[self.account_field])

    def stats(self) -> dict[str, Any]:
        """The sandbox's counters."""
        result: dict[str, Any] = self.control.get("/_sandbox/stats").json()
        return result

    def requests(self, endpoint: str) -> int:
        """Requests the sandbox answered on one endpoint."""
        return int(self.stats()["requests_by_endpoint"].get(endpoint, 0))


def slot_env_fixtures(platform: str, account_field: str) -> tuple[Any, Any, Any]:
    """The `served`, `make_env` and `env` fixtures of a platform's test module: one server for
    the module, a fresh sandbox (config overrides) and app database per test."""
    package, config_name, state_name = SANDBOXES[platform]
    module = importlib.import_module(package)

    @pytest.fixture(scope="module", name="served")
    def served() -> Iterator[SlotServer]:
        with SlotServer() as running:
            yield running

    @pytest.fixture(name="make_env")
    def make_env(served: SlotServer, db_url: str) -> Iterator[Callable[..., SlotEnv]]:
        opened: list[SlotEnv] = []

        def factory(**config: Any) -> SlotEnv:
            config.setdefault("accounts", 0)
            state = getattr(module, state_name)(getattr(module, config_name)(**config))
            env = SlotEnv(
                platform,
                state,
                served.server.url,
                served.plug(module.create_app(state)),
                AppDatabaseResource(url=db_url, token_key=generate_key()),
                account_field,
            )
            opened.append(env)
            return env

        yield factory
        for env in opened:
            for client in env.made:
                client.close()
        served.unplug()

    @pytest.fixture(name="env")
    def env(make_env: Callable[..., SlotEnv]) -> SlotEnv:
        return make_env()

    return served, make_env, env


def stored_days(db_url: str, user_id: str, platform: str) -> dict[dt.date, int]:
    """A user's stored daily counts on one platform."""
    with transaction(db_url) as s:
        found = s.execute(
            select(DailyActivity.day, DailyActivity.count).where(
                DailyActivity.user_id == user_id, DailyActivity.platform == platform
            )
        ).all()
    return {day: count for day, count in found}


def sandbox_days(state: Any, account: str, tz: str, days: list[dt.date]) -> dict[dt.date, int]:
    """The sandbox's exact items per local day of `tz`, zero-filled over `days`."""
    counts = state.daily_counts(account, tz)
    return {day: counts.get(day.isoformat(), 0) for day in days}


def first_sync_days(tz: str) -> list[dt.date]:
    """The 90 local days (of `tz`) a first sync covers, up to today."""
    end = dt.datetime.now(ZoneInfo(tz)).date()
    return [end - dt.timedelta(days=i) for i in range(89, -1, -1)]
