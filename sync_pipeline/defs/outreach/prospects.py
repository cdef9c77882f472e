"""Campaigns and prospects in the app DB: validated CSV import, listing, removal, queue stats."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from sqlalchemy import delete, func, select, update

from sync_pipeline.core.db import transaction
from sync_pipeline.core.errors import ConfigError
from sync_pipeline.core.models import Campaign, OutboxMessage, Prospect, SyncState
from sync_pipeline.defs.outreach.sync import JOB_SOURCES, TIERS, valid_email

REQUIRED_COLUMNS = ("first_name", "last_name", "company")
OPTIONAL_COLUMNS = ("id", "tier", "domain", "email", "timezone")
KEY_RE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _check_template(text: str, what: str) -> None:
    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{what} template does not parse: {exc}") from exc


def add_campaign(
    db_url: str,
    name: str,
    *,
    sender: str,
    subject: str,
    body: str,
    followups: list[dict[str, Any]] | None = None,
    daily_cap: int = 50,
    min_gap_seconds: int = 60,
) -> None:
    """Create a campaign (templates are checked for syntax now, variables at send time)."""
    if not name or set(name) - KEY_RE_CHARS:
        raise ConfigError(f"Campaign name {name!r}: use letters, digits, '-', '_' or '.'.")
    if not valid_email(sender):
        raise ConfigError(f"Sender {sender!r} is not a valid e-mail address.")
    if daily_cap < 1 or min_gap_seconds < 0:
        raise ConfigError("The daily cap must be at least 1 and the gap not negative.")
    _check_template(subject, "subject")
    _check_template(body, "body")
    for i, step in enumerate(followups or [], start=1):
        if not {"delay_days", "subject", "body"} <= set(step):
            raise ConfigError(f"Follow-up {i} needs delay_days, subject and body.")
        _check_template(str(step["subject"]), f"follow-up {i} subject")
        _check_template(str(step["body"]), f"follow-up {i} body")
    with transaction(db_url) as s:
        if s.get(Campaign, name) is not None:
            raise ConfigError(f"Campaign {name!r} already exists.")
        s.add(
            Campaign(
                name=name,
                sender=sender,
                subject_template=subject,
                body_template=body,
                followups=list(followups or []),
                daily_cap=daily_cap,
                min_gap_seconds=min_gap_seconds,
                state="active",
            )
        )


def set_campaign_state(db_url: str, name: str, state: str) -> None:
    """Pause or resume a campaign (paused: nothing of it is sent)."""
    with transaction(db_url) as s:
        campaign = s.get(Campaign, name)
        if campaign is None:
            raise ConfigError(f"Unknown campaign {name!r}.")
        campaign.state = state


def campaigns(db_url: str) -> list[dict[str, Any]]:
    """Campaigns with their prospect counts per state."""
    with transaction(db_url) as s:
        counts: dict[str, dict[str, int]] = {}
        for camp, state, n in s.execute(
            select(Prospect.campaign, Prospect.state, func.count()).group_by(
                Prospect.campaign, Prospect.state
            )
        ):
            counts.setdefault(camp, {})[state] = n
        return [
            {
                "name": c.name,
                "sender": c.sender,
                "state": c.state,
                "daily_cap": c.daily_cap,
                "min_gap_seconds": c.min_gap_seconds,
                "followups": len(c.followups or []),
                "prospects": counts.get(c.name, {}),
            }
            for c in s.scalars(select(Campaign).order_by(Campaign.name))
        ]


@dataclass
class ImportReport:
    """What an import did: all rows imported, or none and why each bad row was rejected."""

    imported: list[str] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (CSV line, reason)

    @property
    def ok(self) -> bool:
        """Whether the file was imported (no row rejected)."""
        return not self.rejected


def prospect_id(campaign: str, first: str, last: str, company: str) -> str:
    """A stable partition key for a prospect without an id column."""
    digest = hashlib.sha256(f"{campaign}\x00{first}\x00{last}\x00{company}".lower().encode())
    return f"{campaign[:24]}-{digest.hexdigest()[:12]}"


def _validate(row: dict[str, str], campaign: str) -> tuple[dict[str, Any] | None, str | None]:
    values = {k: (row.get(k) or "").strip() for k in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)}
    missing = [c for c in REQUIRED_COLUMNS if not values[c]]
    if missing:
        return None, f"missing {', '.join(missing)}"
    tier = (values["tier"] or "cold").lower()
    if tier not in TIERS:
        return None, f"tier {values['tier']!r} is not one of hot, warm, cold"
    email = values["email"] or None
    if email is not None and not valid_email(email):
        return None, f"invalid e-mail address {email!r}"
    tz = values["timezone"] or "UTC"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return None, f"unknown time zone {tz!r}"
    pid = values["id"] or prospect_id(
        campaign, values["first_name"], values["last_name"], values["company"]
    )
    if set(pid) - KEY_RE_CHARS or len(pid) > 64:
        return None, f"id {pid!r}: use at most 64 letters, digits, '-', '_' or '.'"
    return {
        "id": pid,
        "campaign": campaign,
        "tier": tier,
        "first_name": values["first_name"][:128],
        "last_name": values["last_name"][:128],
        "company": values["company"][:255],
        "domain": (values["domain"] or None),
        "email": email,
        "timezone": tz,
        "state": "enriched" if email else "new",
    }, None


def import_prospects(db_url: str, source: Path | str, campaign: str) -> ImportReport:
    """Import a CSV all or nothing: with any bad row, nothing is written and each is reported."""
    text = Path(source).read_text(encoding="utf-8-sig") if isinstance(source, Path) else source
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or [])
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ConfigError(f"The CSV has no {', '.join(missing)} column (header line).")
    with transaction(db_url) as s:
        if s.get(Campaign, campaign) is None:
            raise ConfigError(f"Unknown campaign {campaign!r}; add it with `campaigns add`.")
        existing_ids = set(s.scalars(select(Prospect.id)))
        existing_emails = set(
            s.scalars(select(Prospect.email).where(Prospect.campaign == campaign))
        )
    report = ImportReport()
    rows: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    seen_emails: set[str] = set()
    for row in reader:
        line = reader.line_num
        if None in row:
            report.rejected.append((line, "more fields than the header has"))
            continue
        value, why = _validate(row, campaign)
        if value is None:
            report.rejected.append((line, why or "invalid"))
        elif value["id"] in existing_ids or value["id"] in seen_ids:
            report.rejected.append((line, f"prospect {value['id']} already exists"))
        elif value["email"] and (
            value["email"] in existing_emails or value["email"] in seen_emails
        ):
            report.rejected.append((line, f"{value['email']} is already in the campaign"))
        else:
            seen_ids.add(value["id"])
            if value["email"]:
                seen_emails.add(value["email"])
            rows.append(value)
    if report.rejected:
        return report
    with transaction(db_url) as s:
        s.add_all(Prospect(**r) for r in rows)
    report.imported = [r["id"] for r in rows]
    return report


def list_prospects(
    db_url: str, campaign: str | None = None, state: str | None = None
) -> list[Prospect]:
    """Prospects, optionally of one campaign and in one state."""
    query = select(Prospect).order_by(Prospect.campaign, Prospect.id)
    if campaign:
        query = query.where(Prospect.campaign == campaign)
    if state:
        query = query.where(Prospect.state == state)
    with transaction(db_url) as s:
        return list(s.scalars(query))


def show_prospect(db_url: str, pid: str) -> dict[str, Any]:
    """A prospect with its messages and the state of each job type."""
    with transaction(db_url) as s:
        p = s.get(Prospect, pid)
        if p is None:
            raise ConfigError(f"Unknown prospect {pid!r}.")
        messages = [
            {"step": m.step, "state": m.state, "message_id": m.message_id, "sent_at": m.sent_at}
            for m in s.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.prospect_id == pid)
                .order_by(OutboxMessage.step)
            )
        ]
        jobs = {
            st.source: {
                "status": st.status,
                "attempts": st.consecutive_failures,
                "error": st.last_error,
            }
            for st in s.scalars(
                select(SyncState).where(
                    SyncState.partition_key == pid, SyncState.source.in_(JOB_SOURCES.values())
                )
            )
        }
        return {
            "id": p.id,
            "campaign": p.campaign,
            "tier": p.tier,
            "name": f"{p.first_name} {p.last_name}",
            "company": p.company,
            "domain": p.domain,
            "website_ok": p.website_ok,
            "email": p.email,
            "email_confidence": p.email_confidence,
            "timezone": p.timezone,
            "state": p.state,
            "state_reason": p.state_reason,
            "step": p.step,
            "messages": messages,
            "jobs": jobs,
        }


def remove_prospects(db_url: str, ids: Iterable[str]) -> int:
    """Delete prospects with their messages and job states; returns how many existed."""
    wanted = list(ids)
    with transaction(db_url) as s:
        n = s.scalar(select(func.count()).where(Prospect.id.in_(wanted))) or 0
        s.execute(delete(Prospect).where(Prospect.id.in_(wanted)))
        s.execute(delete(OutboxMessage).where(OutboxMessage.prospect_id.in_(wanted)))
        s.execute(
            delete(SyncState).where(
                SyncState.partition_key.in_(wanted), SyncState.source.in_(JOB_SOURCES.values())
            )
        )
    return int(n)


def queue_stats(db_url: str) -> list[dict[str, Any]]:
    """The seed's getQueueStats: per job type and state, the count and average attempts."""
    names = {v: k for k, v in JOB_SOURCES.items()}
    with transaction(db_url) as s:
        rows = s.execute(
            select(
                SyncState.source,
                SyncState.status,
                func.count(),
                func.avg(SyncState.consecutive_failures),
            )
            .where(SyncState.source.in_(JOB_SOURCES.values()))
            .group_by(SyncState.source, SyncState.status)
            .order_by(SyncState.source, SyncState.status)
        ).all()
    return [
        {
            "job_type": names[source],
            "state": status,
            "count": int(count),
            "avg_attempts": round(float(avg or 0.0), 2),
        }
        for source, status, count, avg in rows
    ]


def redrive(db_url: str, job_type: str, ids: Iterable[str] | None = None) -> list[str]:
    """Dead letters of a job type back to idle (attempts reset); returns the redriven ids."""
    source = JOB_SOURCES[job_type]
    with transaction(db_url) as s:
        query = select(SyncState.partition_key).where(
            SyncState.source == source, SyncState.status == "dead"
        )
        if ids is not None:
            query = query.where(SyncState.partition_key.in_(list(ids)))
        keys = list(s.scalars(query))
        s.execute(
            update(SyncState)
            .where(SyncState.source == source, SyncState.partition_key.in_(keys))
            .values(status="idle", consecutive_failures=0, first_failure_at=None, mode=None)
        )
    return keys
