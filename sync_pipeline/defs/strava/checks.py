"""Strava asset checks: dead letters (syncs that failed for good) must be looked at."""

import dagster as dg

from sync_pipeline.core.health import dead_letter_check
from sync_pipeline.defs.strava.assets import STRAVA_ACTIVITIES, strava_activities
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.sync import SOURCE

DEAD_LETTER_CHECK = "no_dead_letters"


@dg.asset_check(asset=strava_activities, name=DEAD_LETTER_CHECK)
def strava_no_dead_letters(strava: StravaResource) -> dg.AssetCheckResult:
    """Fails while athletes have dead letters (permanent failure or retries exhausted)."""
    evaluation = dead_letter_check(
        STRAVA_ACTIVITIES, DEAD_LETTER_CHECK, strava.app_db.checkpoints(SOURCE).dead_letters()
    )
    return dg.AssetCheckResult(
        passed=evaluation.passed,
        metadata=evaluation.metadata,
        severity=evaluation.severity,
        description=evaluation.description,
    )
