"""Outreach as five sources on the one source shape, sharing the `prospects` partition set.

Each job type of the seed's queue is a `SyncSource`: its asset per prospect, single-prospect
job, sweep job (batch runs, each prospect's outcome on its own partition), schedules and
dead-letter check come from `core/source.py`. Outreach's own sensors keep the partition set
equal to the prospects, bring parked and handed-over work back (the shared request builders),
and turn new inbound mail into `prospect_replies` runs at the highest priority.

The schedules start stopped: they need the HUNTER_*, SMTP_*, IMAP_* and SUPABASE_* settings
(see `outreach_clients`); start them in the UI once those are set.
"""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
from pydantic import Field
from sqlalchemy import or_, select

from sync_pipeline.core import batching, priorities
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import (
    CrmSyncState,
    InboundMessage,
    OutboxMessage,
    Prospect,
    SyncState,
    utcnow,
)
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.settings import Env
from sync_pipeline.core.source import (
    PartitionSet,
    SourceDefs,
    SweepSchedule,
    SyncSource,
    source_defs,
)
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome
from sync_pipeline.defs.outreach.resources import (
    HunterResource,
    ImapResource,
    SmtpResource,
    SupabaseResource,
)
from sync_pipeline.defs.outreach.sync import (
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_SOFT_BOUNCE_LIMIT,
    SOURCE_CRM,
    SOURCE_EMAIL,
    SOURCE_REPLY,
    SOURCE_SEND,
    SOURCE_WEBSITE,
    SendSettings,
    enrich_email,
    enrich_website,
    poll_inbox,
    process_reply,
    send_email,
    send_queue,
    sync_to_crm,
)

prospects = dg.DynamicPartitionsDefinition(name="prospects")


def prospect_ids(db_url: str) -> list[str]:
    """Every prospect (a removed prospect's partition goes with it)."""
    with transaction(db_url) as s:
        return list(s.scalars(select(Prospect.id).order_by(Prospect.created_at, Prospect.id)))


PROSPECTS = PartitionSet(prospects, members=prospect_ids)


class OutreachMailer(dg.ConfigurableResource):
    """What send_email needs: the app DB, SMTP to send, IMAP to reconcile."""

    app_db: AppDatabaseResource
    smtp: SmtpResource
    imap: ImapResource
    unsubscribe_url: str = "https://outreach.invalid/unsubscribe/{token}"
    unsubscribe_key: str = Field(
        default="", description="Signs each prospect's unsubscribe link (never logged)."
    )


class OutreachInbox(dg.ConfigurableResource):
    """What process_reply needs: the app DB and the sender's IMAP mailbox."""

    app_db: AppDatabaseResource
    imap: ImapResource
    soft_bounce_limit: int = Field(
        default=DEFAULT_SOFT_BOUNCE_LIMIT,
        description="Soft bounces in a row (no delivery between) that make a prospect bounced.",
    )


class OutreachCrm(dg.ConfigurableResource):
    """What sync_to_crm needs: the app DB and Supabase REST."""

    app_db: AppDatabaseResource
    supabase: SupabaseResource


class EmailOptions(dg.Config):
    """Options of enrich_email."""

    min_confidence: int = Field(
        default=DEFAULT_MIN_CONFIDENCE, ge=0, le=100, description="Skip addresses scored below."
    )


def _waiting(db_url: str, source: str) -> set[str]:
    """Prospects a sweep leaves alone: dead letters (redrive them) and work parked for later."""
    now = utcnow()
    with transaction(db_url) as s:
        return set(
            s.scalars(
                select(SyncState.partition_key).where(
                    SyncState.source == source,
                    or_(
                        SyncState.status == "dead",
                        (SyncState.status == "parked") & (SyncState.blocked_until > now),
                    ),
                )
            )
        )


def _keys(db_url: str, source: str, query: object) -> list[str]:
    with transaction(db_url) as s:
        ids = list(s.scalars(query))  # type: ignore[call-overload]
    skip = _waiting(db_url, source)
    return [i for i in ids if i not in skip]


def website_keys(db_url: str) -> list[str]:
    """Prospects whose company domain or website check is missing."""
    query = select(Prospect.id).where(
        Prospect.state == "new", or_(Prospect.domain.is_(None), Prospect.website_ok.is_(None))
    )
    return _keys(db_url, SOURCE_WEBSITE, query.order_by(Prospect.created_at))


def email_keys(db_url: str) -> list[str]:
    """Prospects with a domain and no address yet."""
    query = select(Prospect.id).where(
        Prospect.state == "new", Prospect.domain.is_not(None), Prospect.email.is_(None)
    )
    return _keys(db_url, SOURCE_EMAIL, query.order_by(Prospect.created_at))


def send_keys(db_url: str) -> list[str]:
    """Prospects with a message to send or settle, hot first, stale ones raised by aging."""
    skip = _waiting(db_url, SOURCE_SEND)
    return [k for k in send_queue(db_url, dt.datetime.now(dt.UTC)) if k not in skip]


def reply_keys(db_url: str) -> list[str]:
    """Prospects with inbound mail not applied yet."""
    query = (
        select(InboundMessage.prospect_id)
        .where(InboundMessage.prospect_id.is_not(None), InboundMessage.applied_at.is_(None))
        .distinct()
    )
    return _keys(db_url, SOURCE_REPLY, query)


def crm_keys(db_url: str) -> list[str]:
    """Prospects changed since their last CRM upsert (or never upserted)."""
    query = (
        select(Prospect.id)
        .outerjoin(CrmSyncState, CrmSyncState.prospect_id == Prospect.id)
        .where(or_(CrmSyncState.synced_at.is_(None), Prospect.updated_at > CrmSyncState.synced_at))
        .order_by(Prospect.id)
    )
    return _keys(db_url, SOURCE_CRM, query)


def hunter_resource(app_db: AppDatabaseResource, env: Env) -> HunterResource:
    """The Hunter client from HUNTER_API_KEY, HUNTER_BASE_URL and HUNTER_WEBSITE_URL."""
    return HunterResource(
        app_db=app_db,
        api_key=env("HUNTER_API_KEY"),
        base_url=env("HUNTER_BASE_URL"),
        website_url=env("HUNTER_WEBSITE_URL"),
    )


def _smtp(env: Env) -> SmtpResource:
    return SmtpResource(
        host=env("SMTP_HOST"),
        port=env("SMTP_PORT", integer=True),
        username=env("SMTP_USERNAME"),
        password=env("SMTP_PASSWORD"),
        security=env("SMTP_SECURITY"),
    )


def _imap(env: Env) -> ImapResource:
    return ImapResource(
        host=env("IMAP_HOST"),
        port=env("IMAP_PORT", integer=True),
        username=env("IMAP_USERNAME"),
        password=env("IMAP_PASSWORD"),
        security=env("IMAP_SECURITY"),
    )


def mailer_resource(app_db: AppDatabaseResource, env: Env) -> OutreachMailer:
    """SMTP_* and IMAP_* settings, OUTREACH_UNSUBSCRIBE_URL and OUTREACH_UNSUBSCRIBE_KEY."""
    return OutreachMailer(
        app_db=app_db,
        smtp=_smtp(env),
        imap=_imap(env),
        unsubscribe_url=env("OUTREACH_UNSUBSCRIBE_URL"),
        unsubscribe_key=env("OUTREACH_UNSUBSCRIBE_KEY"),
    )


def inbox_resource(app_db: AppDatabaseResource, env: Env) -> OutreachInbox:
    """IMAP_* settings and OUTREACH_SOFT_BOUNCE_LIMIT."""
    return OutreachInbox(
        app_db=app_db,
        imap=_imap(env),
        soft_bounce_limit=env(
            "OUTREACH_SOFT_BOUNCE_LIMIT", default=str(DEFAULT_SOFT_BOUNCE_LIMIT), integer=True
        ),
    )


def crm_resource(app_db: AppDatabaseResource, env: Env) -> OutreachCrm:
    """SUPABASE_URL, SUPABASE_SERVICE_KEY, SUPABASE_TABLE."""
    return OutreachCrm(
        app_db=app_db,
        supabase=SupabaseResource(
            url=env("SUPABASE_URL"),
            service_key=env("SUPABASE_SERVICE_KEY"),
            table=env("SUPABASE_TABLE"),
        ),
    )


def _website(client: HunterResource, key: str, ctx: RunContext, options: object) -> SyncOutcome:
    return enrich_website(client, key, ctx)


def _email(client: HunterResource, key: str, ctx: RunContext, options: EmailOptions) -> SyncOutcome:
    return enrich_email(client, key, ctx, min_confidence=options.min_confidence)


def _send(client: OutreachMailer, key: str, ctx: RunContext, options: object) -> SyncOutcome:
    settings = SendSettings(
        unsubscribe_url=client.unsubscribe_url, unsubscribe_key=client.unsubscribe_key
    )
    return send_email(client.smtp, client.imap, client.app_db, key, ctx, settings=settings)


def _reply(client: OutreachInbox, key: str, ctx: RunContext, options: object) -> SyncOutcome:
    return process_reply(client.app_db, key, ctx, soft_bounce_limit=client.soft_bounce_limit)


def _crm_many(
    client: OutreachCrm, keys: list[str], ctx: RunContext, options: object
) -> list[SyncOutcome]:
    return sync_to_crm(client.supabase, client.app_db, keys, ctx)


def _crm(client: OutreachCrm, key: str, ctx: RunContext, options: object) -> SyncOutcome:
    return _crm_many(client, [key], ctx, options)[0]


def _declare(
    name: str,
    asset: str,
    title: str,
    description: str,
    sync: object,
    keys: object,
    resource: object,
    schedules: tuple[SweepSchedule, ...],
    **extra: object,
) -> SyncSource:
    return SyncSource(
        name=name,
        title=title,
        entity=asset,
        noun="prospect",
        description=description,
        group="outreach",
        kinds=frozenset({"outreach"}),
        partitions=PROSPECTS,
        sync=sync,  # type: ignore[arg-type]
        sweep_keys=keys,  # type: ignore[arg-type]
        needs_reconnect=lambda db_url: 0,
        resource=resource,  # type: ignore[arg-type]
        schedules=schedules,
        asset_name=asset,
        # Parked outreach work waits for a backoff, business hours, a cap or a month's credits:
        # requested when due (the run re-checks), not ahead of a rate window.
        parked_lead_seconds=0.0,
        **extra,  # type: ignore[arg-type]
    )


WEBSITE = _declare(
    SOURCE_WEBSITE,
    "prospect_website",
    "Outreach enrich_website",
    "The prospect's company domain (Hunter domain search) and whether its website answers.",
    _website,
    website_keys,
    hunter_resource,
    (
        SweepSchedule(
            "outreach_enrich_website",
            "*/10 * * * *",
            "Every 10 minutes: find domains.",
        ),
    ),
)
EMAIL = _declare(
    SOURCE_EMAIL,
    "prospect_email",
    "Outreach enrich_email",
    "The prospect's e-mail address and Hunter's confidence (kept above the threshold).",
    _email,
    email_keys,
    hunter_resource,
    (
        SweepSchedule(
            "outreach_enrich_email",
            "5-59/10 * * * *",
            "Every 10 minutes: addresses.",
        ),
    ),
    options=EmailOptions,
)
SEND = _declare(
    SOURCE_SEND,
    "outreach_messages",
    "Outreach send_email",
    "What was sent to the prospect, when, with which Message-ID (never twice).",
    _send,
    send_keys,
    mailer_resource,
    (
        SweepSchedule(
            "outreach_send",
            "*/5 * * * *",
            "Every 5 minutes, the seed's `*/5 8-18 * * 1-6` applied in each prospect's own "
            "time zone (a send outside them parks until they open), hot prospects first.",
        ),
    ),
)
REPLY = _declare(
    SOURCE_REPLY,
    "prospect_replies",
    "Outreach process_reply",
    "Replies, auto-replies and bounces applied to the prospect (the first reply stops it).",
    _reply,
    reply_keys,
    inbox_resource,
    (),
    first_sync=False,  # runs when mail arrives (outreach_replies_sensor)
)
CRM = _declare(
    SOURCE_CRM,
    "crm_prospects",
    "Outreach sync_to_crm",
    "The prospect's row in the CRM (Supabase), equal to the app's state.",
    _crm,
    crm_keys,
    crm_resource,
    (
        SweepSchedule(
            "outreach_crm_sync",
            "*/15 * * * *",
            "Every 15 minutes: CRM upserts.",
        ),
    ),
    sync_many=_crm_many,
    first_sync=False,  # the CRM row follows the prospect's state changes (its schedule)
)
OUTREACH_SOURCES: tuple[SyncSource, ...] = (WEBSITE, EMAIL, SEND, REPLY, CRM)
BUILT: tuple[SourceDefs, ...] = tuple(source_defs(s) for s in OUTREACH_SOURCES)
JOBS = [job for built in BUILT for job in (built.single_job, built.sweep_job)]
#: The seed's queue priorities as run priorities (higher runs first in Dagster).
RUN_PRIORITY = {
    SOURCE_REPLY: priorities.WEBHOOK,
    SOURCE_SEND: priorities.BATCH,
    SOURCE_EMAIL: priorities.BATCH,
    SOURCE_WEBSITE: priorities.BATCH,
    SOURCE_CRM: priorities.RETRY,
}


@dg.asset(
    group_name="outreach",
    kinds={"imap"},
    required_resource_keys={SOURCE_REPLY},
    description="New mail of the sender's INBOX read over IMAP into the app DB (matched to the "
    "outbox or recorded unmatched); prospect_replies applies it.",
)
def outreach_inbox(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Poll the INBOX once."""
    inbox: OutreachInbox = getattr(context.resources, SOURCE_REPLY)
    inbox.app_db.check()
    touched = poll_inbox(inbox.imap, inbox.app_db.url)
    return dg.MaterializeResult(metadata={"prospects_with_new_mail": len(touched)})


inbox_job = dg.define_asset_job("outreach_inbox_job", selection=[outreach_inbox])


@dg.schedule(
    name="outreach_inbox_poll",
    job=inbox_job,
    cron_schedule="* * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def inbox_schedule(
    context: dg.ScheduleEvaluationContext, app_db: AppDatabaseResource
) -> dg.RunRequest | dg.SkipReason:
    """Every minute (the seed's worker cron): read new mail over IMAP, once mail was sent."""
    with transaction(app_db.url) as s:
        sent = s.scalar(select(OutboxMessage.message_id).limit(1))
    if sent is None:
        return dg.SkipReason("no outreach mail sent yet: no replies to read")
    return dg.RunRequest(run_key=None)


@dg.sensor(
    job=source_defs(REPLY).sweep_job,
    minimum_interval_seconds=batching.PARKED_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def outreach_replies_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
) -> dg.SensorResult | dg.SkipReason:
    """New inbound mail becomes reply runs at the highest outreach priority (the seed's
    process_reply 1); parked and handed-over work comes back through the shared sensors."""
    known = set(context.instance.get_dynamic_partitions(prospects.name or ""))
    replies = [k for k in reply_keys(app_db.url) if k in known]
    if not replies:
        return dg.SkipReason("no new replies")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                job_name=REPLY.sweep_job_name,
                run_key=batching.batch_run_key("replies", chunk),
                run_config=REPLY.sweep_run_config(keys=chunk),
                tags=priorities.run_tags(RUN_PRIORITY[SOURCE_REPLY], SOURCE_REPLY, "inbound_mail"),
            )
            for chunk in batching.chunked(replies, batching.SWEEP_BATCH)
        ]
    )


def _definitions() -> Iterator[dg.Definitions]:
    for built in BUILT:
        yield built.definitions()


defs = dg.Definitions.merge(
    *_definitions(),
    dg.Definitions(
        assets=[outreach_inbox],
        jobs=[inbox_job],
        schedules=[inbox_schedule],
        sensors=[outreach_replies_sensor],
    ),
)
