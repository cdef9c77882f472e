"""A real mail provider on loopback: SMTP submission (aiosmtpd) and IMAP (pymap, in memory).

Like Gmail or any hosted mailbox, a message accepted from an authenticated sender is also
filed in that sender's ``Sent`` folder before the server answers ``250``; every recipient's
copy lands in their ``INBOX``. Recipients can be told to bounce (a ``multipart/report``
delivery-status notification to the sender, hard 5.x.x or soft 4.x.x) or to answer with an
RFC 3834 auto-reply. Faults come from the shared FaultBook: ``error`` answers an SMTP status
(``status``: 421, 451, 550 ...) at ``RCPT`` or ``DATA`` (``path_contains``), ``slow`` delays
the answer, ``timeout`` holds the command for ``delay`` seconds and drops the connection.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import ssl
import tempfile
import threading
import warnings
from argparse import Namespace
from collections.abc import Coroutine
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession
from proxyprotocol.reader import ProxyProtocolReader
from pymap.backend.dict import Config as DictConfig
from pymap.backend.dict import Identity, Login
from pymap.imap import IMAPServer
from pymap.parsing.message import AppendMessage
from pymap.parsing.specials.flag import Flag
from pymap.user import Passwords, UserMetadata

from sync_pipeline.sandbox.common import FaultBook

T = TypeVar("T")
SENT = "Sent"
HOSTNAME = "mail.sandbox.test"
SEEN = Flag(b"\\Seen")


@dataclass
class MailConfig:
    """How the provider behaves: who may log in, TLS, and recipients that bounce or reply."""

    users: dict[str, str] = field(default_factory=dict)  # address -> password
    smtp_auth_required: bool = True
    starttls: bool = False
    hard_bounce: set[str] = field(default_factory=set)
    soft_bounce: set[str] = field(default_factory=set)
    auto_reply: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)  # refused at RCPT with 550 5.1.1


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for ``localhost``/127.0.0.1 and the CA file a client trusts."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, cert_path


class MailSandbox:
    """SMTP + IMAP servers sharing one in-memory mail store, in a daemon thread."""

    def __init__(
        self,
        config: MailConfig | None = None,
        faults: FaultBook | None = None,
        *,
        smtp_port: int = 0,
        imap_port: int = 0,
    ) -> None:
        self.config = config or MailConfig()
        self.faults = faults or FaultBook()
        self.accepted = 0  # messages answered 250 at DATA
        self.smtp_port = smtp_port  # 0: a free port, known once started
        self.imap_port = imap_port
        self.ca_file: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._tls: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._imap_config: DictConfig | None = None
        self._login: Login | None = None
        self._queue_id = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> MailSandbox:
        """Start both servers on loopback (the ports given, else free ones); returns once they
        accept connections (OSError when a port is taken)."""
        # aiosmtpd warns on every AUTH session about its own deprecated attribute.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        if self.config.starttls:
            self._tmp = tempfile.TemporaryDirectory(prefix="mail-sandbox-")
            self._tls, self.ca_file = self_signed_tls(Path(self._tmp.name))
        self._thread = threading.Thread(target=self._run, name="mail-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            if isinstance(self._error, OSError):
                raise self._error
            raise RuntimeError("mail sandbox failed to start") from self._error
        return self

    def stop(self) -> None:
        """Close the servers and the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10.0)
        if self._tmp is not None:
            self._tmp.cleanup()
        self._loop = self._thread = self._tmp = None

    def __enter__(self) -> MailSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for server in self._servers:
                server.close()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _serve(self) -> None:
        args = Namespace(passlib_cfg=None, proxy_protocol=None)
        config = DictConfig(
            args,
            host="127.0.0.1",
            port=0,
            demo_data=False,
            demo_user="nobody@sandbox.test",
            demo_password="unused-demo-password",
            tls_enabled=False,
            secure_auth=False,
            invalid_user_sleep=0.0,
            reject_dnsbl=False,
        )
        config.apply_context()
        self._imap_config, self._login = config, Login(config)
        for address, password in self.config.users.items():
            await self._add_user(address, password)
        imap = IMAPServer(self._login, config)
        callback = ProxyProtocolReader(config.proxy_protocol).get_callback(imap)
        imap_server = await asyncio.start_server(callback, host="127.0.0.1", port=self.imap_port)
        self.imap_port = imap_server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        try:
            smtp_server = await loop.create_server(
                self._smtp_protocol, host="127.0.0.1", port=self.smtp_port
            )
        except OSError:
            imap_server.close()
            raise
        self.smtp_port = smtp_server.sockets[0].getsockname()[1]
        self._servers = [imap_server, smtp_server]

    def _smtp_protocol(self) -> SMTP:
        with warnings.catch_warnings():
            # AUTH without TLS is this sandbox's plain-loopback mode (STARTTLS is optional).
            warnings.simplefilter("ignore", UserWarning)
            return self._new_smtp()

    def _new_smtp(self) -> SMTP:
        return SMTP(
            _Handler(self),
            hostname=HOSTNAME,
            tls_context=self._tls,
            require_starttls=self._tls is not None,
            auth_required=self.config.smtp_auth_required,
            auth_require_tls=self._tls is not None,
            authenticator=self._authenticate,
            timeout=60,
            loop=asyncio.get_running_loop(),
        )

    def _authenticate(
        self, server: SMTP, session: SmtpSession, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        ok = self.config.users.get(login) == password
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    # -- the mail store ---------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        if self._loop is None:
            raise RuntimeError("mail sandbox not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _add_user(self, address: str, password: str) -> None:
        assert self._imap_config is not None and self._login is not None
        hashed = await Passwords(self._imap_config).hash_password(password)
        admin = Identity(address, self._login, None, frozenset({"admin"}))
        await admin.set(UserMetadata(self._imap_config, address, password=hashed))
        async with admin.new_session() as session:
            names = list((await session.mailbox_set.list_mailboxes()).list())
            if SENT not in {entry.name for entry in names}:
                await session.mailbox_set.add_mailbox(SENT)

    async def _append(
        self, address: str, raw: bytes, mailbox: str = "INBOX", *, seen: bool = False
    ) -> None:
        assert self._login is not None
        identity = Identity(address, self._login, None, frozenset({"admin"}))
        if address not in self._login.users_dict:
            # A mailbox at another provider: it exists, nobody logs in to it here.
            await self._add_user(address, f"unused-{address}")
        async with identity.new_session() as session:
            mbx = await session.mailbox_set.get_mailbox(mailbox)
            flags = frozenset({SEEN}) if seen else frozenset()
            await mbx.append(AppendMessage(raw, dt.datetime.now(dt.UTC), flags), recent=True)

    async def _read(self, address: str, mailbox: str) -> list[bytes]:
        assert self._login is not None
        if address not in self._login.users_dict:
            return []
        identity = Identity(address, self._login, None, frozenset({"admin"}))
        async with identity.new_session() as session:
            mbx = await session.mailbox_set.get_mailbox(mailbox)
            out = []
            for uid in sorted(mbx._messages):  # the dict backend's store, read-only here
                message = mbx._messages[uid]
                if not message.expunged and message._content is not None:
                    out.append(bytes(message._content))
            return out

    def add_user(self, address: str, password: str) -> None:
        """A mailbox account that can log in over SMTP and IMAP."""
        self.config.users[address] = password
        self._call(self._add_user(address, password))

    def deliver(self, address: str, raw: bytes, mailbox: str = "INBOX") -> None:
        """File a message in a mailbox (a reply arriving from outside, in tests and demos)."""
        self._call(self._append(address, raw, mailbox))

    def raw_messages(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        """The messages in a mailbox as stored (the bytes a mail client reads), oldest first."""
        return self._call(self._read(address, mailbox))

    def messages(self, address: str, mailbox: str = "INBOX") -> list[EmailMessage]:
        """The messages in a mailbox, parsed, oldest first."""
        parser = BytesParser(_class=EmailMessage, policy=default_policy)
        return [parser.parsebytes(raw) for raw in self.raw_messages(address, mailbox)]

    def next_queue_id(self) -> str:
        """An id for the ``250 queued as`` answer."""
        self._queue_id += 1
        return f"SBX{self._queue_id:08d}"


class _Handler:
    """aiosmtpd handler: recipients, faults, delivery, Sent copy, bounces and auto-replies."""

    def __init__(self, box: MailSandbox) -> None:
        self.box = box

    async def _fault(self, where: str, principal: str | None) -> str | None:
        fault = self.box.faults.take(where, principal)
        if fault is None:
            return None
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return None
        if fault.kind == "timeout":
            await asyncio.sleep(fault.delay if fault.delay > 0 else 30.0)
            return "421 4.4.2 mail.sandbox.test Error: timeout exceeded"
        status = fault.status or 451
        text = "Requested action aborted: local error in processing"
        if status >= 500:
            text = "Requested action not taken: mailbox unavailable"
        return f"{status} {status // 100}.0.0 {text}"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept or refuse one recipient."""
        refused = await self._fault("RCPT", address)
        if refused is not None:
            return refused
        if address.lower() in self.box.config.rejected:
            return "550 5.1.1 The email account that you tried to reach does not exist"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        """Deliver to every recipient, file the sender's copy in Sent, then answer 250."""
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else None
        refused = await self._fault("DATA", first)
        if refused is not None:
            return refused
        raw = envelope.original_content or b""
        if not raw and isinstance(envelope.content, bytes):
            raw = envelope.content
        sender = envelope.mail_from or ""
        login = getattr(session.auth_data, "login", b"")
        login_name = login.decode() if isinstance(login, bytes) else str(login or "")
        for rcpt in envelope.rcpt_tos:
            await self.box._append(rcpt, raw)
        if login_name and login_name == sender:
            await self.box._append(sender, raw, SENT, seen=True)
        self.box.accepted += 1
        original = BytesParser(policy=default_policy).parsebytes(raw)
        for rcpt in envelope.rcpt_tos:
            notice = self._notice(sender, rcpt.lower(), original)
            if notice is not None and sender in self.box.config.users:
                await self.box._append(sender, notice)
        return f"250 2.0.0 Ok: queued as {self.box.next_queue_id()}"

    def _notice(self, sender: str, rcpt: str, original: Any) -> bytes | None:
        cfg = self.box.config
        if rcpt in cfg.hard_bounce:
            return dsn(sender, rcpt, original, hard=True)
        if rcpt in cfg.soft_bounce:
            return dsn(sender, rcpt, original, hard=False)
        if rcpt in cfg.auto_reply:
            return auto_reply(sender, rcpt, original)
        return None


def dsn(sender: str, rcpt: str, original: Any, *, hard: bool) -> bytes:
    """An RFC 3464 delivery-status notification for `rcpt` (hard: 5.1.1, soft: 4.2.2)."""
    status, action = ("5.1.1", "failed") if hard else ("4.2.2", "delayed")
    diagnostic = (
        "smtp; 550 5.1.1 The email account that you tried to reach does not exist"
        if hard
        else "smtp; 452 4.2.2 The email account that you tried to reach is over quota"
    )
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery Subsystem <mailer-daemon@{HOSTNAME}>"
    report["To"] = sender
    report["Subject"] = "Delivery Status Notification (" + ("Failure)" if hard else "Delay)")
    report["Date"] = email.utils.formatdate(usegmt=True)
    report["Message-ID"] = email.utils.make_msgid(domain=HOSTNAME)
    report["Auto-Submitted"] = "auto-replied"
    if original.get("Message-ID"):
        report["In-Reply-To"] = str(original["Message-ID"])
        report["References"] = str(original["Message-ID"])
    human = "failed permanently" if hard else "is delayed; retrying"
    report.attach(MIMEText(f"Delivery to {rcpt} {human}.\n"))
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {HOSTNAME}"
    per_rcpt = Message()
    per_rcpt["Final-Recipient"] = f"rfc822; {rcpt}"
    per_rcpt["Action"] = action
    per_rcpt["Status"] = status
    per_rcpt["Diagnostic-Code"] = diagnostic
    status_part = Message()
    status_part["Content-Type"] = "message/delivery-status"
    status_part.set_payload([per_message, per_rcpt])
    report.attach(status_part)
    headers = "".join(
        f"{name}: {original[name]}\n"
        for name in ("From", "To", "Subject", "Message-ID", "Date")
        if original.get(name)
    )
    report.attach(MIMEText(headers, "rfc822-headers"))
    return report.as_bytes()


def auto_reply(sender: str, rcpt: str, original: Any) -> bytes:
    """An RFC 3834 out-of-office answer from `rcpt` to `sender`."""
    msg = EmailMessage()
    msg["From"] = rcpt
    msg["To"] = sender
    msg["Subject"] = f"Automatic reply: {original.get('Subject', '')}"
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=rcpt.partition("@")[2] or HOSTNAME)
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    if original.get("Message-ID"):
        msg["In-Reply-To"] = original["Message-ID"]
        msg["References"] = original["Message-ID"]
    msg.set_content("I am out of the office until next week and will answer then.\n")
    return msg.as_bytes()
