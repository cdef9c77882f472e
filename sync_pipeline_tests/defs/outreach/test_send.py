"""send_email through the real SMTP/IMAP sandbox: never twice, hours, caps, stops, retries."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import OutboxMessage, Prospect, SyncState
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.sync_runner import SyncOutcome
from sync_pipeline.defs.outreach.resources import ImapResource, SmtpResource
from sync_pipeline.defs.outreach.sync import (
    SOURCE_SEND,
    SendSettings,
    business_open,
    message_id,
    send_email,
    send_priority,
    send_queue,
)
from sync_pipeline.sandbox.mail.server import MailSandbox
from sync_pipeline_tests.defs.outreach.conftest import CTX, OPEN, UNSUBSCRIBE_KEY, add_campaign
from sync_pipeline_tests.outreach import SENDER

SETTINGS = SendSettings(
    unsubscribe_url="https://acme.test/u/{token}",
    unsubscribe_mailto="unsubscribe@acme.test",
    unsubscribe_key=UNSUBSCRIBE_KEY,
)


def _send(
    smtp: SmtpResource,
    imap: ImapResource,
    app_db: AppDatabaseResource,
    pid: str,
    now: dt.datetime = OPEN,
) -> SyncOutcome:
    return send_email(smtp, imap, app_db, pid, CTX, settings=SETTINGS, now=now)


def _outbox(db_url: str) -> list[OutboxMessage]:
    with transaction(db_url) as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.step)))


def _prospect(db_url: str, pid: str) -> Prospect:
    with transaction(db_url) as s:
        prospect = s.get(Prospect, pid)
        assert prospect is not None
        return prospect


def test_sends_once_with_unsubscribe_headers_and_a_sent_copy(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect("p1", email="hank@globex.test")
    first = _send(smtp, imap, app_db, pid)
    again = _send(smtp, imap, app_db, pid)  # the follow-up is not due for 3 days

    [received] = mail_box.messages("hank@globex.test")
    assert received["Subject"] == "Hello Hank at Globex"
    assert received["Message-ID"] == message_id("launch", "p1", 0, SENDER)
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received["List-Unsubscribe"].startswith("<https://acme.test/u/")
    assert "<mailto:unsubscribe@acme.test?subject=unsubscribe-" in received["List-Unsubscribe"]
    assert "Unsubscribe: https://acme.test/u/" in received.get_content()
    assert len(mail_box.messages(SENDER, "Sent")) == 1
    assert [(r.state, r.step, r.attempts) for r in _outbox(app_db.url)] == [("sent", 0, 1)]
    prospect = _prospect(app_db.url, pid)
    assert (prospect.state, prospect.step) == ("contacted", 1)
    assert first.figures == {"sent": 1}
    assert again.figures == {"not_due": 1}


def test_follow_up_threads_and_stops_after_the_sequence(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect("p1", email="hank@globex.test")
    _send(smtp, imap, app_db, pid)
    later = OPEN + dt.timedelta(days=7)
    with transaction(app_db.url) as s:
        prospect = s.get(Prospect, pid)
        assert prospect is not None
        prospect.last_sent_at = OPEN
    _send(smtp, imap, app_db, pid, now=later)
    done = _send(smtp, imap, app_db, pid, now=later + dt.timedelta(days=7))
    first, follow_up = mail_box.messages("hank@globex.test")
    assert follow_up["In-Reply-To"] == first["Message-ID"]
    assert follow_up["Subject"] == "Re: Hello Hank"
    assert done.figures == {"sequence_done": 1}


@pytest.mark.parametrize("state", ["replied", "bounced", "unsubscribed", "done", "new"])
def test_never_sends_to_prospects_that_must_not_get_mail(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
    state: str,
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect("p1", email="hank@globex.test", state=state)
    outcome = _send(smtp, imap, app_db, pid)
    assert outcome.status == "succeeded"
    assert mail_box.messages("hank@globex.test") == []
    assert _outbox(app_db.url) == []


@pytest.mark.parametrize(
    ("now", "opens"),
    [
        # Sunday 12:00 Berlin: Monday 08:00 Berlin.
        (dt.datetime(2026, 12, 6, 11, 0, tzinfo=dt.UTC), dt.datetime(2026, 12, 7, 7, 0)),
        # Wednesday 19:30 Berlin: Thursday 08:00.
        (dt.datetime(2026, 12, 2, 18, 30, tzinfo=dt.UTC), dt.datetime(2026, 12, 3, 7, 0)),
        # Saturday 07:00 Berlin: Saturday 08:00 (the seed sends Monday to Saturday).
        (dt.datetime(2026, 12, 5, 6, 0, tzinfo=dt.UTC), dt.datetime(2026, 12, 5, 7, 0)),
    ],
)
def test_outside_business_hours_the_send_parks_until_they_open(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
    now: dt.datetime,
    opens: dt.datetime,
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect("p1", email="hank@globex.test")
    outcome = _send(smtp, imap, app_db, pid, now=now)
    assert outcome.status == "parked"
    assert outcome.retry_at == opens.replace(tzinfo=dt.UTC).timestamp()
    assert mail_box.messages("hank@globex.test") == []


def test_business_hours_follow_the_prospects_time_zone() -> None:
    tokyo_evening = dt.datetime(2026, 12, 2, 11, 0, tzinfo=dt.UTC)  # 20:00 in Tokyo
    from zoneinfo import ZoneInfo

    assert business_open(tokyo_evening, ZoneInfo("Europe/Berlin")) is None
    assert business_open(tokyo_evening, ZoneInfo("Asia/Tokyo")) == dt.datetime(
        2026, 12, 2, 23, 0, tzinfo=dt.UTC
    )


def test_the_mailbox_daily_cap_parks_the_rest_until_tomorrow(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url, daily_cap=2)
    for i, address in enumerate(["a@globex.test", "b@globex.test", "c@globex.test"]):
        add_prospect(f"p{i}", email=address)
    outcomes = [_send(smtp, imap, app_db, f"p{i}") for i in range(3)]
    assert [o.status for o in outcomes] == ["succeeded", "succeeded", "parked"]
    tomorrow = (time.time() // 86400 + 1) * 86400
    assert outcomes[2].retry_at == tomorrow
    assert mail_box.accepted == 2
    assert [r.state for r in _outbox(app_db.url)] == ["sent", "sent", "pending"]


def test_a_missing_template_variable_is_a_dead_letter_and_nothing_is_sent(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url, body_template="Hi {{ first_name }}, about {{ budget }}.")
    pid = add_prospect("p1", email="hank@globex.test")
    outcome = _send(smtp, imap, app_db, pid)
    assert (outcome.status, outcome.error_class) == ("failed", "template")
    assert "'budget' is undefined" in (outcome.error or "")
    assert mail_box.accepted == 0 and _outbox(app_db.url) == []
    state = app_db.checkpoints(SOURCE_SEND).get(pid)
    assert state is not None and state.status == "dead"


def test_transient_smtp_errors_back_off_5_10_20_40_minutes_then_dead_letter(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect("p1", email="hank@globex.test")
    mail_box.faults.inject("error", count=5, path_contains="DATA", status=451)
    waits = []
    for _ in range(5):
        before = time.time()
        outcome = _send(smtp, imap, app_db, pid)
        if outcome.retry_at:
            waits.append(round((outcome.retry_at - before) / 60))
    state = app_db.checkpoints(SOURCE_SEND).get(pid)
    assert waits == [5, 10, 20, 40]
    assert state is not None and state.status == "dead" and state.consecutive_failures == 5
    assert mail_box.accepted == 0
    [row] = _outbox(app_db.url)
    assert (row.state, row.attempts) == ("pending", 5)  # never accepted: safe to send later


def test_a_refused_recipient_is_a_bounce_and_a_dead_letter_at_once(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect("p1", email="nobody@hooli.test")
    outcome = _send(smtp, imap, app_db, pid)
    assert (outcome.status, outcome.error_class) == ("failed", "smtp_refused")
    assert _prospect(app_db.url, pid).state == "bounced"
    assert [r.state for r in _outbox(app_db.url)] == ["failed"]
    state = app_db.checkpoints(SOURCE_SEND).get(pid)
    assert state is not None and state.status == "dead"


def test_an_ambiguous_row_absent_from_sent_is_sent_exactly_once(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
) -> None:
    """The process died after committing "sending" but before SMTP: the message is absent
    from the Sent folder, so it is sent (once)."""
    add_campaign(app_db.url)
    pid = add_prospect("p1", email="hank@globex.test")
    mid = message_id("launch", pid, 0, SENDER)
    with transaction(app_db.url) as s:
        s.add(
            OutboxMessage(
                message_id=mid,
                prospect_id=pid,
                step=0,
                sender=SENDER,
                recipient="hank@globex.test",
                subject="Hello",
                body="Hi",
                state="sending",
                attempts=1,
            )
        )
    outcome = _send(smtp, imap, app_db, pid)
    assert outcome.figures == {"reconciled_unsent": 1, "sent": 1}
    assert [m["Message-ID"] for m in mail_box.messages("hank@globex.test")] == [mid]


def test_tier_priority_with_aging() -> None:
    now = OPEN
    assert send_priority("hot", now, now) < send_priority("warm", now, now)
    assert send_priority("warm", now, now) < send_priority("cold", now, now)
    two_days_cold = send_priority("cold", now - dt.timedelta(days=2), now)
    assert two_days_cold <= send_priority("hot", now, now)  # stale work is not starved


def test_send_queue_orders_by_tier(
    app_db: AppDatabaseResource, add_prospect: Callable[..., str]
) -> None:
    add_campaign(app_db.url)
    add_prospect("cold1", email="c@globex.test", tier="cold")
    add_prospect("hot1", email="h@globex.test", tier="hot")
    add_prospect("warm1", email="w@globex.test", tier="warm")
    add_prospect("new1", tier="hot")  # not enriched: nothing to send
    now = dt.datetime.now(dt.UTC)
    assert send_queue(app_db.url, now) == ["hot1", "warm1", "cold1"]
    # Three days later the cold prospect has waited long enough to go first among equals.
    assert send_queue(app_db.url, now + dt.timedelta(days=3))[0] in {"hot1", "cold1"}


# -- a real kill between the SMTP server's acceptance and the commit ----------------------------
CHILD = """
import json, sys
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.sync_runner import SyncOutcome
from sync_pipeline.core.sync_runner import RunContext
from sync_pipeline.defs.outreach.resources import ImapResource, SmtpResource
from sync_pipeline.defs.outreach.sync import SendSettings, send_email
import datetime as dt

cfg = json.loads(sys.argv[1])
app_db = AppDatabaseResource(url=cfg["db_url"], token_key=cfg["token_key"])
smtp = SmtpResource(**cfg["smtp"])
imap = ImapResource(**cfg["imap"])

def accepted() -> None:
    print("ACCEPTED", flush=True)
    sys.stdin.read()  # blocks until the parent kills this process

send_email(
    smtp, imap, app_db, cfg["prospect"], RunContext(owner="child-run"),
    now=dt.datetime.fromisoformat(cfg["now"]), after_accept=accepted,
    settings=SendSettings(unsubscribe_key=cfg["unsubscribe_key"]),
)
print("COMMITTED", flush=True)
"""


def test_killed_between_smtp_accept_and_commit_leaves_exactly_one_copy(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
    tmp_path: Path,
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect("p1", email="hank@globex.test")
    cfg = {
        "db_url": app_db.url,
        "token_key": app_db.token_key,
        "smtp": smtp.model_dump(),
        "imap": imap.model_dump(),
        "prospect": pid,
        "now": OPEN.isoformat(),
        "unsubscribe_key": UNSUBSCRIBE_KEY,
    }
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ},
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ACCEPTED"  # the server answered 250
            assert len(mail_box.messages("hank@globex.test")) == 1
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
    [row] = _outbox(app_db.url)
    assert row.state == "sending"  # the acceptance was never recorded

    outcome = send_email(
        smtp,
        imap,
        app_db,
        pid,
        CTX.__class__(owner="next-run", owner_is_dead=lambda _: True),
        settings=SETTINGS,
        now=OPEN,
    )

    assert outcome.figures == {"reconciled_sent": 1, "not_due": 1}
    assert len(mail_box.messages("hank@globex.test")) == 1
    assert mail_box.accepted == 1
    [row] = _outbox(app_db.url)
    assert (row.state, row.attempts) == ("sent", 1)
    prospect = _prospect(app_db.url, pid)
    assert (prospect.state, prospect.step) == ("contacted", 1)
    with transaction(app_db.url) as s:
        state = s.get(SyncState, (SOURCE_SEND, pid))
        assert state is not None and state.status == "succeeded"


def test_the_minimum_gap_between_sends_parks_the_next_one(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url, min_gap_seconds=3600)
    add_prospect("p1", email="a@globex.test")
    add_prospect("p2", email="b@globex.test")
    first, second = _send(smtp, imap, app_db, "p1"), _send(smtp, imap, app_db, "p2")
    assert (first.status, second.status) == ("succeeded", "parked")
    assert second.retry_at == (time.time() // 3600 + 1) * 3600
    assert "minimum gap" in (second.error or "")
    assert mail_box.accepted == 1
