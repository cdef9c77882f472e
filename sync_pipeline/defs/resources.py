"""Resource bindings: the one place environment variables are named (read at run time)."""

import dagster as dg

from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.strava.resources import StravaResource


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
        }
    )
