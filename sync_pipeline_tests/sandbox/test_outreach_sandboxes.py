"""The outreach sandboxes behave like Hunter, Supabase REST and a hosted mailbox."""

from __future__ import annotations

import datetime as dt
import imaplib
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from sync_pipeline.sandbox.common import ManualClock
from sync_pipeline.sandbox.mail.server import MailConfig, MailSandbox
from sync_pipeline_tests.outreach import (
    CRM_TABLE,
    HUNTER_KEY,
    SENDER,
    SENDER_PASSWORD,
    SUPABASE_KEY,
    HunterBox,
    SupabaseBox,
)

# -- Hunter ------------------------------------------------------------------------------------


def test_domain_search_by_company_and_by_domain(hunter_box: HunterBox) -> None:
    by_name = httpx.get(
        f"{hunter_box.url}/v2/domain-search",
        params={"company": "Initech", "api_key": HUNTER_KEY},
        timeout=5,
    )
    assert by_name.status_code == 200
    body = by_name.json()
    assert set(body) == {"data", "meta"}
    assert body["data"]["domain"] == "initech.test"
    assert [e["value"] for e in body["data"]["emails"]] == [
        "bill.lumbergh@initech.test",
        "peter@initech.test",
    ]
    by_domain = httpx.get(
        f"{hunter_box.url}/v2/domain-search",
        params={"domain": "globex.test"},
        headers={"X-API-KEY": HUNTER_KEY},
        timeout=5,
    )
    assert by_domain.json()["data"]["organization"] == "Globex"
    assert hunter_box.state.credits_used == 2


def test_email_finder_and_a_search_finding_nothing_costs_no_credit(hunter_box: HunterBox) -> None:
    found = httpx.get(
        f"{hunter_box.url}/v2/email-finder",
        params={
            "domain": "globex.test",
            "first_name": "Hank",
            "last_name": "Scorpio",
            "api_key": HUNTER_KEY,
        },
        timeout=5,
    ).json()["data"]
    assert (found["email"], found["score"]) == ("hank@globex.test", 94)
    nothing = httpx.get(
        f"{hunter_box.url}/v2/email-finder",
        params={
            "domain": "globex.test",
            "first_name": "A",
            "last_name": "B",
            "api_key": HUNTER_KEY,
        },
        timeout=5,
    ).json()["data"]
    assert nothing["email"] is None
    assert hunter_box.state.credits_used == 1


@pytest.mark.parametrize(
    ("params", "headers", "status", "error_id"),
    [
        ({"domain": "globex.test"}, {}, 401, "authentication_failed"),
        ({"domain": "globex.test", "api_key": "wrong"}, {}, 401, "authentication_failed"),
        ({"api_key": HUNTER_KEY}, {}, 400, "wrong_params"),
    ],
)
def test_hunter_error_bodies(
    hunter_box: HunterBox,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
    error_id: str,
) -> None:
    response = httpx.get(
        f"{hunter_box.url}/v2/domain-search", params=params, headers=headers, timeout=5
    )
    assert response.status_code == status
    [error] = response.json()["errors"]
    assert (error["id"], error["code"]) == (error_id, status)
    assert error["details"]


def _search(box: HunterBox, client: httpx.Client) -> httpx.Response:
    return client.get(
        f"{box.url}/v2/domain-search", params={"domain": "nowhere.test", "api_key": HUNTER_KEY}
    )


def test_hunter_answers_403_over_15_per_second_and_the_per_minute_limit(
    manual_hunter_box: tuple[HunterBox, ManualClock],
) -> None:
    box, clock = manual_hunter_box
    box.state.config.per_minute = 40  # Hunter's 500, scaled down to keep the test short
    clock.set(1_800_000_000.0 - 1_800_000_000.0 % 60)
    with httpx.Client(timeout=5) as client:
        assert [_search(box, client).status_code for _ in range(16)] == [200] * 15 + [403]
        assert "x-ratelimit-remaining" not in _search(box, client).headers
        statuses = []
        for _ in range(3):
            clock.advance(1.0)
            statuses += [_search(box, client).status_code for _ in range(15)]
        assert statuses == [200] * 25 + [403] * 20  # 40 in the minute, rejected ones not counted
        clock.advance(60.0)
        assert _search(box, client).status_code == 200


def test_hunter_answers_429_when_the_months_credits_are_spent(
    manual_hunter_box: tuple[HunterBox, ManualClock],
) -> None:
    box, clock = manual_hunter_box
    clock.set(dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC).timestamp())
    box.state.config.monthly_credits = 2
    params = {"domain": "globex.test", "api_key": HUNTER_KEY}
    url = f"{box.url}/v2/domain-search"
    assert [httpx.get(url, params=params, timeout=5).status_code for _ in range(2)] == [200] * 2
    spent = httpx.get(url, params=params, timeout=5)
    assert spent.status_code == 429
    assert spent.json()["errors"][0]["id"] == "too_many_requests"
    with httpx.Client(timeout=5) as client:
        assert _search(box, client).status_code == 200  # finding nothing needs no credit
    clock.advance(3600.0)  # December: a new allowance
    assert httpx.get(url, params=params, timeout=5).status_code == 200


def test_company_sites_answer_or_not(hunter_box: HunterBox) -> None:
    assert httpx.get(f"{hunter_box.url}/_sandbox/sites/globex.test", timeout=5).status_code == 200
    assert httpx.get(f"{hunter_box.url}/_sandbox/sites/hooli.test", timeout=5).status_code == 503


# -- Supabase ----------------------------------------------------------------------------------


def _headers(prefer: str | None = "resolution=merge-duplicates") -> dict[str, str]:
    headers = {"apikey": SUPABASE_KEY, "Authorization": f"Bearer {SUPABASE_KEY}"}
    if prefer:
        headers["Prefer"] = prefer
    return headers


def _row(pid: str, state: str) -> dict[str, Any]:
    return {"id": pid, "campaign": "c", "state": state, "step": 0}


def test_batched_upsert_merges_duplicates(supabase_box: SupabaseBox) -> None:
    url = f"{supabase_box.url}/rest/v1/{CRM_TABLE}?on_conflict=id"
    first = httpx.post(url, json=[_row("p1", "new"), _row("p2", "new")], headers=_headers())
    assert first.status_code == 201
    again = httpx.post(url, json=[_row("p1", "contacted")], headers=_headers())
    assert again.status_code == 201
    rows = {r["id"]: r["state"] for r in supabase_box.state.rows(CRM_TABLE)}
    assert rows == {"p1": "contacted", "p2": "new"}
    got = httpx.get(
        f"{supabase_box.url}/rest/v1/{CRM_TABLE}", params={"id": "eq.p1"}, headers=_headers(None)
    )
    assert [r["state"] for r in got.json()] == ["contacted"]


def test_conflict_without_merge_is_23505_and_writes_nothing(supabase_box: SupabaseBox) -> None:
    url = f"{supabase_box.url}/rest/v1/{CRM_TABLE}?on_conflict=id"
    httpx.post(url, json=[_row("p1", "new")], headers=_headers())
    clash = httpx.post(url, json=[_row("p2", "new"), _row("p1", "x")], headers=_headers(None))
    assert clash.status_code == 409
    body = clash.json()
    assert set(body) == {"code", "details", "hint", "message"}
    assert body["code"] == "23505"
    assert [r["id"] for r in supabase_box.state.rows(CRM_TABLE)] == ["p1"]


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "code"),
    [
        ("/rest/v1/nope", _headers(), [{"id": "x"}], 404, "PGRST205"),
        (f"/rest/v1/{CRM_TABLE}", _headers(), [{"id": "x", "bogus": 1}], 400, "PGRST204"),
        (f"/rest/v1/{CRM_TABLE}", {"apikey": "wrong"}, [{"id": "x"}], 401, None),
    ],
)
def test_postgrest_errors(
    supabase_box: SupabaseBox,
    path: str,
    headers: dict[str, str],
    body: Any,
    status: int,
    code: str | None,
) -> None:
    response = httpx.post(f"{supabase_box.url}{path}", json=body, headers=headers)
    assert response.status_code == status
    assert response.json().get("code") == code
    assert response.json()["message"]


# -- mail --------------------------------------------------------------------------------------


def _message(to: str, message_id: str, subject: str = "Hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content("Hi there")
    return msg


def _send(box: MailSandbox, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", box.smtp_port, timeout=5) as smtp:
        smtp.login(SENDER, SENDER_PASSWORD)
        smtp.send_message(msg)


def test_accepted_mail_lands_in_the_inbox_and_the_senders_sent_folder(
    mail_box: MailSandbox,
) -> None:
    _send(mail_box, _message("hank@globex.test", "<m1@acme.test>"))
    assert [m["Message-ID"] for m in mail_box.messages("hank@globex.test")] == ["<m1@acme.test>"]
    imap = imaplib.IMAP4("127.0.0.1", mail_box.imap_port, timeout=5)
    imap.login(SENDER, SENDER_PASSWORD)
    imap.select("Sent", readonly=True)
    _, found = imap.uid("SEARCH", "HEADER", "Message-ID", "<m1@acme.test>")
    _, missing = imap.uid("SEARCH", "HEADER", "Message-ID", "<m2@acme.test>")
    imap.logout()
    assert len(found[0].split()) == 1
    assert missing[0] == b""


def test_smtp_needs_auth_with_the_right_password(mail_box: MailSandbox) -> None:
    with smtplib.SMTP("127.0.0.1", mail_box.smtp_port, timeout=5) as smtp:
        with pytest.raises(smtplib.SMTPSenderRefused) as unauth:
            smtp.send_message(_message("hank@globex.test", "<m1@acme.test>"))
        assert unauth.value.smtp_code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(SENDER, "wrong")
    assert mail_box.messages("hank@globex.test") == []


def test_bounces_and_auto_replies_reach_the_senders_inbox(mail_box: MailSandbox) -> None:
    _send(mail_box, _message("gone@initech.test", "<b1@acme.test>"))
    _send(mail_box, _message("ooo@globex.test", "<a1@acme.test>"))
    dsn, ooo = mail_box.messages(SENDER)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["In-Reply-To"] == "<b1@acme.test>"
    assert "Status: 5.1.1" in dsn.as_string()
    assert (ooo["Auto-Submitted"], ooo["In-Reply-To"]) == ("auto-replied", "<a1@acme.test>")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        _send(mail_box, _message("nobody@hooli.test", "<r1@acme.test>"))


def test_injected_smtp_fault_refuses_the_message(mail_box: MailSandbox) -> None:
    mail_box.faults.inject("error", path_contains="DATA", status=451)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(mail_box, _message("hank@globex.test", "<f1@acme.test>"))
    assert refused.value.smtp_code == 451
    assert mail_box.messages("hank@globex.test") == []
    _send(mail_box, _message("hank@globex.test", "<f1@acme.test>"))
    assert len(mail_box.messages("hank@globex.test")) == 1


def test_starttls_then_auth() -> None:
    config = MailConfig(users={SENDER: SENDER_PASSWORD}, starttls=True)
    with MailSandbox(config) as box:
        assert box.ca_file is not None
        context = ssl.create_default_context(cafile=str(box.ca_file))
        with smtplib.SMTP("127.0.0.1", box.smtp_port, timeout=5) as smtp:
            with pytest.raises(smtplib.SMTPNotSupportedError):
                smtp.login(SENDER, SENDER_PASSWORD)  # no AUTH before STARTTLS
            smtp.starttls(context=context)
            smtp.login(SENDER, SENDER_PASSWORD)
            smtp.send_message(_message("hank@globex.test", "<t1@acme.test>"))
        assert len(box.messages(SENDER, "Sent")) == 1
