"""Inbound mail over real IMAP: replies, auto-replies and bounces matched and applied."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import InboundMessage, Prospect
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.outreach.resources import ImapResource, SmtpResource
from sync_pipeline.defs.outreach.sync import (
    message_id,
    poll_inbox,
    process_reply,
    send_email,
)
from sync_pipeline.sandbox.mail.server import MailSandbox
from sync_pipeline_tests.defs.outreach.conftest import CTX, OPEN, SEND_SETTINGS, add_campaign
from sync_pipeline_tests.outreach import SENDER


def _reply(from_addr: str, in_reply_to: str | None, body: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = from_addr
    msg["To"] = SENDER
    msg["Subject"] = "Re: Hello"
    msg["Message-ID"] = f"<reply.{abs(hash((from_addr, body)))}@elsewhere.test>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def _state(db_url: str, pid: str) -> str:
    with transaction(db_url) as s:
        prospect = s.get(Prospect, pid)
        assert prospect is not None
        return prospect.state


def _inbound(db_url: str) -> list[tuple[str, str, str | None]]:
    with transaction(db_url) as s:
        return [
            (r.match, r.classification, r.prospect_id)
            for r in s.scalars(select(InboundMessage).order_by(InboundMessage.id))
        ]


@pytest.mark.parametrize(
    ("address", "reply", "classification", "state"),
    [
        ("hank@globex.test", "Sounds good, call me.", "human", "replied"),
        ("hank@globex.test", "unsubscribe", "unsubscribe", "unsubscribed"),
        ("hank@globex.test", "Out of office", "auto_reply", "contacted"),
        ("gone@initech.test", None, "bounce_hard", "bounced"),
        ("full@initech.test", None, "bounce_soft", "contacted"),
        ("ooo@globex.test", None, "auto_reply", "contacted"),
    ],
)
def test_inbound_mail_is_matched_classified_and_applied(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
    address: str,
    reply: str | None,
    classification: str,
    state: str,
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect("p1", email=address)
    assert (
        send_email(smtp, imap, app_db, pid, CTX, settings=SEND_SETTINGS, now=OPEN).status
        == "succeeded"
    )
    sent_id = message_id("launch", pid, 0, SENDER)
    if reply is not None:  # bounces and the sandbox's auto-replies arrive by themselves
        headers = {"Auto_Submitted": "auto-replied"} if classification == "auto_reply" else {}
        mail_box.deliver(SENDER, _reply(address, sent_id, reply, **headers))

    touched = poll_inbox(imap, app_db.url)
    outcome = process_reply(app_db, pid, CTX)

    assert touched == [pid]
    assert _inbound(app_db.url) == [("matched", classification, pid)]
    assert outcome.figures == {classification: 1}
    assert _state(app_db.url, pid) == state
    assert poll_inbox(imap, app_db.url) == []  # nothing is read twice
    assert process_reply(app_db, pid, CTX).figures == {"already_done": 1}


def test_the_first_reply_stops_follow_ups(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
) -> None:
    import datetime as dt

    add_campaign(app_db.url)
    pid = add_prospect("p1", email="hank@globex.test")
    send_email(smtp, imap, app_db, pid, CTX, settings=SEND_SETTINGS, now=OPEN)
    mail_box.deliver(
        SENDER, _reply("hank@globex.test", message_id("launch", pid, 0, SENDER), "Yes")
    )
    poll_inbox(imap, app_db.url)
    process_reply(app_db, pid, CTX)
    later = send_email(
        smtp, imap, app_db, pid, CTX, settings=SEND_SETTINGS, now=OPEN + dt.timedelta(days=10)
    )
    assert later.figures == {"not_eligible": 1}
    assert len(mail_box.messages("hank@globex.test")) == 1


@pytest.mark.parametrize(
    ("raw", "match", "classification"),
    [
        (_reply("stranger@else.test", None, "Hi, who are you?"), "unmatched", "human"),
        (_reply("x@else.test", "<unknown@acme.test>", "Re"), "unmatched", "human"),
        (b"\x00\xff garbage without headers \xfe", "unmatched", "human"),
    ],
)
def test_unmatched_and_malformed_mail_is_recorded_not_lost(
    app_db: AppDatabaseResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    raw: bytes,
    match: str,
    classification: str,
) -> None:
    mail_box.deliver(SENDER, raw)
    assert poll_inbox(imap, app_db.url) == []
    assert _inbound(app_db.url) == [(match, classification, None)]
