"""App database schema (SQLAlchemy 2 declarative). Changed only through Alembic migrations."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> dt.datetime:
    """Timezone-aware now in UTC."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base for the app database."""


class Athlete(Base):
    """A Strava athlete who connected the app."""

    __tablename__ = "athletes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    username: Mapped[str | None] = mapped_column(String(255))
    firstname: Mapped[str | None] = mapped_column(String(255))
    lastname: Mapped[str | None] = mapped_column(String(255))
    city: Mapped[str | None] = mapped_column(String(255))
    country: Mapped[str | None] = mapped_column(String(255))
    scopes: Mapped[str] = mapped_column(String(255), default="")
    # connected | needs_reconnect | disconnected
    state: Mapped[str] = mapped_column(String(32), default="connected", index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    connected_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    raw: Mapped[dict[str, Any] | None] = mapped_column(JsonType)

    @property
    def display_name(self) -> str:
        """First and last name, or the id when unknown."""
        name = " ".join(p for p in (self.firstname, self.lastname) if p)
        return name or str(self.id)


class OAuthToken(Base):
    """Encrypted OAuth tokens of one account at one provider."""

    __tablename__ = "oauth_tokens"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    access_token_enc: Mapped[bytes] = mapped_column(LargeBinary)
    refresh_token_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    scopes: Mapped[str] = mapped_column(String(255), default="")
    # Bumped on every rotation; also the row a refresh locks.
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class StravaActivity(Base):
    """One Strava activity: typed columns people query, plus the raw API payload."""

    __tablename__ = "strava_activities"
    __table_args__ = (Index("ix_strava_activities_athlete_start", "athlete_id", "start_date"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    athlete_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("athletes.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str | None] = mapped_column(Text)
    sport_type: Mapped[str | None] = mapped_column(String(64))
    type: Mapped[str | None] = mapped_column(String(64))
    start_date: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    start_epoch: Mapped[int] = mapped_column(BigInteger)
    timezone: Mapped[str | None] = mapped_column(String(128))
    distance_m: Mapped[float | None] = mapped_column(Float)
    moving_time_s: Mapped[int | None] = mapped_column(Integer)
    elapsed_time_s: Mapped[int | None] = mapped_column(Integer)
    total_elevation_gain_m: Mapped[float | None] = mapped_column(Float)
    average_speed: Mapped[float | None] = mapped_column(Float)
    max_speed: Mapped[float | None] = mapped_column(Float)
    average_heartrate: Mapped[float | None] = mapped_column(Float)
    kudos_count: Mapped[int | None] = mapped_column(Integer)
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    visibility: Mapped[str | None] = mapped_column(String(32))
    commute: Mapped[bool] = mapped_column(Boolean, default=False)
    trainer: Mapped[bool] = mapped_column(Boolean, default=False)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    raw: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # Set when the activity's streams were fetched and matched against the street network.
    processed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    synced_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class SyncState(Base):
    """Per-partition sync checkpoint, lease and last outcome, for any source."""

    __tablename__ = "sync_state"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    partition_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    # idle | running | succeeded | failed | parked | dead (a dead letter: nothing retries it)
    status: Mapped[str] = mapped_column(String(16), default="idle", index=True)
    # Mode of the sync in progress (full | incremental); None when no sync is in progress.
    mode: Mapped[str | None] = mapped_column(String(16))
    session_id: Mapped[str | None] = mapped_column(String(64))
    session_started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    cursor_before: Mapped[int | None] = mapped_column(BigInteger)
    cursor_after: Mapped[int | None] = mapped_column(BigInteger)
    pages_done: Mapped[int] = mapped_column(Integer, default=0)
    items_synced: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The process holding the lease (see checkpoints.this_process): a later process on the same
    # host takes the lease over at once when that process is gone (e.g. a killed direct sync).
    lease_process: Mapped[str | None] = mapped_column(String(255))
    last_started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_full_sync_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_class: Mapped[str | None] = mapped_column(String(32))
    last_error_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_run_id: Mapped[str | None] = mapped_column(String(64))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    failure_seq: Mapped[int] = mapped_column(Integer, default=0)
    blocked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    blocked_reason: Mapped[str | None] = mapped_column(Text)
    # Mode requested for work that was parked or handed over for a retry.
    pending_mode: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class RateWindow(Base):
    """Usage of one rate-limit bucket in one window, shared by every process."""

    __tablename__ = "rate_windows"

    bucket: Mapped[str] = mapped_column(String(128), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    window_seconds: Mapped[int] = mapped_column(Integer)
    limit: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class WebhookEvent(Base):
    """A push event from a provider's webhook, stored on receipt (the inbox) and handled later.

    Strava events carry no id, so ``dedup_key`` is a hash of the event's content; a redelivery
    of the same event increments ``deliveries`` instead of adding a row.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("uq_webhook_events_provider_dedup_key", "provider", "dedup_key", unique=True),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    provider: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str] = mapped_column(String(64))
    subscription_id: Mapped[int] = mapped_column(BigInteger)
    # activity | athlete
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[int] = mapped_column(BigInteger)
    # create | update | delete
    aspect_type: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[int] = mapped_column(BigInteger, index=True)
    event_time: Mapped[int] = mapped_column(BigInteger)
    updates: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    handled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    run_key: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str | None] = mapped_column(String(32))


class AppUser(Base):
    """A user of the app (consistency tracker); their local day is counted in `timezone`."""

    __tablename__ = "app_users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PlatformConnection(Base):
    """One user's account at one platform; tokens live in oauth_tokens (provider, user id)."""

    __tablename__ = "platform_connections"
    __table_args__ = (Index("ix_platform_connections_account", "platform", "account_id"),)

    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("app_users.id", ondelete="CASCADE"), primary_key=True
    )
    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    handle: Mapped[str | None] = mapped_column(String(128))
    # connected | needs_reconnect
    state: Mapped[str] = mapped_column(String(16), default="connected", index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    # Private: synced for the owner, never part of a public output.
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    scopes: Mapped[str] = mapped_column(String(255), default="")
    # Provider-specific sync hints (e.g. YouTube uploads playlist id, GitHub events ETag).
    extra: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    connected_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DailyActivity(Base):
    """Items one user made on one platform on one local day (exactly one row per day)."""

    __tablename__ = "daily_activity"

    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("app_users.id", ondelete="CASCADE"), primary_key=True
    )
    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    synced_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConsistencyScore(Base):
    """A user's consistency figures: `owner` counts every platform, `public` only public ones."""

    __tablename__ = "consistency_scores"

    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("app_users.id", ondelete="CASCADE"), primary_key=True
    )
    variant: Mapped[str] = mapped_column(String(8), primary_key=True)  # owner | public
    as_of: Mapped[dt.date] = mapped_column(Date)
    current_streak: Mapped[int] = mapped_column(Integer, default=0)
    longest_streak: Mapped[int] = mapped_column(Integer, default=0)
    rate_7d: Mapped[float] = mapped_column(Float, default=0.0)
    rate_30d: Mapped[float] = mapped_column(Float, default=0.0)
    # {platform: active days} over the synced history (public: public platforms only).
    active_days: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StravaStream(Base):
    """GPS and sensor streams of one activity (arrays as JSON, aligned by index)."""

    __tablename__ = "strava_streams"

    activity_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("strava_activities.id", ondelete="CASCADE"), primary_key=True
    )
    athlete_id: Mapped[int] = mapped_column(BigInteger, index=True)
    points: Mapped[int] = mapped_column(Integer, default=0)
    latlng: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    time_s: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    distance_m: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    altitude_m: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    fetched_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StreetNodeHit(Base):
    """A street node an activity's GPS stream passed within the match radius."""

    __tablename__ = "street_node_hits"
    __table_args__ = (Index("ix_street_node_hits_athlete_node", "athlete_id", "node_id"),)

    athlete_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    activity_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("strava_activities.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class StreetProgress(Base):
    """Share of a street's nodes an athlete has run or ridden past."""

    __tablename__ = "street_progress"

    athlete_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    street_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    nodes_total: Mapped[int] = mapped_column(Integer)
    nodes_hit: Mapped[int] = mapped_column(Integer)
    fraction: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConcurrencySlot(Base):
    """One held slot of a named limit shared by every run and host (see core.slots)."""

    __tablename__ = "concurrency_slots"

    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class PromidataSupplier(Base):
    """A configured Promidata supplier (one partition) and its Import.txt validators."""

    __tablename__ = "promidata_suppliers"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    added_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    import_etag: Mapped[str | None] = mapped_column(String(255))
    import_last_modified: Mapped[str | None] = mapped_column(String(64))
    import_checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    import_changed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # SHA-1 of the CAT.csv last read (Import.txt lists it): unchanged categories are not re-read.
    categories_hash: Mapped[str | None] = mapped_column(String(40))


class PromidataFamily(Base):
    """One product family (one Import.txt line, one JSON file) of a supplier."""

    __tablename__ = "promidata_families"
    __table_args__ = (Index("ix_promidata_families_supplier_status", "supplier", "status"),)

    supplier: Mapped[str] = mapped_column(String(32), primary_key=True)
    sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    # Hash Import.txt lists now; `synced_hash` is the hash of the content stored.
    listed_hash: Mapped[str] = mapped_column(String(40))
    synced_hash: Mapped[str | None] = mapped_column(String(40))
    # active | discontinued (no longer in Import.txt)
    status: Mapped[str] = mapped_column(String(16), default="active")
    supplier_sku: Mapped[str | None] = mapped_column(String(128))
    ean: Mapped[str | None] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    errors: Mapped[list[Any] | None] = mapped_column(JsonType)
    warnings: Mapped[list[Any] | None] = mapped_column(JsonType)
    first_seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_fetched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    discontinued_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


class PromidataVariant(Base):
    """A variant (child product) of a family, with its own SKU and EAN."""

    __tablename__ = "promidata_variants"
    __table_args__ = (Index("ix_promidata_variants_family", "supplier", "family_sku"),)

    sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    supplier: Mapped[str] = mapped_column(String(32))
    family_sku: Mapped[str] = mapped_column(String(128))
    supplier_sku: Mapped[str | None] = mapped_column(String(128))
    ean: Mapped[str | None] = mapped_column(String(32))
    color: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PromidataPrice(Base):
    """One price tier of a variant in one region (buying or recommended selling price)."""

    __tablename__ = "promidata_prices"

    variant_sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    region: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # buying | selling
    quantity: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    price: Mapped[float] = mapped_column(Float)
    currency: Mapped[str | None] = mapped_column(String(8))
    vat_percent: Mapped[float | None] = mapped_column(Float)
    minimum_order_quantity: Mapped[int | None] = mapped_column(Integer)


class PromidataText(Base):
    """Texts of a family or variant (by SKU) in one language."""

    __tablename__ = "promidata_texts"

    sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    short_description: Mapped[str | None] = mapped_column(Text)
    configuration: Mapped[dict[str, Any] | None] = mapped_column(JsonType)


class PromidataCategory(Base):
    """A category of CAT.csv (``code;name;parent_code``)."""

    __tablename__ = "promidata_categories"

    code: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    parent_code: Mapped[str | None] = mapped_column(String(255))


class PromidataImage(Base):
    """A stored image, keyed by the SHA-256 of its bytes (shared by every variant showing it)."""

    __tablename__ = "promidata_images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255))
    source_url: Mapped[str] = mapped_column(Text)
    stored_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PromidataImageLink(Base):
    """An image shown by a family or variant (the image row exists once it is stored)."""

    __tablename__ = "promidata_image_links"
    __table_args__ = (
        Index("ix_promidata_image_links_image", "image_sha256"),
        Index("ix_promidata_image_links_supplier", "supplier"),
    )

    owner_sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    image_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)  # main | gallery
    supplier: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer, default=0)
    url: Mapped[str] = mapped_column(Text)


class PromidataFailure(Base):
    """A family or image that failed, with its reason; retried on its own until resolved."""

    __tablename__ = "promidata_failures"

    supplier: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # family | image
    item: Mapped[str] = mapped_column(String(128), primary_key=True)  # SKU or image SHA-256
    # The family hash (or image URL) that failed: a new hash is new work, not this failure.
    version: Mapped[str | None] = mapped_column(Text)
    # Dead: permanent, or retries exhausted; only a redrive or a new version retries it.
    dead: Mapped[bool] = mapped_column(Boolean, default=False)
    error_class: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_failed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_failed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[str | None] = mapped_column(String(64))


class PromidataProgress(Base):
    """Where one stage of one supplier's sync is (the seed's job status), updated as it runs."""

    __tablename__ = "promidata_progress"

    supplier: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(16), primary_key=True)  # catalog|products|images
    run_id: Mapped[str | None] = mapped_column(String(64))
    # waiting | active | completed | failed
    state: Mapped[str] = mapped_column(String(16), default="waiting")
    step: Mapped[str | None] = mapped_column(String(64))
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    figures: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def percent(self) -> float:
        """Share done, 0-100."""
        return round(100.0 * self.done / self.total, 1) if self.total else 0.0


class Campaign(Base):
    """An outreach campaign: sender mailbox, templates, follow-up steps and a daily send cap."""

    __tablename__ = "outreach_campaigns"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    sender: Mapped[str] = mapped_column(String(255))
    subject_template: Mapped[str] = mapped_column(Text)
    body_template: Mapped[str] = mapped_column(Text)
    # [{"delay_days": 3, "subject": "...", "body": "..."}, ...] sent after the first message.
    followups: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    daily_cap: Mapped[int] = mapped_column(Integer, default=50)
    min_gap_seconds: Mapped[int] = mapped_column(Integer, default=60)
    # active | paused
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Prospect(Base):
    """A person a campaign e-mails; `state` runs new → enriched → contacted → replied/...."""

    __tablename__ = "outreach_prospects"
    __table_args__ = (
        Index("uq_outreach_prospects_campaign_email", "campaign", "email", unique=True),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign: Mapped[str] = mapped_column(
        String(64), ForeignKey("outreach_campaigns.name", ondelete="CASCADE"), index=True
    )
    # hot | warm | cold
    tier: Mapped[str] = mapped_column(String(8), default="cold")
    first_name: Mapped[str] = mapped_column(String(128))
    last_name: Mapped[str] = mapped_column(String(128))
    company: Mapped[str] = mapped_column(String(255))
    domain: Mapped[str | None] = mapped_column(String(255))
    website_ok: Mapped[bool | None] = mapped_column(Boolean)
    email: Mapped[str | None] = mapped_column(String(320))
    email_confidence: Mapped[int | None] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # new | enriched | contacted | replied | bounced | unsubscribed | done
    state: Mapped[str] = mapped_column(String(16), default="new", index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    # Messages of the sequence sent so far (0: none; 1: first; 2: first follow-up ...).
    step: Mapped[int] = mapped_column(Integer, default=0)
    last_sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class OutboxMessage(Base):
    """One e-mail to send, written with its Message-ID before SMTP is spoken (never twice)."""

    __tablename__ = "outreach_outbox"
    __table_args__ = (
        Index("uq_outreach_outbox_prospect_step", "prospect_id", "step", unique=True),
        Index("ix_outreach_outbox_sender_sent", "sender", "sent_at"),
    )

    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    prospect_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("outreach_prospects.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[int] = mapped_column(Integer)
    sender: Mapped[str] = mapped_column(String(255))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    # pending | sending | sent | ambiguous | failed
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sending_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class InboundMessage(Base):
    """A message read from the sender's INBOX over IMAP, matched to the outbox or not."""

    __tablename__ = "outreach_inbound"
    __table_args__ = (
        Index("uq_outreach_inbound_mailbox_uid", "mailbox", "uidvalidity", "uid", unique=True),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    mailbox: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(String(255))
    from_addr: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    # matched | unmatched | malformed
    match: Mapped[str] = mapped_column(String(16), index=True)
    outbox_message_id: Mapped[str | None] = mapped_column(String(255))
    prospect_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # human | auto_reply | bounce_hard | bounce_soft | unsubscribe
    classification: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    applied_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CrmSyncState(Base):
    """What the CRM holds for a prospect: the hash of the last upserted row."""

    __tablename__ = "outreach_crm_sync"

    prospect_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("outreach_prospects.id", ondelete="CASCADE"), primary_key=True
    )
    row_hash: Mapped[str] = mapped_column(String(64))
    synced_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
