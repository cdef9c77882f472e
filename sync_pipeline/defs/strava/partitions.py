"""Strava athletes as one dynamic partition set."""

import dagster as dg

strava_athletes = dg.DynamicPartitionsDefinition(name="strava_athletes")
