"""Fixtures shared by the outreach tests: the Hunter, Supabase and mail sandboxes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sync_pipeline.sandbox.common import ManualClock
from sync_pipeline.sandbox.hunter.app import Company, HunterConfig, HunterState, Person
from sync_pipeline.sandbox.hunter.app import create_app as hunter_app
from sync_pipeline.sandbox.mail.server import MailConfig, MailSandbox
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sandbox.supabase.app import SupabaseState
from sync_pipeline.sandbox.supabase.app import create_app as supabase_app

HUNTER_KEY = "sbx-hunter-key"
SUPABASE_KEY = "sbx-service-role-key"
SENDER = "sales@acme.test"
SENDER_PASSWORD = "sender-app-password"
CRM_TABLE = "prospects"
CRM_COLUMNS = (
    "id",
    "campaign",
    "tier",
    "first_name",
    "last_name",
    "company",
    "domain",
    "email",
    "state",
    "step",
    "last_sent_at",
)


@dataclass
class HunterBox:
    """A running Hunter sandbox."""

    state: HunterState
    url: str


@dataclass
class SupabaseBox:
    """A running Supabase REST sandbox."""

    state: SupabaseState
    url: str


def demo_companies() -> list[Company]:
    """A few companies with people the finder knows (one with a low-confidence address)."""
    return [
        Company(
            "Globex",
            "globex.test",
            people=[Person("Hank", "Scorpio", "hank@globex.test", 94, "CEO")],
        ),
        Company(
            "Initech",
            "initech.test",
            people=[
                Person("Bill", "Lumbergh", "bill.lumbergh@initech.test", 88),
                Person("Peter", "Gibbons", "peter@initech.test", 31),
            ],
        ),
        Company("Hooli", "hooli.test", website_up=False),
    ]


@pytest.fixture
def hunter_box() -> Iterator[HunterBox]:
    """The Hunter sandbox with the demo companies, on wall-clock time."""
    state = HunterState(HunterConfig(api_keys={HUNTER_KEY}), clock=time.time)
    for company in demo_companies():
        state.add_company(company)
    with SandboxServer(hunter_app(state)) as server:
        yield HunterBox(state, server.url)


@pytest.fixture
def manual_hunter_box() -> Iterator[tuple[HunterBox, ManualClock]]:
    """The Hunter sandbox on a clock the test moves."""
    clock = ManualClock(time.time())
    state = HunterState(HunterConfig(api_keys={HUNTER_KEY}), clock=clock)
    for company in demo_companies():
        state.add_company(company)
    with SandboxServer(hunter_app(state, advance=clock.advance)) as server:
        yield HunterBox(state, server.url), clock


@pytest.fixture
def supabase_box() -> Iterator[SupabaseBox]:
    """The Supabase sandbox with the CRM's prospects table."""
    state = SupabaseState(clock=time.time, service_key=SUPABASE_KEY)
    state.create_table(CRM_TABLE, CRM_COLUMNS, ("id",))
    with SandboxServer(supabase_app(state)) as server:
        yield SupabaseBox(state, server.url)


@pytest.fixture
def mail_box() -> Iterator[MailSandbox]:
    """SMTP + IMAP with the sender's mailbox; a few recipients bounce or auto-reply."""
    config = MailConfig(
        users={SENDER: SENDER_PASSWORD},
        hard_bounce={"gone@initech.test"},
        soft_bounce={"full@initech.test"},
        auto_reply={"ooo@globex.test"},
        rejected={"nobody@hooli.test"},
    )
    with MailSandbox(config) as box:
        yield box
