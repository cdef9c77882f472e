"""Outreach resources pointed at the sandboxes, and campaign/prospect helpers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Campaign, Prospect
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.sync_runner import RunContext
from sync_pipeline.defs.outreach.resources import (
    HunterResource,
    ImapResource,
    SmtpResource,
    SupabaseResource,
)
from sync_pipeline.defs.outreach.sync import SendSettings
from sync_pipeline.sandbox.mail.server import MailSandbox
from sync_pipeline_tests.outreach import (
    CRM_TABLE,
    HUNTER_KEY,
    SENDER,
    SENDER_PASSWORD,
    SUPABASE_KEY,
    HunterBox,
    SupabaseBox,
)

#: A Wednesday, 10:00 in Europe/Berlin: business hours.
OPEN = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)
CTX = RunContext(owner="test-run")
#: Signs the unsubscribe links of the tests' messages (OUTREACH_UNSUBSCRIBE_KEY).
UNSUBSCRIBE_KEY = "test-unsubscribe-key-3f9a1c"
SEND_SETTINGS = SendSettings(unsubscribe_key=UNSUBSCRIBE_KEY)


@pytest.fixture
def hunter(app_db: AppDatabaseResource, hunter_box: HunterBox) -> Iterator[HunterResource]:
    """Hunter client against the sandbox."""
    resource = HunterResource(
        app_db=app_db,
        api_key=HUNTER_KEY,
        base_url=hunter_box.url,
        website_url=f"{hunter_box.url}/_sandbox/sites/{{domain}}",
        timeout_seconds=5.0,
        transient_retries=0,
    )
    yield resource
    resource.close()


@pytest.fixture
def smtp(mail_box: MailSandbox) -> SmtpResource:
    """SMTP submission to the sandbox (AUTH, no TLS on loopback)."""
    return SmtpResource(
        host="127.0.0.1",
        port=mail_box.smtp_port,
        username=SENDER,
        password=SENDER_PASSWORD,
        security="none",
        timeout_seconds=5.0,
    )


@pytest.fixture
def imap(mail_box: MailSandbox) -> ImapResource:
    """IMAP to the sender's mailbox at the sandbox."""
    return ImapResource(
        host="127.0.0.1",
        port=mail_box.imap_port,
        username=SENDER,
        password=SENDER_PASSWORD,
        security="none",
        timeout_seconds=5.0,
    )


@pytest.fixture
def supabase(supabase_box: SupabaseBox) -> Iterator[SupabaseResource]:
    """Supabase REST client against the sandbox."""
    resource = SupabaseResource(
        url=supabase_box.url, service_key=SUPABASE_KEY, table=CRM_TABLE, batch_size=2
    )
    yield resource
    resource.close()


def add_campaign(db_url: str, name: str = "launch", **fields: Any) -> str:
    """A campaign sending from the sandbox sender."""
    values: dict[str, Any] = {
        "name": name,
        "sender": SENDER,
        "subject_template": "Hello {{ first_name }} at {{ company }}",
        "body_template": "Hi {{ first_name }},\n\nA note for {{ company }}.\n"
        "Unsubscribe: {{ unsubscribe_url }}\n",
        "followups": [
            {"delay_days": 3, "subject": "Re: Hello {{ first_name }}", "body": "Following up."}
        ],
        "daily_cap": 50,
        "min_gap_seconds": 0,
        "state": "active",
        **fields,
    }
    with transaction(db_url) as s:
        s.add(Campaign(**values))
    return name


@pytest.fixture
def add_prospect(app_db: AppDatabaseResource) -> Callable[..., str]:
    """Add a prospect (enriched when given an e-mail)."""

    def make(pid: str, campaign: str = "launch", **fields: Any) -> str:
        values: dict[str, Any] = {
            "id": pid,
            "campaign": campaign,
            "tier": "warm",
            "first_name": "Hank",
            "last_name": "Scorpio",
            "company": "Globex",
            "timezone": "Europe/Berlin",
            "state": "enriched" if fields.get("email") else "new",
            **fields,
        }
        with transaction(app_db.url) as s:
            s.add(Prospect(**values))
        return pid

    return make
