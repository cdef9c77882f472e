"""All outreach sandboxes at once (Hunter, Supabase REST, SMTP + IMAP) with demo data.

`start_outreach_sandboxes()` starts them on loopback and returns the settings the outreach
clients read (HUNTER_*, SMTP_*, IMAP_*, SUPABASE_*), for a demo stack or tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sync_pipeline.sandbox.hunter.app import Company, HunterConfig, HunterState, Person
from sync_pipeline.sandbox.hunter.app import create_app as hunter_app
from sync_pipeline.sandbox.mail.server import MailConfig, MailSandbox
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sandbox.supabase.app import SupabaseState
from sync_pipeline.sandbox.supabase.app import create_app as supabase_app

HUNTER_KEY = "sbx-hunter-key"
SUPABASE_KEY = "sbx-service-role-key"
SENDER = "sales@acme.test"
SENDER_PASSWORD = "sandbox-sender-password"
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


def demo_companies() -> list[Company]:
    """Companies the demo's prospects work at (one site down, one low-confidence address)."""
    return [
        Company(
            "Globex", "globex.test", people=[Person("Hank", "Scorpio", "hank@globex.test", 94)]
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


@dataclass
class OutreachSandboxes:
    """The running sandboxes and the settings pointing at them."""

    hunter: HunterState
    supabase: SupabaseState
    mail: MailSandbox
    env: dict[str, str]
    _servers: list[SandboxServer] = field(default_factory=list)

    def stop(self) -> None:
        """Stop every server."""
        for server in self._servers:
            server.stop()
        self.mail.stop()


def start_outreach_sandboxes() -> OutreachSandboxes:
    """Start Hunter, Supabase and the mail provider on free loopback ports."""
    hunter = HunterState(HunterConfig(api_keys={HUNTER_KEY}), clock=time.time)
    for company in demo_companies():
        hunter.add_company(company)
    supabase = SupabaseState(clock=time.time, service_key=SUPABASE_KEY)
    supabase.create_table(CRM_TABLE, CRM_COLUMNS, ("id",))
    servers = [SandboxServer(hunter_app(hunter)).start()]
    try:
        servers.append(SandboxServer(supabase_app(supabase)).start())
        mail = MailSandbox(
            MailConfig(
                users={SENDER: SENDER_PASSWORD},
                hard_bounce={"gone@initech.test"},
                auto_reply={"ooo@globex.test"},
            )
        ).start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    hunter_url, supabase_url = servers[0].url, servers[1].url
    env = {
        "HUNTER_API_KEY": HUNTER_KEY,
        "HUNTER_BASE_URL": hunter_url,
        "HUNTER_WEBSITE_URL": f"{hunter_url}/_sandbox/sites/{{domain}}",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mail.smtp_port),
        "SMTP_USERNAME": SENDER,
        "SMTP_PASSWORD": SENDER_PASSWORD,
        "SMTP_SECURITY": "none",
        "IMAP_HOST": "127.0.0.1",
        "IMAP_PORT": str(mail.imap_port),
        "IMAP_USERNAME": SENDER,
        "IMAP_PASSWORD": SENDER_PASSWORD,
        "IMAP_SECURITY": "none",
        "SUPABASE_URL": supabase_url,
        "SUPABASE_SERVICE_KEY": SUPABASE_KEY,
        "SUPABASE_TABLE": CRM_TABLE,
        # The one-click unsubscribe target in every message's List-Unsubscribe header.
        "OUTREACH_UNSUBSCRIBE_URL": f"{hunter_url}/_sandbox/unsubscribe/{{token}}",
    }
    return OutreachSandboxes(hunter, supabase, mail, env, servers)
