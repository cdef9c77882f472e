"""Reading the webhook inbox with a cursor; events are marked handled only after the sensor
tick that turned them into work was committed (its cursor moved past them), or once the
receiver's fast path processed them itself (outcome `processed_inline`)."""

from __future__ import annotations

import datetime as dt

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


# -- the receiver's fast path (sync_pipeline/webhooks/fastpath.py) -------------------------------
#: Claimed by the receiver's fast path, in flight: the sensor waits for it.
INLINE_PENDING = "inline_pending"
#: Processed by the receiver's fast path (data stored, Dagster told): the sensor skips it.
PROCESSED_INLINE = "processed_inline"
#: A claim older than this (counted from receipt) is abandoned: the sensor takes the event.
INLINE_CLAIM_SECONDS = 120.0


def inline_claim_is_live(event: WebhookEvent, now: dt.datetime | None = None) -> bool:
    """Whether the fast path holds the event (claimed, and received recently enough)."""
    if event.outcome != INLINE_PENDING:
        return False
    received = event.received_at
    if received.tzinfo is None:
        received = received.replace(tzinfo=dt.UTC)
    age = ((now or utcnow()) - received).total_seconds()
    return age < INLINE_CLAIM_SECONDS


def claim_inline(db_url: str, provider: str, dedup_keys: list[str]) -> list[WebhookEvent]:
    """Claim the events (by content key) nobody has handled or claimed yet, in one conditional
    UPDATE; returns the claimed ones, oldest first (a redelivery of a handled event: none)."""
    if not dedup_keys:
        return []
    with transaction(db_url) as s:
        claimed = s.scalars(
            update(WebhookEvent)
            .where(
                WebhookEvent.provider == provider,
                WebhookEvent.dedup_key.in_(dedup_keys),
                WebhookEvent.outcome.is_(None),
                WebhookEvent.handled_at.is_(None),
            )
            .values(outcome=INLINE_PENDING)
            .returning(WebhookEvent)
        ).all()
        return sorted(claimed, key=lambda e: e.id)


def release_inline(db_url: str, event_ids: list[int]) -> None:
    """Give claimed events back to the sensor (the fast path did not complete them)."""
    if not event_ids:
        return
    with transaction(db_url) as s:
        s.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(event_ids), WebhookEvent.outcome == INLINE_PENDING)
            .values(outcome=None)
        )


def mark_processed_inline(db_url: str, event_ids: list[int]) -> int:
    """Record that the fast path completed the claimed events; returns how many it marked."""
    if not event_ids:
        return 0
    with transaction(db_url) as s:
        result = s.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(event_ids), WebhookEvent.outcome == INLINE_PENDING)
            .values(outcome=PROCESSED_INLINE, handled_at=utcnow())
        )
        return int(getattr(result, "rowcount", 0) or 0)


def apply_activity_event(wanted: set[int], deleted: set[int], object_id: int, aspect: str) -> None:
    """Fold one activity event into the activities to fetch and those deleted (the later
    event of an activity wins)."""
    if aspect == "delete":
        deleted.add(object_id)
        wanted.discard(object_id)
    else:
        wanted.add(object_id)
        deleted.discard(object_id)
