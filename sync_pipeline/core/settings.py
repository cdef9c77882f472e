"""Runtime settings for the CLI, read from the environment and the project's `.env` file.

Dagster reads the same variables through `dg.EnvVar` (see defs/resources.py); `dagster dev`
loads `.env` from the working directory by itself.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dotenv import dotenv_values

from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.errors import ConfigError

ENV_FILE = ".env"
SANDBOX_CLIENT_ID = "12345"
DEFAULT_SANDBOX_PORT = 8710
SANDBOX_SEED = 42
#: Consistency-tracker platforms and the sandbox port offset from the Strava sandbox's port.
PLATFORM_PORTS = {"github": 1, "youtube": 2, "x": 3, "instagram": 4}
#: The Promidata sandbox's port offset from the Strava sandbox's port.
PROMIDATA_PORT_OFFSET = 5
#: The outreach sandboxes' port offsets from the Strava sandbox's port (8716-8719 by default).
OUTREACH_PORT_OFFSETS = {"hunter": 6, "supabase": 7, "smtp": 8, "imap": 9}
#: The webhook receiver (Strava push events, outreach unsubscribe links): 8720 by default.
WEBHOOK_PORT_OFFSET = 10
#: The sender mailbox of the outreach sandbox's demo campaign.
OUTREACH_SANDBOX_SENDER = "sales@acme.test"
#: Where the CLI queues runs fastest: the Dagster webserver of `sync-pipeline dev` / `dagster dev`.
DEFAULT_WEBSERVER_URL = "http://127.0.0.1:3000"


def load_env_file(path: Path | None = None) -> None:
    """Fill unset variables from `.env` (explicit environment always wins)."""
    path = path or Path.cwd() / ENV_FILE
    if not path.exists():
        return
    for key, value in dotenv_values(path).items():
        if value is not None and key not in os.environ:
            os.environ[key] = value


@dataclass(frozen=True)
class Settings:
    """Where things live and how to reach the APIs."""

    home: Path
    database_url: str
    token_key: str
    strava_client_id: str
    strava_client_secret: str
    strava_base_url: str
    strava_time_scale: int
    strava_streets_file: str
    platforms: dict[str, dict[str, str]]
    #: DAGSTER_WEBSERVER_URL: the deployment's Dagster webserver (runs are queued through its
    #: GraphQL API; `sync-pipeline dev` serves the UI there).
    webserver_url: str = DEFAULT_WEBSERVER_URL

    @property
    def dagster_home(self) -> Path:
        """$DAGSTER_HOME, by default under the local home."""
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment (after `.env`), with missing values reported clearly."""
        load_env_file()
        home = Path(os.environ.get("SYNC_HOME", ".sync_home")).resolve()
        return cls(
            home=home,
            database_url=os.environ.get("SYNC_DATABASE_URL") or f"sqlite:///{home / 'app.db'}",
            token_key=os.environ.get("SYNC_TOKEN_KEY", ""),
            strava_client_id=os.environ.get("STRAVA_CLIENT_ID", ""),
            strava_client_secret=os.environ.get("STRAVA_CLIENT_SECRET", ""),
            strava_base_url=os.environ.get("STRAVA_BASE_URL", "https://www.strava.com"),
            strava_time_scale=int(os.environ.get("STRAVA_TIME_SCALE", "1")),
            strava_streets_file=os.environ.get("STRAVA_STREETS_FILE", ""),
            platforms={p: platform_settings(p) for p in PLATFORM_PORTS},
            webserver_url=os.environ.get("DAGSTER_WEBSERVER_URL") or DEFAULT_WEBSERVER_URL,
        )


def platform_settings(platform: str) -> dict[str, str]:
    """`<PLATFORM>_CLIENT_ID`, `_CLIENT_SECRET`, `_BASE_URL`, `_OAUTH_URL` (set ones only)."""
    prefix = platform.upper()
    found = {
        "client_id": os.environ.get(f"{prefix}_CLIENT_ID", ""),
        "client_secret": os.environ.get(f"{prefix}_CLIENT_SECRET", ""),
        "base_url": os.environ.get(f"{prefix}_BASE_URL", ""),
        "oauth_base_url": os.environ.get(f"{prefix}_OAUTH_URL", ""),
    }
    return {k: v for k, v in found.items() if v}


def platform_sandbox_env(sandbox_port: int = DEFAULT_SANDBOX_PORT) -> dict[str, str]:
    """Settings pointing every consistency platform at its sandbox."""
    env: dict[str, str] = {}
    for platform, offset in PLATFORM_PORTS.items():
        prefix, url = platform.upper(), f"http://127.0.0.1:{sandbox_port + offset}"
        env[f"{prefix}_CLIENT_ID"] = f"sandbox-{platform}-client"
        env[f"{prefix}_CLIENT_SECRET"] = "sandbox-" + secrets.token_hex(8)
        env[f"{prefix}_BASE_URL"] = url
        env[f"{prefix}_OAUTH_URL"] = url
    return env


def sandbox_env(home: Path, sandbox_port: int = DEFAULT_SANDBOX_PORT) -> dict[str, str]:
    """A complete `.env` for the embedded default: SQLite, the sandbox APIs, a new key."""
    return {
        "SYNC_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "DAGSTER_WEBSERVER_URL": DEFAULT_WEBSERVER_URL,
        "SYNC_DATABASE_URL": f"sqlite:///{home / 'app.db'}",
        "SYNC_TOKEN_KEY": generate_key(),
        "STRAVA_CLIENT_ID": SANDBOX_CLIENT_ID,
        "STRAVA_CLIENT_SECRET": "sandbox-" + secrets.token_hex(8),
        "STRAVA_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        "STRAVA_TIME_SCALE": "1",
        "STRAVA_WEBHOOK_VERIFY_TOKEN": secrets.token_urlsafe(16),
        # The sandbox city's street network (written by `sync-pipeline init`).
        "STRAVA_STREETS_FILE": str(home / f"streets-{SANDBOX_SEED}.geojson"),
        **platform_sandbox_env(sandbox_port),
        # The Promidata sandbox (`sync-pipeline suppliers sandbox`) and its image directory.
        "PROMIDATA_BASE_URL": f"http://127.0.0.1:{sandbox_port + PROMIDATA_PORT_OFFSET}",
        "PROMIDATA_IMAGES_DIR": str(home / "promidata-images"),
        **outreach_sandbox_env(sandbox_port),
    }


def outreach_sandbox_env(sandbox_port: int = DEFAULT_SANDBOX_PORT) -> dict[str, str]:
    """Settings pointing the outreach clients at the sandboxes `make demo` starts (Hunter,
    Supabase REST, SMTP, IMAP on fixed ports) and unsubscribe links at the webhook receiver."""
    port = {name: sandbox_port + offset for name, offset in OUTREACH_PORT_OFFSETS.items()}
    hunter = f"http://127.0.0.1:{port['hunter']}"
    password = "sandbox-" + secrets.token_hex(8)
    receiver = f"http://127.0.0.1:{sandbox_port + WEBHOOK_PORT_OFFSET}"
    return {
        "HUNTER_API_KEY": "sandbox-" + secrets.token_hex(8),
        "HUNTER_BASE_URL": hunter,
        "HUNTER_WEBSITE_URL": hunter + "/_sandbox/sites/{domain}",
        **{
            f"{protocol}_{name}": value
            for protocol in ("SMTP", "IMAP")
            for name, value in {
                "HOST": "127.0.0.1",
                "PORT": str(port[protocol.lower()]),
                "USERNAME": OUTREACH_SANDBOX_SENDER,
                "PASSWORD": password,
                "SECURITY": "none",
            }.items()
        },
        "SUPABASE_URL": f"http://127.0.0.1:{port['supabase']}",
        "SUPABASE_SERVICE_KEY": "sandbox-" + secrets.token_hex(8),
        "SUPABASE_TABLE": "prospects",
        "OUTREACH_UNSUBSCRIBE_URL": receiver + "/outreach/unsubscribe/{token}",
        "OUTREACH_UNSUBSCRIBE_KEY": secrets.token_urlsafe(32),
        "OUTREACH_SOFT_BOUNCE_LIMIT": "3",
    }


class Env:
    """Where a resource's settings come from: Dagster's `EnvVar`s, read when a run starts
    (`values` None: the code location), or a mapping read now (the CLI, after `.env`)."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.values = values

    def __call__(self, name: str, *, default: str | None = None, integer: bool = False) -> Any:
        """The variable `name`: an EnvVar, or its value (`default` when unset)."""
        if self.values is None:
            return dg.EnvVar.int(name) if integer else dg.EnvVar(name)
        raw = self.values.get(name) or default
        if raw is None:
            raise ConfigError(
                f"{name} is not set: put it in .env (see README) or run `sync-pipeline init` "
                "for the sandbox defaults."
            )
        return int(raw) if integer else raw
