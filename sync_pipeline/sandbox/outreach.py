"""All outreach sandboxes at once (Hunter, Supabase REST, SMTP + IMAP) with demo data.

`start_outreach_sandboxes()` starts them on loopback (on the ports `sync-pipeline init` wrote,
or free ones) and returns the settings the outreach clients read (HUNTER_*, SMTP_*, IMAP_*,
SUPABASE_*), for a demo stack or tests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sync_pipeline.core.settings import OUTREACH_SANDBOX_SENDER
from sync_pipeline.sandbox.hunter.app import Company, HunterConfig, HunterState, Person
from sync_pipeline.sandbox.hunter.app import create_app as hunter_app
from sync_pipeline.sandbox.mail.server import MailConfig, MailSandbox
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sandbox.supabase.app import SupabaseState
from sync_pipeline.sandbox.supabase.app import create_app as supabase_app

HUNTER_KEY = "sbx-hunter-key"
SUPABASE_KEY = "sbx-service-role-key"
SENDER = OUTREACH_SANDBOX_SENDER
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


def _port(url_or_port: str) -> int:
    return int(url_or_port.rsplit(":", 1)[-1].split("/", 1)[0])


def start_outreach_sandboxes(settings: Mapping[str, str] | None = None) -> OutreachSandboxes:
    """Start Hunter, Supabase and the mail provider on loopback with the demo companies.

    With `settings` (the HUNTER_*, SMTP_*, IMAP_*, SUPABASE_* and OUTREACH_* variables `init`
    writes), on the ports and with the keys they name, so every process reading the same
    settings reaches them; without, on free ports with fixed keys (returned in `env`).
    """
    given = dict(settings or {})
    hunter_key = given.get("HUNTER_API_KEY", HUNTER_KEY)
    supabase_key = given.get("SUPABASE_SERVICE_KEY", SUPABASE_KEY)
    sender = given.get("SMTP_USERNAME", SENDER)
    password = given.get("SMTP_PASSWORD", SENDER_PASSWORD)
    hunter = HunterState(HunterConfig(api_keys={hunter_key}), clock=time.time)
    for company in demo_companies():
        hunter.add_company(company)
    supabase = SupabaseState(clock=time.time, service_key=supabase_key)
    supabase.create_table(given.get("SUPABASE_TABLE", CRM_TABLE), CRM_COLUMNS, ("id",))
    ports = {
        name: _port(given[variable]) if variable in given else 0
        for name, variable in (
            ("hunter", "HUNTER_BASE_URL"),
            ("supabase", "SUPABASE_URL"),
            ("smtp", "SMTP_PORT"),
            ("imap", "IMAP_PORT"),
        )
    }
    servers = [SandboxServer(hunter_app(hunter), port=ports["hunter"]).start()]
    try:
        servers.append(SandboxServer(supabase_app(supabase), port=ports["supabase"]).start())
        mail = MailSandbox(
            MailConfig(
                users={sender: password},
                hard_bounce={"gone@initech.test"},
                auto_reply={"ooo@globex.test"},
            ),
            smtp_port=ports["smtp"],
            imap_port=ports["imap"],
        ).start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    hunter_url, supabase_url = servers[0].url, servers[1].url
    env = {
        "HUNTER_API_KEY": hunter_key,
        "HUNTER_BASE_URL": hunter_url,
        "HUNTER_WEBSITE_URL": f"{hunter_url}/_sandbox/sites/{{domain}}",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mail.smtp_port),
        "SMTP_USERNAME": sender,
        "SMTP_PASSWORD": password,
        "SMTP_SECURITY": "none",
        "IMAP_HOST": "127.0.0.1",
        "IMAP_PORT": str(mail.imap_port),
        "IMAP_USERNAME": sender,
        "IMAP_PASSWORD": password,
        "IMAP_SECURITY": "none",
        "SUPABASE_URL": supabase_url,
        "SUPABASE_SERVICE_KEY": supabase_key,
        "SUPABASE_TABLE": given.get("SUPABASE_TABLE", CRM_TABLE),
    }
    for name in ("OUTREACH_UNSUBSCRIBE_URL", "OUTREACH_UNSUBSCRIBE_KEY"):
        if name in given:  # served by the webhook receiver, not by these sandboxes
            env[name] = given[name]
    return OutreachSandboxes(hunter, supabase, mail, env, servers)
