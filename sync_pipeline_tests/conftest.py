"""Shared fixtures: an app database (SQLite, or PostgreSQL when SYNC_TEST_POSTGRES_URL is set),
the Strava sandbox on loopback, and resources pointed at them."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from sync_pipeline.core import db
from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.strava.athletes import connect_via_oauth
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sandbox.strava.app import create_app
from sync_pipeline.sandbox.strava.state import StravaSandboxConfig, StravaSandboxState
from sync_pipeline_tests.serving import wait_until

# Fixtures shared by the consistency-platform tests (sandboxes, client resources).
pytest_plugins = ["sync_pipeline_tests.platforms", "sync_pipeline_tests.outreach"]

CLIENT_ID = "12345"
CLIENT_SECRET = "test-secret"


def _postgres_url() -> str | None:
    return os.environ.get("SYNC_TEST_POSTGRES_URL") or None


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated app database for one test."""
    with fresh_database(tmp_path) as url:
        yield url


@contextlib.contextmanager
def fresh_database(tmp_path: Path) -> Iterator[str]:
    """A new migrated app database: SQLite under `tmp_path`, or a new PostgreSQL database
    when SYNC_TEST_POSTGRES_URL is set (dropped afterwards)."""
    admin = _postgres_url()
    if admin is None:
        url = f"sqlite:///{tmp_path / 'app.db'}"
        db.upgrade(url)
        yield url
        db.dispose_engines()
        return
    import psycopg

    name = f"sync_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    try:
        db.upgrade(url)
        yield url
    finally:
        db.dispose_engines()
        drop_database(admin, name)


def drop_database(admin: str, name: str) -> None:
    """Drop a test database; an autovacuum worker still in it may need a moment to go."""
    import psycopg

    def dropped() -> bool:
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
            return False  # the other backend has not left yet
        return True

    wait_until(dropped, 30, what=f"dropping test database {name}", interval=0.5)


@dataclass
class Sandbox:
    """A running Strava sandbox."""

    state: StravaSandboxState
    url: str


def start_sandbox(**config: object) -> tuple[SandboxServer, Sandbox]:
    """Start a Strava sandbox on a free loopback port."""
    cfg = StravaSandboxConfig(
        **{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "athletes": 0, **config}  # type: ignore[arg-type]
    )
    state = StravaSandboxState(cfg)
    server = SandboxServer(create_app(state)).start()
    return server, Sandbox(state=state, url=server.url)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """The Strava sandbox with no athletes yet, Strava's default limits."""
    server, box = start_sandbox()
    yield box
    server.stop()


@pytest.fixture
def app_db(db_url: str) -> AppDatabaseResource:
    """The app database resource with a fresh token key."""
    return AppDatabaseResource(url=db_url, token_key=generate_key())


def make_strava(
    app_db: AppDatabaseResource, sandbox: Sandbox, **overrides: object
) -> StravaResource:
    """A Strava resource pointed at the sandbox."""
    fields: dict[str, object] = {
        "app_db": app_db,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "base_url": sandbox.url,
        "timeout_seconds": 5.0,
        "connect_timeout_seconds": 2.0,
        **overrides,
    }
    return StravaResource(**fields)  # type: ignore[arg-type]


@pytest.fixture
def strava_factory(
    app_db: AppDatabaseResource, sandbox: Sandbox
) -> Iterator[Callable[..., StravaResource]]:
    """Build Strava resources with overrides; all are closed after the test."""
    made: list[StravaResource] = []

    def factory(**overrides: object) -> StravaResource:
        resource = make_strava(app_db, sandbox, **overrides)
        made.append(resource)
        return resource

    yield factory
    for resource in made:
        resource.close()


@pytest.fixture
def strava(strava_factory: Callable[..., StravaResource]) -> StravaResource:
    """The Strava resource against the sandbox."""
    return strava_factory()


def connect(strava: StravaResource, sandbox: Sandbox, activities: int) -> int:
    """Create a sandbox athlete with `activities` and connect them through OAuth."""
    sandbox_id = sandbox.state.add_athlete(activities)
    athlete_id = connect_via_oauth(strava, auto_approve=True, sandbox_athlete_id=sandbox_id)
    assert athlete_id == sandbox_id
    return athlete_id


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A temporary Dagster instance (SQLite storage in a temp dir)."""
    with dg.instance_for_test() as inst:
        yield inst
