"""Outreach job types, one prospect each, on the shared sync runner and checkpoints.

enrich_website → enrich_email → send_email → process_reply, and sync_to_crm. Every job type
is idempotent (what is done is never done again: no second credit, e-mail or CRM row), runs
under the prospect's lease for that job type, parks transient failures for 5, 10, 20 and 40
minutes and then dead-letters them, and dead-letters permanent ones at once.

A message is never sent twice: its outbox row, with a Message-ID derived from (campaign,
prospect, step), is committed in state ``sending`` before SMTP is spoken. A later attempt
that finds the row still ``sending`` (the process died, or the connection dropped while the
server decided) marks it ``ambiguous`` and looks for that Message-ID in the sender's Sent
folder over IMAP: found, it is recorded as sent; only when it is absent is it sent again.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError

from sync_pipeline.core.budget import Window
from sync_pipeline.core.checkpoints import Checkpoints, LeaseHeldError, Session
from sync_pipeline.core.db import transaction, upsert
from sync_pipeline.core.errors import (
    ConfigError,
    PermanentError,
    RateLimitedError,
    SyncError,
)
from sync_pipeline.core.models import (
    Campaign,
    CrmSyncState,
    InboundMessage,
    OutboxMessage,
    Prospect,
    utcnow,
)
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome, refuse, run_sync
from sync_pipeline.defs.outreach.resources import (
    HunterResource,
    ImapResource,
    SendUnknownError,
    SmtpRefusedError,
    SmtpResource,
    SupabaseResource,
)
from sync_pipeline.defs.outreach.unsubscribe import unsubscribe_token, unsubscribe_url

SOURCE = "outreach"
SOURCE_WEBSITE = "outreach_website"
SOURCE_EMAIL = "outreach_email"
SOURCE_SEND = "outreach_send"
SOURCE_REPLY = "outreach_reply"
SOURCE_CRM = "outreach_crm"
JOB_SOURCES = {
    "enrich_website": SOURCE_WEBSITE,
    "enrich_email": SOURCE_EMAIL,
    "send_email": SOURCE_SEND,
    "process_reply": SOURCE_REPLY,
    "sync_to_crm": SOURCE_CRM,
}
#: The seed's queue priorities (1 is the highest).
PRIORITY = {
    "process_reply": 1,
    "hot": 2,
    "warm": 4,
    "enrich_email": 5,
    "cold": 6,
    "enrich_website": 7,
    "sync_to_crm": 8,
}
TIERS = ("hot", "warm", "cold")
#: Transient failures wait 5, 10, 20, 40 minutes, then the work is a dead letter.
BACKOFF = tuple(dt.timedelta(minutes=m) for m in (5, 10, 20, 40))
#: Per job type: how long one prospect's work may hold its lease (its timeout).
LEASE_TTL = {
    SOURCE_WEBSITE: dt.timedelta(minutes=2),
    SOURCE_EMAIL: dt.timedelta(minutes=2),
    SOURCE_SEND: dt.timedelta(minutes=5),
    SOURCE_REPLY: dt.timedelta(minutes=2),
    SOURCE_CRM: dt.timedelta(minutes=5),
}
DEFAULT_MIN_CONFIDENCE = 70
#: The seed's send cron ``*/5 8-18 * * 1-6``: Monday to Saturday, 08:00 to 18:59 local.
BUSINESS_DAYS = frozenset(range(6))
BUSINESS_OPEN, BUSINESS_CLOSE = dt.time(8), dt.time(19)
#: One tier level of priority gained per day of waiting: cold work is never starved.
AGING = dt.timedelta(days=1)
FINAL = ("replied", "bounced", "unsubscribed", "done")
EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MSGID_RE = re.compile(r"<[^<>\s]+>")
#: Outgoing messages: headers fold only past RFC 5322's 998 characters, so a long
#: List-Unsubscribe URL stays one plain header line (the 78-character default would turn it
#: into RFC 2047 encoded words, which mail clients do not read as a URL).
OUTGOING = default_policy.clone(max_line_length=998)


class TemplateError(PermanentError):
    """The campaign's template does not render for this prospect (e.g. a missing variable)."""

    error_class = "template"


class InvalidAddressError(PermanentError):
    """The address is not a valid e-mail address."""

    error_class = "invalid_address"


def valid_email(address: str) -> bool:
    """A syntactically valid addr-spec (what SMTP would accept)."""
    return len(address) <= 320 and EMAIL_RE.match(address) is not None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"Unknown time zone {name!r} (use an IANA name).") from exc


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _load(db_url: str, prospect_id: str) -> tuple[Prospect | None, Campaign | None]:
    with transaction(db_url) as s:
        prospect = s.get(Prospect, prospect_id)
        campaign = s.get(Campaign, prospect.campaign) if prospect is not None else None
        return prospect, campaign


def _missing(cp: Checkpoints, outcome: SyncOutcome, ctx: RunContext) -> SyncOutcome:
    return refuse(
        cp,
        outcome,
        ctx,
        error_class="not_found",
        message=f"Prospect {outcome.key!r} does not exist (removed?); nothing to do.",
        record=False,
    )


def _update_prospect(db_url: str, prospect_id: str, **values: Any) -> None:
    with transaction(db_url) as s:
        s.execute(update(Prospect).where(Prospect.id == prospect_id).values(**values))


# -- enrichment ------------------------------------------------------------------------------
def enrich_website(hunter: HunterResource, prospect_id: str, ctx: RunContext) -> SyncOutcome:
    """Find the prospect's company domain (Hunter domain search) and check its site answers."""
    db_url = hunter.app_db.url
    cp = hunter.app_db.checkpoints(SOURCE_WEBSITE, ttl=LEASE_TTL[SOURCE_WEBSITE])
    outcome = SyncOutcome(key=prospect_id, mode="incremental")
    prospect, _ = _load(db_url, prospect_id)
    if prospect is None:
        return _missing(cp, outcome, ctx)

    def work(session: Session) -> None:
        current, _ = _load(db_url, prospect_id)
        assert current is not None
        if current.domain and current.website_ok is not None:
            outcome.add(already_done=1)
            return
        domain = current.domain
        if not domain:
            domain = hunter.domain_search(current.company, outcome.stats).domain
        if not domain:
            raise PermanentError(f"Hunter knows no domain for company {current.company!r}")
        answers = hunter.website_answers(domain)
        _update_prospect(db_url, prospect_id, domain=domain, website_ok=answers)
        outcome.add(domains_found=1, websites_up=int(answers))

    return run_sync(
        cp,
        outcome,
        ctx,
        work,
        lease_ttl=LEASE_TTL[SOURCE_WEBSITE],
        full_when_new=False,
        backoff=BACKOFF,
    )


def enrich_email(
    hunter: HunterResource,
    prospect_id: str,
    ctx: RunContext,
    *,
    min_confidence: int = DEFAULT_MIN_CONFIDENCE,
) -> SyncOutcome:
    """Find the prospect's address (Hunter e-mail finder); below `min_confidence` it is skipped."""
    db_url = hunter.app_db.url
    cp = hunter.app_db.checkpoints(SOURCE_EMAIL, ttl=LEASE_TTL[SOURCE_EMAIL])
    outcome = SyncOutcome(key=prospect_id, mode="incremental")
    prospect, _ = _load(db_url, prospect_id)
    if prospect is None:
        return _missing(cp, outcome, ctx)

    def work(session: Session) -> None:
        current, _ = _load(db_url, prospect_id)
        assert current is not None
        if current.email or current.state != "new":
            outcome.add(already_done=1)
            return
        if not current.domain:
            raise PermanentError("No company domain yet: enrich_website must run first.")
        found = hunter.email_finder(
            current.domain, current.first_name, current.last_name, outcome.stats
        )
        if found.email is None:
            raise PermanentError(
                f"Hunter found no address for {current.first_name} {current.last_name} at "
                f"{current.domain}"
            )
        if not valid_email(found.email):
            raise InvalidAddressError(f"Hunter returned an invalid address {found.email!r}")
        score = found.score or 0
        if score < min_confidence:
            _update_prospect(
                db_url,
                prospect_id,
                email_confidence=score,
                state="done",
                state_reason=f"address confidence {score} below {min_confidence}: not e-mailed",
            )
            outcome.add(below_threshold=1)
            return
        try:
            _update_prospect(
                db_url,
                prospect_id,
                email=found.email,
                email_confidence=score,
                state="enriched",
                state_reason=None,
            )
        except IntegrityError as exc:
            raise PermanentError(
                f"{found.email} already belongs to another prospect of this campaign"
            ) from exc
        outcome.add(emails_found=1)

    return run_sync(
        cp,
        outcome,
        ctx,
        work,
        lease_ttl=LEASE_TTL[SOURCE_EMAIL],
        full_when_new=False,
        backoff=BACKOFF,
    )


# -- sending ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendSettings:
    """Where unsubscribe requests go (both announced in List-Unsubscribe, RFC 8058) and the
    key signing each prospect's link (OUTREACH_UNSUBSCRIBE_KEY; nothing is sent without it)."""

    unsubscribe_url: str = "https://outreach.invalid/unsubscribe/{token}"
    unsubscribe_mailto: str | None = None
    unsubscribe_key: str = field(default="", repr=False)


def message_id(campaign: str, prospect_id: str, step: int, sender: str) -> str:
    """The Message-ID of a prospect's step: the same on every attempt (reconciliation key)."""
    digest = hashlib.sha256(f"{campaign}\x00{prospect_id}\x00{step}".encode()).hexdigest()[:32]
    domain = sender.rpartition("@")[2] or "outreach.invalid"
    return f"<outreach.{digest}@{domain}>"


def business_open(now: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
    """None when `now` is within business hours in `tz`, else when they next open (UTC)."""
    local = now.astimezone(tz)
    if local.weekday() in BUSINESS_DAYS and BUSINESS_OPEN <= local.time() < BUSINESS_CLOSE:
        return None
    day = local.date()
    if local.time() >= BUSINESS_OPEN or local.weekday() not in BUSINESS_DAYS:
        day += dt.timedelta(days=1)
    while day.weekday() not in BUSINESS_DAYS:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, BUSINESS_OPEN, tz).astimezone(dt.UTC)


def steps_of(campaign: Campaign) -> list[dict[str, Any]]:
    """The campaign's messages: the first one, then its follow-ups (with their delays)."""
    first = {"delay_days": 0, "subject": campaign.subject_template, "body": campaign.body_template}
    return [first, *list(campaign.followups or [])]


_JINJA = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


def render(template: str, variables: dict[str, Any], what: str) -> str:
    """Render a Jinja2 template; a missing variable or bad syntax is a TemplateError."""
    try:
        return _JINJA.from_string(template).render(**variables)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"campaign {what} template: {type(exc).__name__}: {exc}") from exc


def template_variables(
    prospect: Prospect, campaign: Campaign, settings: SendSettings
) -> dict[str, Any]:
    """What a template may use."""
    return {
        "first_name": prospect.first_name,
        "last_name": prospect.last_name,
        "company": prospect.company,
        "domain": prospect.domain,
        "email": prospect.email,
        "tier": prospect.tier,
        "campaign": campaign.name,
        "sender": campaign.sender,
        "unsubscribe_url": unsubscribe_url(
            settings.unsubscribe_url, settings.unsubscribe_key, prospect.id
        ),
    }


def build_message(row: OutboxMessage, previous: str | None, settings: SendSettings) -> EmailMessage:
    """The e-mail of an outbox row (the same bytes-to-be on every attempt)."""
    msg = EmailMessage(policy=OUTGOING)
    msg["From"] = row.sender
    msg["To"] = row.recipient
    msg["Subject"] = row.subject
    msg["Date"] = email.utils.format_datetime(_aware(row.created_at) or utcnow())
    msg["Message-ID"] = row.message_id
    if previous:
        msg["In-Reply-To"] = previous
        msg["References"] = previous
    token = unsubscribe_token(settings.unsubscribe_key, row.prospect_id)
    targets = [f"<{settings.unsubscribe_url.format(token=token)}>"]
    if settings.unsubscribe_mailto:
        targets.append(f"<mailto:{settings.unsubscribe_mailto}?subject=unsubscribe-{token}>")
    msg["List-Unsubscribe"] = ", ".join(targets)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(row.body)
    return msg


def mailbox_windows(campaign: Campaign) -> list[Window]:
    """The sender mailbox's daily cap and minimum gap, in the shared budget."""
    windows = [Window(f"outreach:mailbox:{campaign.sender}:day", 86400, campaign.daily_cap)]
    if campaign.min_gap_seconds > 0:
        windows.append(
            Window(f"outreach:mailbox:{campaign.sender}:gap", campaign.min_gap_seconds, 1)
        )
    return windows


def _mark_sent(db_url: str, mid: str, *, reconciled: bool) -> None:
    now = utcnow()
    with transaction(db_url) as s:
        row = s.get(OutboxMessage, mid)
        assert row is not None
        row.state, row.sent_at = "sent", row.sent_at or now
        row.last_error = (
            "found in the Sent folder after an interrupted send" if reconciled else None
        )
        prospect = s.get(Prospect, row.prospect_id)
        if prospect is not None and prospect.step <= row.step:
            prospect.step = row.step + 1
            prospect.last_sent_at = row.sent_at
            if prospect.state in ("new", "enriched"):
                prospect.state = "contacted"


def send_email(
    smtp: SmtpResource,
    imap: ImapResource,
    app_db: AppDatabaseResource,
    prospect_id: str,
    ctx: RunContext,
    *,
    settings: SendSettings | None = None,
    now: dt.datetime | None = None,
    after_accept: Callable[[], None] | None = None,
) -> SyncOutcome:
    """Send the prospect's next message of the campaign, at most once (see module doc).

    Parks (never fails) outside the prospect's business hours and when the sender's daily
    cap or minimum gap is reached. `after_accept` runs between the server's acceptance and
    the commit that records it (tests kill the process there).
    """
    settings = settings or SendSettings()
    db_url = app_db.url
    cp = app_db.checkpoints(SOURCE_SEND, ttl=LEASE_TTL[SOURCE_SEND])
    outcome = SyncOutcome(key=prospect_id, mode="incremental")
    prospect, campaign = _load(db_url, prospect_id)
    if prospect is None or campaign is None:
        return _missing(cp, outcome, ctx)

    def work(session: Session) -> None:
        moment = now or dt.datetime.now(dt.UTC)
        current, camp = _load(db_url, prospect_id)
        assert current is not None and camp is not None
        # 1. An earlier attempt that may have reached the server is settled first.
        with transaction(db_url) as s:
            open_rows = list(
                s.scalars(
                    select(OutboxMessage).where(
                        OutboxMessage.prospect_id == prospect_id,
                        OutboxMessage.state.in_(("sending", "ambiguous")),
                    )
                )
            )
        for row in open_rows:
            _update_outbox(db_url, row.message_id, state="ambiguous")
            if imap.sent_contains(row.message_id):
                _mark_sent(db_url, row.message_id, reconciled=True)
                outcome.add(reconciled_sent=1)
            else:
                _update_outbox(db_url, row.message_id, state="pending")
                outcome.add(reconciled_unsent=1)
        current, camp = _load(db_url, prospect_id)
        assert current is not None and camp is not None
        # 2. Who is never e-mailed (again), and what is not due yet.
        if current.state in FINAL:
            outcome.add(not_eligible=1)
            return
        if current.state == "new" or not current.email:
            outcome.add(not_enriched=1)
            return
        if camp.state != "active":
            outcome.add(campaign_paused=1)
            return
        steps = steps_of(camp)
        step = current.step
        if step >= len(steps):
            outcome.add(sequence_done=1)
            return
        last = _aware(current.last_sent_at)
        if step > 0 and last is not None:
            due = last + dt.timedelta(days=float(steps[step].get("delay_days", 0)))
            if moment < due:
                outcome.add(not_due=1)
                return
        if not valid_email(current.email):
            raise InvalidAddressError(f"{current.email!r} is not a valid e-mail address")
        opens = business_open(moment, _zone(current.timezone))
        if opens is not None:
            raise RateLimitedError(
                f"outside business hours in {current.timezone}; opens {opens:%Y-%m-%d %H:%M} UTC",
                retry_at=opens.timestamp(),
            )
        # Every message carries the prospect's signed one-click link: no key, no mail.
        unsubscribe_token(settings.unsubscribe_key, prospect_id)
        # 3. The outbox row, rendered and committed before anything is sent.
        mid = message_id(camp.name, prospect_id, step, camp.sender)
        with transaction(db_url) as s:
            existing = s.get(OutboxMessage, mid)
        if existing is None:
            variables = template_variables(current, camp, settings)
            subject = render(str(steps[step]["subject"]), variables, f"step {step} subject")
            body = render(str(steps[step]["body"]), variables, f"step {step} body")
            row = OutboxMessage(
                message_id=mid,
                prospect_id=prospect_id,
                step=step,
                sender=camp.sender,
                recipient=current.email,
                subject=subject.strip(),
                body=body,
                state="pending",
            )
            with transaction(db_url) as s:
                s.add(row)
        elif existing.state == "sent":
            _mark_sent(db_url, mid, reconciled=False)
            outcome.add(already_sent=1)
            return
        else:
            row = existing
        # 4. The sender mailbox's cap and gap, shared by every process.
        reset = app_db.budget().try_acquire(mailbox_windows(camp))
        if reset:
            raise RateLimitedError(
                f"mailbox {camp.sender}: daily cap or minimum gap reached", retry_at=reset
            )
        previous = message_id(camp.name, prospect_id, step - 1, camp.sender) if step else None
        message = build_message(row, previous, settings)
        with transaction(db_url) as s:
            s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.message_id == mid)
                .values(
                    state="sending",
                    sending_at=utcnow(),
                    attempts=OutboxMessage.attempts + 1,
                )
            )
        # 5. SMTP. From here until the commit below, a crash leaves the row "sending".
        try:
            with smtp.connect() as conn:
                smtp.send(conn, message)
        except SendUnknownError:
            raise  # stays "sending": the next attempt reconciles it over IMAP
        except SmtpRefusedError as exc:
            _update_outbox(db_url, mid, state="failed", last_error=str(exc)[:2000])
            _update_prospect(db_url, prospect_id, state="bounced", state_reason=str(exc)[:2000])
            raise
        except SyncError as exc:
            _update_outbox(db_url, mid, state="pending", last_error=str(exc)[:2000])
            raise
        if after_accept is not None:
            after_accept()
        _mark_sent(db_url, mid, reconciled=False)
        outcome.add(sent=1)

    return run_sync(
        cp,
        outcome,
        ctx,
        work,
        lease_ttl=LEASE_TTL[SOURCE_SEND],
        full_when_new=False,
        backoff=BACKOFF,
    )


def _update_outbox(db_url: str, mid: str, **values: Any) -> None:
    with transaction(db_url) as s:
        s.execute(update(OutboxMessage).where(OutboxMessage.message_id == mid).values(**values))


def send_priority(tier: str, waiting_since: dt.datetime, now: dt.datetime) -> float:
    """Seed priority of a send (hot 2, warm 4, cold 6), raised one tier level per day waited."""
    waited = max(0.0, (now - waiting_since) / AGING)
    return PRIORITY.get(tier, PRIORITY["cold"]) - 2 * int(waited)


def send_queue(db_url: str, now: dt.datetime, limit: int | None = None) -> list[str]:
    """Prospects with a message to send or settle, in priority order (aging included)."""
    unsettled = exists().where(
        OutboxMessage.prospect_id == Prospect.id,
        OutboxMessage.state.in_(("sending", "ambiguous")),
    )
    with transaction(db_url) as s:
        rows = s.execute(
            select(Prospect, Campaign)
            .join(Campaign, Campaign.name == Prospect.campaign)
            .where(
                ((Prospect.state.in_(("enriched", "contacted"))) & (Campaign.state == "active"))
                | unsettled
            )
        ).all()
    ready: list[tuple[float, dt.datetime, str]] = []
    for prospect, campaign in rows:
        steps = steps_of(campaign)
        if prospect.step >= len(steps) and prospect.state not in ("enriched",):
            continue
        since = _aware(prospect.last_sent_at) or _aware(prospect.updated_at) or now
        if prospect.step and prospect.step < len(steps):
            due = since + dt.timedelta(days=float(steps[prospect.step].get("delay_days", 0)))
            if due > now:
                continue
            since = due
        ready.append((send_priority(prospect.tier, since, now), since, prospect.id))
    ready.sort()
    ids = [pid for _, _, pid in ready]
    return ids[:limit] if limit is not None else ids


# -- replies ---------------------------------------------------------------------------------
AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
#: RFC 3464 actions of a DSN saying the message arrived (or left for a final hop).
DSN_SUCCESS = frozenset({"delivered", "relayed", "expanded"})
#: Soft bounces (distinct messages of ours) in a row, without a sign of delivery in between,
#: after which the prospect counts as bounced (OUTREACH_SOFT_BOUNCE_LIMIT).
DEFAULT_SOFT_BOUNCE_LIMIT = 3
#: Inbound mail proving that the prospect's mailbox takes our mail again: resets the count.
DELIVERY_SIGNS = frozenset({"human", "auto_reply", "unsubscribe", "delivered"})


@dataclass(frozen=True)
class Classified:
    """What an inbound message is and which of our messages it answers."""

    # human | auto_reply | bounce_hard | bounce_soft | delivered | unsubscribe
    classification: str
    detail: str | None
    refs: tuple[str, ...]


def _delivery_status(msg: Message) -> tuple[str | None, str | None]:
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            blocks = payload if isinstance(payload, list) else []
            for block in blocks:
                if not isinstance(block, Message):
                    continue
                status, action = block.get("Status"), block.get("Action")
                if status or action:
                    return (str(status) if status else None, str(action) if action else None)
    return None, None


def _original_ids(msg: Message) -> list[str]:
    ids = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                headers = BytesParser(policy=default_policy).parsebytes(text, headersonly=True)
                if headers.get("Message-ID"):
                    ids.extend(MSGID_RE.findall(str(headers["Message-ID"])))
        elif ctype == "message/rfc822":
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(first, Message) and first.get("Message-ID"):
                ids.extend(MSGID_RE.findall(str(first["Message-ID"])))
    return ids


def classify(msg: Message) -> Classified:
    """Human reply, RFC 3834 auto-reply, or a DSN: bounce (hard 5.x.x vs soft 4.x.x) or a
    success notice (2.x.x, Action delivered/relayed/expanded)."""
    refs = [
        *MSGID_RE.findall(str(msg.get("In-Reply-To") or "")),
        *MSGID_RE.findall(str(msg.get("References") or "")),
    ]
    if msg.get_content_type() == "multipart/report" and (
        str(msg.get_param("report-type") or "").lower() == "delivery-status"
    ):
        status, action = _delivery_status(msg)
        hard = (status or "").startswith("5") or (action or "").lower() == "failed"
        delivered = (status or "").startswith("2") or (action or "").lower() in DSN_SUCCESS
        kind = "bounce_hard" if hard else ("delivered" if delivered else "bounce_soft")
        return Classified(kind, f"Status {status}, Action {action}", (*refs, *_original_ids(msg)))
    auto_submitted = str(msg.get("Auto-Submitted") or "").strip().lower()
    if auto_submitted and auto_submitted != "no":
        return Classified("auto_reply", f"Auto-Submitted: {auto_submitted}", tuple(refs))
    if msg.get("X-Auto-Response-Suppress") is not None:
        value = str(msg["X-Auto-Response-Suppress"])
        return Classified("auto_reply", f"X-Auto-Response-Suppress: {value}", tuple(refs))
    precedence = str(msg.get("Precedence") or "").strip().lower()
    if precedence in AUTO_PRECEDENCE:
        return Classified("auto_reply", f"Precedence: {precedence}", tuple(refs))
    if msg.get("X-Autoreply") or msg.get("X-Autorespond"):
        return Classified("auto_reply", "X-Autoreply", tuple(refs))
    text = ""
    body = msg.get_body(preferencelist=("plain",)) if isinstance(msg, EmailMessage) else None
    if body is not None:
        try:
            text = str(body.get_content())
        except (LookupError, ValueError):
            text = ""
    first = next((line.strip().lower() for line in text.splitlines() if line.strip()), "")
    subject = str(msg.get("Subject") or "").lower()
    if first.startswith(("unsubscribe", "remove me", "stop")) or "unsubscribe" in subject:
        return Classified("unsubscribe", "asked to be removed", tuple(refs))
    return Classified("human", None, tuple(refs))


def record_inbound(
    db_url: str, mailbox: str, uidvalidity: int, uid: int, raw: bytes
) -> InboundMessage:
    """Store one fetched message, matched to the outbox or not; malformed mail is kept too."""
    try:
        msg = BytesParser(_class=EmailMessage, policy=default_policy).parsebytes(raw)
        found = classify(msg)
        mid = str(msg.get("Message-ID") or "")[:255] or None
        sender = str(msg.get("From") or "")[:320] or None
        subject = str(msg.get("Subject") or "") or None
    except Exception as exc:  # any parse failure: recorded as malformed, never lost
        found = Classified("malformed", f"{type(exc).__name__}: {exc}"[:2000], ())
        mid = sender = subject = None
    with transaction(db_url) as s:
        match = None
        if found.refs:
            match = s.scalars(
                select(OutboxMessage).where(OutboxMessage.message_id.in_(found.refs))
            ).first()
        row = InboundMessage(
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            uid=uid,
            message_id=mid,
            from_addr=sender,
            subject=subject,
            match=(
                "malformed"
                if found.classification == "malformed"
                else ("matched" if match else "unmatched")
            ),
            outbox_message_id=match.message_id if match else None,
            prospect_id=match.prospect_id if match else None,
            classification=found.classification[:16],
            detail=found.detail,
        )
        s.add(row)
    return row


def poll_inbox(imap: ImapResource, db_url: str) -> list[str]:
    """Read new INBOX mail into the app DB; returns prospects with replies to process."""
    mailbox = f"{imap.username}/{imap.inbox}"
    with transaction(db_url) as s:
        last = s.execute(
            select(InboundMessage.uidvalidity, func.max(InboundMessage.uid))
            .where(InboundMessage.mailbox == mailbox)
            .group_by(InboundMessage.uidvalidity)
            .order_by(func.max(InboundMessage.id).desc())
        ).first()
    uidvalidity, after = (int(last[0]), int(last[1])) if last else (None, 0)
    touched: list[str] = []
    for fetched in imap.fetch_since(after, uidvalidity):
        try:
            row = record_inbound(db_url, mailbox, fetched.uidvalidity, fetched.uid, fetched.raw)
        except IntegrityError:
            continue  # another poll stored it first
        if row.prospect_id and row.prospect_id not in touched:
            touched.append(row.prospect_id)
    return touched


#: What each classification does to the prospect (None: recorded only).
REPLY_STATES = {
    "human": "replied",
    "unsubscribe": "unsubscribed",
    "bounce_hard": "bounced",
    "auto_reply": None,
    "bounce_soft": None,  # counted: see soft_bounce_streak
    "delivered": None,
}


def soft_bounce_streak(rows: Sequence[InboundMessage]) -> tuple[int, str | None]:
    """How many of our messages soft-bounced since the last sign of delivery (several delay
    notices about one message count once), and the last one's DSN detail; `rows` in order."""
    bounced: set[str] = set()
    detail: str | None = None
    for row in rows:
        if row.classification in DELIVERY_SIGNS:
            bounced.clear()
            detail = None
        elif row.classification == "bounce_soft":
            bounced.add(row.outbox_message_id or f"inbound {row.id}")
            detail = row.detail
    return len(bounced), detail


def process_reply(
    app_db: AppDatabaseResource,
    prospect_id: str,
    ctx: RunContext,
    *,
    soft_bounce_limit: int = DEFAULT_SOFT_BOUNCE_LIMIT,
) -> SyncOutcome:
    """Apply the prospect's new inbound mail to its state (first reply stops follow-ups);
    `soft_bounce_limit` soft bounces in a row without a delivery make the prospect bounced."""
    db_url = app_db.url
    cp = app_db.checkpoints(SOURCE_REPLY, ttl=LEASE_TTL[SOURCE_REPLY])
    outcome = SyncOutcome(key=prospect_id, mode="incremental")
    prospect, _ = _load(db_url, prospect_id)
    if prospect is None:
        return _missing(cp, outcome, ctx)

    def work(session: Session) -> None:
        with transaction(db_url) as s:
            rows = list(
                s.scalars(
                    select(InboundMessage)
                    .where(
                        InboundMessage.prospect_id == prospect_id,
                        InboundMessage.applied_at.is_(None),
                    )
                    .order_by(InboundMessage.id)
                )
            )
            current = s.get(Prospect, prospect_id)
            assert current is not None
            for row in rows:
                new_state = REPLY_STATES.get(row.classification)
                # Replied / unsubscribed / bounced are final: a later auto-reply changes nothing.
                if (
                    new_state
                    and current.state not in ("unsubscribed", "bounced")
                    and not (new_state == "replied" and current.state == "replied")
                ):
                    current.state = new_state
                    current.state_reason = (
                        f"{row.classification} from {row.from_addr}: {row.subject}"
                    )[:2000]
                row.applied_at = utcnow()
                outcome.add(**{row.classification: 1})
            if any(r.classification == "bounce_soft" for r in rows) and current.state not in (
                "unsubscribed",
                "bounced",
                "replied",
            ):
                history = s.scalars(
                    select(InboundMessage)
                    .where(InboundMessage.prospect_id == prospect_id)
                    .order_by(InboundMessage.id)
                ).all()
                streak, detail = soft_bounce_streak(history)
                if streak >= soft_bounce_limit:
                    current.state = "bounced"
                    current.state_reason = (
                        f"{streak} soft bounces in a row without a delivery (limit "
                        f"{soft_bounce_limit}); last: {detail}"
                    )[:2000]
                    outcome.add(soft_bounce_limit_reached=1)
        if not rows:
            outcome.add(already_done=1)

    return run_sync(
        cp,
        outcome,
        ctx,
        work,
        lease_ttl=LEASE_TTL[SOURCE_REPLY],
        full_when_new=False,
        backoff=BACKOFF,
    )


# -- CRM -------------------------------------------------------------------------------------
def crm_row(prospect: Prospect) -> dict[str, Any]:
    """The CRM's row of a prospect (the app's state, as the CRM shows it)."""
    sent = _aware(prospect.last_sent_at)
    return {
        "id": prospect.id,
        "campaign": prospect.campaign,
        "tier": prospect.tier,
        "first_name": prospect.first_name,
        "last_name": prospect.last_name,
        "company": prospect.company,
        "domain": prospect.domain,
        "email": prospect.email,
        "state": prospect.state,
        "step": prospect.step,
        "last_sent_at": sent.isoformat() if sent else None,
    }


def _row_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()


def sync_to_crm(
    supabase: SupabaseResource,
    app_db: AppDatabaseResource,
    prospect_ids: Sequence[str],
    ctx: RunContext,
) -> list[SyncOutcome]:
    """Upsert the prospects whose CRM row changed, in batches; one outcome per prospect."""
    db_url = app_db.url
    cp = app_db.checkpoints(SOURCE_CRM, ttl=LEASE_TTL[SOURCE_CRM])
    outcomes = {pid: SyncOutcome(key=pid, mode="incremental") for pid in prospect_ids}
    claimed: list[str] = []
    for pid in prospect_ids:
        try:
            cp.claim(pid, ctx.owner, LEASE_TTL[SOURCE_CRM], owner_is_dead=ctx.owner_is_dead)
            claimed.append(pid)
        except LeaseHeldError as exc:
            outcomes[pid].status, outcomes[pid].error = "skipped", str(exc)
    with transaction(db_url) as s:
        prospects = {p.id: p for p in s.scalars(select(Prospect).where(Prospect.id.in_(claimed)))}
        hashes = {
            c.prospect_id: c.row_hash
            for c in s.scalars(select(CrmSyncState).where(CrmSyncState.prospect_id.in_(claimed)))
        }
    changed: list[dict[str, Any]] = []
    for pid in claimed:
        prospect = prospects.get(pid)
        if prospect is None:
            outcomes[pid].status, outcomes[pid].error = "failed", "prospect does not exist"
            cp.release(pid, ctx.owner)
            continue
        row = crm_row(prospect)
        if hashes.get(pid) == _row_hash(row):
            outcomes[pid].add(unchanged=1)
        else:
            changed.append(row)
    try:
        requests = supabase.upsert(changed) if changed else 0
    except SyncError as exc:
        for row in changed:
            outcome = outcomes[row["id"]]
            outcome.status, outcome.error_class, outcome.error = "failed", exc.error_class, str(exc)
            cp.fail(
                row["id"],
                error_class=exc.error_class,
                message=str(exc),
                run_id=ctx.run_id,
                dead=isinstance(exc, PermanentError) or ctx.final_attempt,
            )
            cp.release(row["id"], ctx.owner)
        changed = []
        requests = 0
    now = utcnow()
    if changed:
        with transaction(db_url) as s:
            upsert(
                s,
                CrmSyncState,
                [
                    {"prospect_id": r["id"], "row_hash": _row_hash(r), "synced_at": now}
                    for r in changed
                ],
                key=["prospect_id"],
                update=["row_hash", "synced_at"],
            )
    for row in changed:
        outcomes[row["id"]].add(upserted=1)
    for pid in claimed:
        outcome = outcomes[pid]
        if outcome.status == "running":
            cp.succeed(pid, full=False, owner=ctx.owner)
            outcome.status = "succeeded"
    if changed:
        outcomes[changed[0]["id"]].add(requests=requests)
    return [outcomes[pid] for pid in prospect_ids]


def prospects_of(db_url: str, states: Iterable[str] | None = None) -> list[str]:
    """Prospect ids, optionally only in the given states."""
    query = select(Prospect.id).order_by(Prospect.id)
    if states is not None:
        query = query.where(Prospect.state.in_(list(states)))
    with transaction(db_url) as s:
        return list(s.scalars(query))
