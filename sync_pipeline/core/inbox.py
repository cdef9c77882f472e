"""Reading the webhook inbox with a cursor; events are marked handled only after the sensor
tick that turned them into work was committed (its cursor moved past them)."""

from __future__ import annotations

from sqlalchemy import select, update

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import WebhookEvent, utcnow


def mark_handled(db_url: str, provider: str, up_to: int) -> int:
    """Mark events with id <= `up_to` handled; returns how many were newly marked."""
    with transaction(db_url) as s:
        result = s.execute(
            update(WebhookEvent)
            .where(
                WebhookEvent.provider == provider,
                WebhookEvent.id <= up_to,
                WebhookEvent.handled_at.is_(None),
            )
            .values(handled_at=utcnow())
        )
        return int(getattr(result, "rowcount", 0) or 0)


def events_after(db_url: str, provider: str, after: int, limit: int) -> list[WebhookEvent]:
    """Events with id > `after`, oldest first."""
    with transaction(db_url) as s:
        return list(
            s.scalars(
                select(WebhookEvent)
                .where(WebhookEvent.provider == provider, WebhookEvent.id > after)
                .order_by(WebhookEvent.id)
                .limit(limit)
            )
        )


def set_outcomes(db_url: str, outcomes: dict[int, tuple[str, str | None]]) -> None:
    """Record what each event became (outcome, run key)."""
    if not outcomes:
        return
    with transaction(db_url) as s:
        for event_id, (outcome, run_key) in outcomes.items():
            s.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == event_id)
                .values(outcome=outcome, run_key=run_key)
            )
