"""Resource bindings: the one place environment variables are named (read at run time)."""

import dagster as dg

from sync_pipeline.core.daily import DailyActivityClient
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.github.resources import GitHubResource
from sync_pipeline.defs.instagram.resources import InstagramResource
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.x.resources import XResource
from sync_pipeline.defs.youtube.resources import YouTubeResource

PLATFORM_CLIENTS: dict[str, type[DailyActivityClient]] = {
    "github": GitHubResource,
    "youtube": YouTubeResource,
    "x": XResource,
    "instagram": InstagramResource,
}


@dg.definitions
def resources() -> dg.Definitions:
    """App database and API clients, configured from the environment (see README)."""
    app_db = AppDatabaseResource(
        url=dg.EnvVar("SYNC_DATABASE_URL"), token_key=dg.EnvVar("SYNC_TOKEN_KEY")
    )
    return dg.Definitions(
        resources={
            "app_db": app_db,
            "strava": StravaResource(
                app_db=app_db,
                client_id=dg.EnvVar("STRAVA_CLIENT_ID"),
                client_secret=dg.EnvVar("STRAVA_CLIENT_SECRET"),
                base_url=dg.EnvVar("STRAVA_BASE_URL"),
                time_scale=dg.EnvVar.int("STRAVA_TIME_SCALE"),
                streets_file=dg.EnvVar("STRAVA_STREETS_FILE"),
            ),
            **{
                platform: cls(
                    app_db=app_db,
                    client_id=dg.EnvVar(f"{platform.upper()}_CLIENT_ID"),
                    client_secret=dg.EnvVar(f"{platform.upper()}_CLIENT_SECRET"),
                    base_url=dg.EnvVar(f"{platform.upper()}_BASE_URL"),
                    oauth_base_url=dg.EnvVar(f"{platform.upper()}_OAUTH_URL"),
                )
                for platform, cls in PLATFORM_CLIENTS.items()
            },
        }
    )
