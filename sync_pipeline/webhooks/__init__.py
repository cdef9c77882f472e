"""Webhook receivers: acknowledge provider push events and store them in the inbox."""

from sync_pipeline.webhooks.app import (
    PayloadError,
    StravaEvent,
    create_webhook_app,
    dedup_key,
    parse_strava_event,
    store_event,
)

__all__ = [
    "PayloadError",
    "StravaEvent",
    "create_webhook_app",
    "dedup_key",
    "parse_strava_event",
    "store_event",
]
