"""Inbound mail over real IMAP: replies, auto-replies and bounces matched and applied."""

from __future__ import annotations

import datetime as dt
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


# -- soft bounces: the sandbox answers each message to full@initech.test with a 4.2.2 DSN ------
def _send_next(
    smtp: SmtpResource, imap: ImapResource, app_db: AppDatabaseResource, pid: str
) -> None:
    """Send the prospect's next step (its follow-up made due), then read and apply the inbox."""
    with transaction(app_db.url) as s:
        prospect = s.get(Prospect, pid)
        assert prospect is not None
        prospect.last_sent_at = OPEN - dt.timedelta(days=1) if prospect.step else None
    sent = send_email(smtp, imap, app_db, pid, CTX, settings=SEND_SETTINGS, now=OPEN)
    assert sent.figures == {"sent": 1}
    assert poll_inbox(imap, app_db.url) == [pid]


def _reason(db_url: str, pid: str) -> str | None:
    with transaction(db_url) as s:
        prospect = s.get(Prospect, pid)
        assert prospect is not None
        return prospect.state_reason


FOLLOW_UPS = [{"delay_days": 0, "subject": f"Again {n}", "body": "Again."} for n in range(6)]


@pytest.mark.parametrize("limit", [3, 2])
def test_soft_bounces_in_a_row_make_the_prospect_bounced(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
    limit: int,
) -> None:
    add_campaign(app_db.url, followups=FOLLOW_UPS)
    pid = add_prospect("p1", email="full@initech.test")
    states = []
    for _ in range(limit):
        _send_next(smtp, imap, app_db, pid)
        outcome = process_reply(app_db, pid, CTX, soft_bounce_limit=limit)
        states.append(_state(app_db.url, pid))

    assert states == ["contacted"] * (limit - 1) + ["bounced"]
    assert outcome.figures == {"bounce_soft": 1, "soft_bounce_limit_reached": 1}
    assert _reason(app_db.url, pid) == (
        f"{limit} soft bounces in a row without a delivery (limit {limit}); "
        "last: Status 4.2.2, Action delayed"
    )
    later = send_email(smtp, imap, app_db, pid, CTX, settings=SEND_SETTINGS, now=OPEN)
    assert later.figures == {"not_eligible": 1}
    assert len(mail_box.messages("full@initech.test")) == limit


def test_a_delivery_between_soft_bounces_resets_the_count(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
) -> None:
    address = "full@initech.test"
    add_campaign(app_db.url, followups=FOLLOW_UPS)
    pid = add_prospect("p1", email=address)
    history = []
    # Two soft bounces; then the mailbox takes mail again (its out-of-office answers); then
    # it bounces softly again: two in a row are below the limit of 3, the third one is not.
    for answer in ("soft", "soft", "auto_reply", "soft", "soft", "soft"):
        mail_box.config.soft_bounce = {address} if answer == "soft" else set()
        mail_box.config.auto_reply = {address} if answer == "auto_reply" else set()
        _send_next(smtp, imap, app_db, pid)
        figures = process_reply(app_db, pid, CTX, soft_bounce_limit=3).figures
        history.append((sorted(figures), _state(app_db.url, pid)))

    assert history == [
        (["bounce_soft"], "contacted"),
        (["bounce_soft"], "contacted"),
        (["auto_reply"], "contacted"),
        (["bounce_soft"], "contacted"),
        (["bounce_soft"], "contacted"),
        (["bounce_soft", "soft_bounce_limit_reached"], "bounced"),
    ]


def test_a_success_dsn_is_a_delivery_not_a_bounce() -> None:
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    from sync_pipeline.defs.outreach.sync import classify

    report = MIMEMultipart("report", report_type="delivery-status")
    report.attach(MIMEText("Your message was delivered.\n"))
    per_message, per_rcpt = EmailMessage(), EmailMessage()
    per_message["Reporting-MTA"] = "dns; mx.example"
    per_rcpt["Final-Recipient"] = "rfc822; hank@globex.test"
    per_rcpt["Action"], per_rcpt["Status"] = "delivered", "2.0.0"
    status = EmailMessage()
    status["Content-Type"] = "message/delivery-status"
    status.set_payload([per_message, per_rcpt])
    report.attach(status)

    assert classify(report).classification == "delivered"
