"""Building resources and instances for CLI commands from the settings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from sync_pipeline.core import db
from sync_pipeline.core.daily import DailyActivityClient
from sync_pipeline.core.errors import ConfigError
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.settings import ENV_FILE, Settings, load_env_file, sandbox_env
from sync_pipeline.defs.strava.resources import StravaResource

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
    return StravaResource(
        app_db=app_db(s),
        client_id=s.strava_client_id,
        client_secret=s.strava_client_secret,
        base_url=s.strava_base_url,
        time_scale=s.strava_time_scale,
        streets_file=s.strava_streets_file,
    )


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


PLATFORM_RESOURCES = {
    "github": ("sync_pipeline.defs.github.resources", "GitHubResource"),
    "youtube": ("sync_pipeline.defs.youtube.resources", "YouTubeResource"),
    "x": ("sync_pipeline.defs.x.resources", "XResource"),
    "instagram": ("sync_pipeline.defs.instagram.resources", "InstagramResource"),
}


def platform_client(s: Settings, platform: str) -> DailyActivityClient:
    """The client resource of a consistency platform, configured like Dagster's."""
    import importlib

    if platform not in PLATFORM_RESOURCES:
        raise click.BadParameter(
            f"unknown platform {platform!r}; choose one of {', '.join(PLATFORM_RESOURCES)}"
        )
    config = s.platforms.get(platform, {})
    missing = [k for k in ("client_id", "client_secret") if k not in config]
    if missing:
        names = ", ".join(f"{platform.upper()}_{k.upper()}" for k in missing)
        raise click.ClickException(
            f"{names} not set: put them in .env (see README) or run `sync-pipeline init` "
            "for the sandbox defaults."
        )
    module, name = PLATFORM_RESOURCES[platform]
    cls = getattr(importlib.import_module(module), name)
    client: DailyActivityClient = cls(app_db=app_db(s), **config)
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
