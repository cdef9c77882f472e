"""Building resources and instances for CLI commands from the settings."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import dagster as dg
import yaml

from sync_pipeline.core import db
from sync_pipeline.core.daily import DailyActivityClient
from sync_pipeline.core.errors import ConfigError
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.settings import (
    ENV_FILE,
    Settings,
    load_env_file,
    sandbox_env,
)
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.sources import SOURCES as REGISTRY

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: `host:port` of a running Dagster code server that launches use instead of loading the code.
CODE_SERVER_VARIABLE = "SYNC_CODE_SERVER"
#: Every source the commands know (`--source` choices), from the registry.
SOURCES = list(REGISTRY)


def settings() -> Settings:
    """Settings from the environment and `.env`."""
    return Settings.from_env()


def app_db(s: Settings) -> AppDatabaseResource:
    """The app database resource, checked to be migrated."""
    if not s.token_key:
        raise click.ClickException(
            "SYNC_TOKEN_KEY is not set. Run `sync-pipeline init` (writes .env with a new key) "
            "or export SYNC_TOKEN_KEY=$(sync-pipeline keygen)."
        )
    resource = AppDatabaseResource(url=s.database_url, token_key=s.token_key)
    try:
        resource.check()
    except db.SchemaOutOfDateError as exc:
        raise click.ClickException(str(exc)) from exc
    return resource


def dagster_home(s: Settings) -> Path:
    """The Dagster home the settings name, as an absolute path, checked to be a directory.

    Also sets DAGSTER_HOME in this process (`dg.DagsterInstance.get()` reads it).
    """
    home = s.dagster_home.resolve()
    if not home.is_dir():
        named_by = (
            "DAGSTER_HOME"
            if os.environ.get("DAGSTER_HOME")
            else "the default, $SYNC_HOME/dagster; DAGSTER_HOME is not set"
        )
        raise click.ClickException(
            f"The Dagster home {home} ({named_by}) does not exist or is not a directory. "
            "Run `sync-pipeline init` to create it, or create that directory with a "
            "dagster.yaml in it (a copy of the project's dagster.yaml)."
        )
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@contextmanager
def dagster_instance(s: Settings) -> Iterator[dg.DagsterInstance]:
    """The Dagster instance of the settings' Dagster home (checked first)."""
    dagster_home(s)
    with dg.DagsterInstance.get() as instance:
        yield instance


def launch_env(s: Settings) -> dict[str, str]:
    """The environment of a `dagster` subprocess: this process's (`.env` loaded), with the
    locations the CLI resolved made explicit and absolute (DAGSTER_HOME checked to exist)."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home(s)),
        "SYNC_HOME": str(s.home),
        "SYNC_DATABASE_URL": s.database_url,
    }


def workspace_file() -> Path:
    """The project's workspace.yaml (absolute), the code location runs are launched from."""
    path = (PROJECT_ROOT / "workspace.yaml").resolve()
    if not path.is_file():
        raise click.ClickException(
            f"The Dagster workspace file {path} is missing; queueing runs needs the project "
            "checkout (install it with `pip install -e .` from the project root)."
        )
    return path


def code_location_name() -> str:
    """The name of the project's one code location in workspace.yaml."""
    path = workspace_file()
    entries = (yaml.safe_load(path.read_text()) or {}).get("load_from") or []
    names = [
        config.get("location_name")
        for entry in entries
        if isinstance(entry, dict)
        for config in entry.values()
        if isinstance(config, dict)
    ]
    if len(names) != 1 or not isinstance(names[0], str):
        raise click.ClickException(
            f"{path} must load exactly one code location with a `location_name` (runs queued "
            f"through {CODE_SERVER_VARIABLE} carry that name so the daemon finds their code)."
        )
    return names[0]


def code_server() -> tuple[str, int] | None:
    """(host, port) of `SYNC_CODE_SERVER=host:port`, or None when it is not set."""
    value = os.environ.get(CODE_SERVER_VARIABLE, "").strip()
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")  # [::1]:4266
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.ClickException(
            f"{CODE_SERVER_VARIABLE}={value!r} is not host:port (e.g. 127.0.0.1:4266). Set it "
            "to the address of a running `dagster code-server start -m sync_pipeline.definitions"
            f" -p PORT`, or unset it to load the code for each launch."
        )
    return host, int(port)


def strava_credentials(s: Settings) -> dict[str, str]:
    """The Strava app's client id and secret, or a clear error naming what is missing."""
    missing = [
        name
        for name, value in (
            ("STRAVA_CLIENT_ID", s.strava_client_id),
            ("STRAVA_CLIENT_SECRET", s.strava_client_secret),
        )
        if not value
    ]
    if missing:
        raise click.ClickException(
            f"{', '.join(missing)} not set: put them in .env (see README) or run "
            "`sync-pipeline init` for the sandbox defaults."
        )
    return {"client_id": s.strava_client_id, "client_secret": s.strava_client_secret}


def strava(s: Settings) -> StravaResource:
    """The Strava client resource, configured like Dagster's."""
    strava_credentials(s)
    client: StravaResource = _client(s, "strava")
    return client


def _client(s: Settings, name: str) -> Any:
    """A source's client resource from the same declaration Dagster binds (sources.py)."""
    from sync_pipeline.core.settings import Env

    try:
        return REGISTRY[name].resource(app_db(s), Env(os.environ))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _add_missing_sandbox_settings(env_path: Path, sandbox_port: int) -> None:
    """Append sandbox settings of platforms added since `.env` was written (keeps secrets)."""
    from dotenv import dotenv_values

    present = dotenv_values(env_path)
    if "STRAVA_BASE_URL" not in present or "127.0.0.1" not in str(present["STRAVA_BASE_URL"]):
        return  # configured for real APIs: never add sandbox settings
    home = Path(str(present.get("SYNC_HOME") or ".sync_home")).resolve()
    missing = {k: v for k, v in sandbox_env(home, sandbox_port).items() if k not in present}
    if missing:
        with env_path.open("a") as f:
            f.write("".join(f"{k}={v}\n" for k, v in missing.items()))


def _write_sandbox_streets(s: Settings) -> None:
    """Write the sandbox city's street network where the settings expect it."""
    path = Path(s.strava_streets_file) if s.strava_streets_file else None
    if path is None or path.exists() or "127.0.0.1" not in s.strava_base_url:
        return
    from sync_pipeline.core.settings import SANDBOX_SEED
    from sync_pipeline.sandbox.strava.city import write_streets_geojson

    path.parent.mkdir(parents=True, exist_ok=True)
    write_streets_geojson(path, SANDBOX_SEED)


def platform_client(s: Settings, platform: str) -> DailyActivityClient:
    """The client resource of a consistency platform, configured like Dagster's."""
    from sync_pipeline.sources import PLATFORMS

    if platform not in PLATFORMS:
        raise click.BadParameter(
            f"unknown platform {platform!r}; choose one of {', '.join(PLATFORMS)}"
        )
    config = s.platforms.get(platform, {})
    missing = [k for k in ("client_id", "client_secret") if k not in config]
    if missing:
        names = ", ".join(f"{platform.upper()}_{k.upper()}" for k in missing)
        raise click.ClickException(
            f"{names} not set: put them in .env (see README) or run `sync-pipeline init` "
            "for the sandbox defaults."
        )
    client: DailyActivityClient = _client(s, platform)
    return client


def init_home(*, sandbox_port: int, force_env: bool = False) -> Settings:
    """Create `.env` (sandbox defaults) if missing, the Dagster home and the app schema."""
    env_path = Path.cwd() / ENV_FILE
    if env_path.exists() and not force_env:
        _add_missing_sandbox_settings(env_path, sandbox_port)
    if force_env or not env_path.exists():
        home = Path(os.environ.get("SYNC_HOME", ".sync_home")).resolve()
        values = sandbox_env(home, sandbox_port)
        env_path.write_text(
            "# Written by `sync-pipeline init`: the embedded default (SQLite, sandbox APIs).\n"
            "# Holds a secret (SYNC_TOKEN_KEY): never commit it.\n"
            + "".join(f"{k}={v}\n" for k, v in values.items())
        )
        env_path.chmod(0o600)
        for key in values:
            os.environ.pop(key, None)
    load_env_file(env_path)
    s = Settings.from_env()
    s.home.mkdir(parents=True, exist_ok=True)
    s.dagster_home.mkdir(parents=True, exist_ok=True)
    target = s.dagster_home / "dagster.yaml"
    source = PROJECT_ROOT / "dagster.yaml"
    if source.exists() and (not target.exists() or source.read_text() != target.read_text()):
        shutil.copyfile(source, target)
    os.environ["DAGSTER_HOME"] = str(s.dagster_home)
    _write_sandbox_streets(s)
    try:
        db.upgrade(s.database_url)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    return s
