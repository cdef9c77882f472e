"""The SMTP and IMAP clients against the mail sandbox: TLS, AUTH, errors classified."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from sync_pipeline.core.errors import ConfigError, TransientError
from sync_pipeline.defs.outreach.resources import (
    ImapResource,
    SmtpRefusedError,
    SmtpResource,
)
from sync_pipeline.sandbox.mail.server import MailConfig, MailSandbox
from sync_pipeline_tests.outreach import SENDER, SENDER_PASSWORD


def _message(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, to, "Hi"
    msg["Message-ID"] = "<r1@acme.test>"
    msg.set_content("Hello")
    return msg


def test_starttls_and_auth_with_the_servers_ca() -> None:
    with MailSandbox(MailConfig(users={SENDER: SENDER_PASSWORD}, starttls=True)) as box:
        smtp = SmtpResource(
            host="127.0.0.1",
            port=box.smtp_port,
            username=SENDER,
            password=SENDER_PASSWORD,
            security="starttls",
            ca_file=str(box.ca_file),
            timeout_seconds=5.0,
        )
        with smtp.connect() as conn:
            smtp.send(conn, _message("hank@globex.test"))
        imap = ImapResource(
            host="127.0.0.1",
            port=box.imap_port,
            username=SENDER,
            password=SENDER_PASSWORD,
            security="none",
            timeout_seconds=5.0,
        )
        assert imap.sent_contains("<r1@acme.test>")
        assert not imap.sent_contains("<other@acme.test>")


def test_errors_are_classified_and_carry_no_password(mail_box: MailSandbox) -> None:
    wrong = SmtpResource(
        host="127.0.0.1",
        port=mail_box.smtp_port,
        username=SENDER,
        password="s3cret-wrong",
        security="none",
        timeout_seconds=5.0,
    )
    with pytest.raises(ConfigError) as auth, wrong.connect():
        pass
    assert "s3cret-wrong" not in str(auth.value)
    smtp = wrong.model_copy(update={"password": SENDER_PASSWORD})
    with pytest.raises(SmtpRefusedError), smtp.connect() as conn:
        smtp.send(conn, _message("nobody@hooli.test"))
    mail_box.faults.inject("error", path_contains="DATA", status=421)
    with pytest.raises(TransientError) as temporary, smtp.connect() as conn:
        smtp.send(conn, _message("hank@globex.test"))
    assert not isinstance(temporary.value, SmtpRefusedError)
    closed = SmtpResource(host="127.0.0.1", port=1, security="none", timeout_seconds=2.0)
    with pytest.raises(TransientError), closed.connect():
        pass
    imap = ImapResource(
        host="127.0.0.1",
        port=mail_box.imap_port,
        username=SENDER,
        password="s3cret-wrong",
        security="none",
        timeout_seconds=5.0,
    )
    with pytest.raises(ConfigError) as login:
        imap.sent_contains("<x@acme.test>")
    assert "s3cret-wrong" not in str(login.value)
