"""Outreach clients: Hunter (enrichment), Supabase REST (CRM), SMTP (sending), IMAP (mail in).

Hunter is a provider client on the shared base: its per-second, per-minute and per-month
credit windows live in the shared rate budget, so every process together stays inside them.
The others are thin, typed wrappers around their protocol with explicit timeouts that turn
the protocol's failures into the project's error classes. No secret is ever logged.
"""

from __future__ import annotations

import email.utils
import imaplib
import smtplib
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, ClassVar

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from sync_pipeline.core.budget import Window
from sync_pipeline.core.client import Limited, ProviderClient, body_text
from sync_pipeline.core.errors import (
    ConfigError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from sync_pipeline.core.http import CallStats, HttpSession, TransientHttpError, sent_at

HUNTER_CREDIT_PATHS = ("/v2/domain-search", "/v2/email-finder")


@dataclass(frozen=True)
class DomainResult:
    """What a domain search found about a company."""

    domain: str | None
    organization: str | None


@dataclass(frozen=True)
class EmailResult:
    """What the e-mail finder found about a person."""

    email: str | None
    score: int | None


class HunterResource(ProviderClient):
    """Hunter API v2: domain search and e-mail finder, keyed by an API key (no OAuth)."""

    PROVIDER: ClassVar[str] = "hunter"

    api_key: str = Field(description="Hunter API key (sent as X-API-KEY, never logged).")
    client_id: str = Field(default="", description="Unused: Hunter has no OAuth app.")
    client_secret: str = Field(default="", description="Unused: Hunter has no OAuth app.")
    base_url: str = Field(default="https://api.hunter.io")
    per_second: int = Field(default=15, description="Requests per second per key.")
    per_minute: int = Field(default=500, description="Requests per minute per key.")
    monthly_credits: int = Field(default=25_000, description="Searches per calendar month.")
    website_url: str = Field(
        default="https://{domain}/",
        description="Where a company's website is checked; {domain} is replaced.",
    )
    website_timeout_seconds: float = 10.0
    max_inline_wait_seconds: float = Field(
        default=61.0,
        description="Wait in-process for Hunter's minute window to reset (at most a minute); "
        "longer waits (monthly credits) park the work.",
    )
    latency_guard_seconds: float = Field(
        default=0.25,
        description="Hunter counts a call when it arrives: one sent this close to the end of "
        "a second is charged to that second and the next.",
    )

    _site_session: HttpSession | None = PrivateAttr(default=None)

    def key_id(self) -> str:
        """A stable, non-secret name for the key's budget buckets."""
        import hashlib

        return hashlib.sha256(self.api_key.encode()).hexdigest()[:12]

    def rate_windows(self) -> list[Window]:
        """The per-second and per-minute windows every request spends."""
        key = self.key_id()
        return [
            Window(
                f"hunter:{key}:s",
                self.seconds(1),
                self.per_second,
                guard_seconds=self.latency_guard_seconds,
            ),
            Window(f"hunter:{key}:m", self.seconds(60), self.per_minute),
        ]

    def credit_window(self) -> Window:
        """The month's search credits."""
        return Window(
            f"hunter:{self.key_id()}:credits", 31 * 86400, self.monthly_credits, monthly=True
        )

    def windows(self, account: str, method: str, path: str) -> list[Window]:
        """Rate windows, plus a credit when the call is a search (refunded if it finds none)."""
        spent = self.rate_windows()
        if path in HUNTER_CREDIT_PATHS:
            spent.append(self.credit_window())
        return spent

    def access_token(self, account: str, *, stale: str | None = None) -> str:
        """The API key: Hunter has no tokens to refresh."""
        return self.api_key

    def auth_headers(self, access_token: str) -> dict[str, str]:
        """The key in a header (a query parameter would end up in access logs)."""
        return {"X-API-KEY": access_token}

    def token_rejected(self, response: httpx.Response) -> bool:
        """A rejected key is a configuration error, not an expired token."""
        return False

    @staticmethod
    def error_id(response: httpx.Response) -> str | None:
        """The ``errors[0].id`` of a Hunter error body."""
        try:
            errors = response.json().get("errors") or []
            return str(errors[0].get("id")) if errors else None
        except (ValueError, AttributeError, IndexError):
            return None

    def limited(self, account: str, path: str, response: httpx.Response) -> Limited | None:
        """403 over the per-second/minute limits; 429 when the month's credits are spent."""
        now = sent_at(response)
        if response.status_code == 429:
            window = self.credit_window()
            return Limited(float(window.end(now)), "monthly search credits spent", window=window)
        if response.status_code == 403 and self.error_id(response) == "too_many_requests":
            second, _ = self.rate_windows()
            return Limited(float(second.end(now)) + 0.05, "rate limit reached", window=second)
        return None

    def error_for(self, response: httpx.Response, what: str) -> Exception:
        """401 is a wrong key (configuration); other 4xx are permanent."""
        message = f"hunter {what}: HTTP {response.status_code} {body_text(response)}"
        if response.status_code == 401:
            return ConfigError(f"{message}; check HUNTER_API_KEY.")
        return super().error_for(response, what)

    def _search(
        self, path: str, params: Mapping[str, str], stats: CallStats | None
    ) -> dict[str, Any]:
        response = self.call("", "GET", path, params=params, stats=stats)
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"hunter {path}: unexpected body {body_text(response)}") from exc
        return data if isinstance(data, dict) else {}

    def domain_search(self, company: str, stats: CallStats | None = None) -> DomainResult:
        """The domain of a company, by its name."""
        data = self._search("/v2/domain-search", {"company": company, "limit": "1"}, stats)
        if not data.get("emails") and not data.get("pattern"):
            self.app_db.budget().refund([self.credit_window()])
        return DomainResult(data.get("domain") or None, data.get("organization"))

    def email_finder(
        self, domain: str, first_name: str, last_name: str, stats: CallStats | None = None
    ) -> EmailResult:
        """A person's address at a domain with Hunter's confidence score (0-100)."""
        params = {"domain": domain, "first_name": first_name, "last_name": last_name}
        data = self._search("/v2/email-finder", params, stats)
        if not data.get("email"):
            self.app_db.budget().refund([self.credit_window()])
            return EmailResult(None, None)
        score = data.get("score")
        return EmailResult(str(data["email"]), int(score) if score is not None else None)

    def website_answers(self, domain: str) -> bool:
        """Whether the company's website answers (any status below 500)."""
        with self._lock:
            if self._site_session is None:
                self._site_session = HttpSession(
                    "",
                    timeout=self.website_timeout_seconds,
                    connect_timeout=min(5.0, self.website_timeout_seconds),
                    transient_retries=1,
                )
            session = self._site_session
        try:
            response = session.request("GET", self.website_url.format(domain=domain))
        except TransientHttpError:
            return False
        return response.status_code < 500

    def close(self) -> None:
        """Close the API and website sessions."""
        super().close()
        with self._lock:
            if self._site_session is not None:
                self._site_session.close()
            self._site_session = None


class SupabaseResource(dg.ConfigurableResource):
    """Supabase REST (PostgREST): batched upserts of the CRM's rows."""

    url: str = Field(description="Project URL, e.g. https://xyz.supabase.co (or a sandbox).")
    service_key: str = Field(description="service_role key (apikey and bearer; never logged).")
    table: str = Field(default="prospects", description="CRM table of prospects.")
    batch_size: int = Field(default=500, description="Rows per upsert request.")
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    transient_retries: int = 3

    _session: HttpSession | None = PrivateAttr(default=None)

    def http(self) -> HttpSession:
        """The REST client (timeouts, bounded retries of 5xx and network errors)."""
        if self._session is None:
            self._session = HttpSession(
                self.url,
                timeout=self.timeout_seconds,
                connect_timeout=self.connect_timeout_seconds,
                transient_retries=self.transient_retries,
            )
        return self._session

    def _headers(self, prefer: str | None = None) -> dict[str, str]:
        headers = {"apikey": self.service_key, "Authorization": f"Bearer {self.service_key}"}
        if prefer:
            headers["Prefer"] = prefer
        return headers

    @staticmethod
    def _error(response: httpx.Response, what: str) -> Exception:
        try:
            body = response.json()
            detail = f"{body.get('code')}: {body.get('message')} ({body.get('details')})"
        except ValueError:
            detail = body_text(response)
        message = f"supabase {what}: HTTP {response.status_code} {detail}"
        if response.status_code in (401, 403):
            return ConfigError(f"{message}; check SUPABASE_SERVICE_KEY.")
        if response.status_code in (408, 429):
            return TransientError(message)
        return PermanentError(message)

    def upsert(
        self, rows: Sequence[Mapping[str, Any]], on_conflict: Sequence[str] = ("id",)
    ) -> int:
        """Insert or merge rows in batches; returns the number of requests."""
        requests = 0
        for start in range(0, len(rows), self.batch_size):
            batch = [dict(r) for r in rows[start : start + self.batch_size]]
            response = self.http().request(
                "POST",
                f"/rest/v1/{self.table}",
                params={"on_conflict": ",".join(on_conflict)},
                headers=self._headers("resolution=merge-duplicates,return=minimal"),
                json=batch,
            )
            requests += 1
            if response.status_code not in (200, 201, 204):
                raise self._error(response, f"upsert {self.table}")
        return requests

    def select(self, **eq: str) -> list[dict[str, Any]]:
        """Rows whose columns equal the given values."""
        params = {"select": "*", **{col: f"eq.{value}" for col, value in eq.items()}}
        response = self.http().request(
            "GET", f"/rest/v1/{self.table}", params=params, headers=self._headers()
        )
        if response.status_code != 200:
            raise self._error(response, f"select {self.table}")
        rows = response.json()
        return list(rows) if isinstance(rows, list) else []

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the connection pool at the end of a run."""
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            self._session.close()
        self._session = None


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


class SmtpRefusedError(PermanentError):
    """The server refused the message for good (5xx): do not send it again."""

    error_class = "smtp_refused"


class SmtpResource(dg.ConfigurableResource):
    """SMTP submission (smtplib) with optional STARTTLS and AUTH, and timeouts."""

    host: str
    port: int = 587
    username: str = Field(default="", description="AUTH login; empty: no AUTH.")
    password: str = Field(default="", description="AUTH password (never logged).")
    security: str = Field(
        default="starttls", description="starttls (required) or none (loopback sandboxes only)."
    )
    ca_file: str = Field(default="", description="CA bundle to verify the server (sandbox).")
    timeout_seconds: float = 30.0

    @contextmanager
    def connect(self) -> Iterator[smtplib.SMTP]:
        """An authenticated SMTP session."""
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientError(
                f"SMTP connect to {self.host}:{self.port} failed: {exc!r}"
            ) from exc
        try:
            if self.security == "starttls":
                smtp.starttls(context=_tls_context(self.ca_file))
            elif self.security != "none":
                raise ConfigError(f"SMTP security {self.security!r}: use starttls or none.")
            if self.username:
                smtp.login(self.username, self.password)
            yield smtp
        except smtplib.SMTPAuthenticationError as exc:
            raise ConfigError(
                f"SMTP AUTH refused for {self.username} ({exc.smtp_code}); check the password."
            ) from exc
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def send(self, smtp: smtplib.SMTP, message: EmailMessage) -> None:
        """Send one message over an open session.

        Raises SmtpRefusedError (5xx: the server will never take it), TransientError with
        `accepted_unknown=False` (4xx: it was not taken) or TransientError with
        `accepted_unknown=True` (the connection died while the server was deciding: whether
        it took the message is unknown and must be reconciled, never guessed).
        """
        try:
            refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise _refusal(min(codes), f"recipient refused: {exc.recipients}") from exc
        except smtplib.SMTPSenderRefused as exc:
            raise _refusal(exc.smtp_code, f"sender refused: {exc.smtp_error!r}") from exc
        except smtplib.SMTPDataError as exc:
            raise _refusal(exc.smtp_code, f"message refused: {exc.smtp_error!r}") from exc
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            raise SendUnknownError(f"SMTP connection lost during the send: {exc!r}") from exc
        if refused:
            raise SmtpRefusedError(f"recipients refused: {refused}")


class SendUnknownError(TransientError):
    """The send was interrupted after the message may have been accepted: reconcile first."""

    error_class = "send_unknown"


def _refusal(code: int, text: str) -> Exception:
    if 500 <= code < 600:
        return SmtpRefusedError(f"SMTP {code}: {text}")
    return TransientError(f"SMTP {code}: {text}")


@dataclass(frozen=True)
class Fetched:
    """A message fetched from a mailbox."""

    uidvalidity: int
    uid: int
    raw: bytes


class ImapResource(dg.ConfigurableResource):
    """IMAP (imaplib): search the Sent folder by Message-ID, read new mail from the INBOX."""

    host: str
    port: int = 993
    username: str
    password: str = Field(description="IMAP password (never logged).")
    security: str = Field(
        default="ssl", description="ssl (implicit TLS, 993), starttls, or none (sandboxes)."
    )
    ca_file: str = ""
    sent_folder: str = "Sent"
    inbox: str = "INBOX"
    timeout_seconds: float = 30.0

    @contextmanager
    def connect(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in IMAP session."""
        try:
            if self.security not in ("ssl", "starttls", "none"):
                raise ConfigError(f"IMAP security {self.security!r}: use ssl, starttls or none.")
            if self.security == "ssl":
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.host,
                    self.port,
                    ssl_context=_tls_context(self.ca_file),
                    timeout=self.timeout_seconds,
                )
            else:
                conn = imaplib.IMAP4(self.host, self.port, timeout=self.timeout_seconds)
                if self.security == "starttls":
                    conn.starttls(ssl_context=_tls_context(self.ca_file))
        except (OSError, imaplib.IMAP4.error) as exc:
            raise TransientError(
                f"IMAP connect to {self.host}:{self.port} failed: {exc!r}"
            ) from exc
        try:
            try:
                conn.login(self.username, self.password)
            except imaplib.IMAP4.error as exc:
                raise ConfigError(f"IMAP LOGIN refused for {self.username}") from exc
            yield conn
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise TransientError(f"IMAP session failed: {exc!r}") from exc
        finally:
            with suppress(OSError, imaplib.IMAP4.error):
                conn.logout()

    def sent_contains(self, message_id: str) -> bool:
        """Whether the Sent folder holds a message with this Message-ID."""
        with self.connect() as conn:
            typ, _ = conn.select(_quote(self.sent_folder), readonly=True)
            if typ != "OK":
                raise ConfigError(f"IMAP folder {self.sent_folder!r} cannot be selected")
            typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", _quote(message_id))
            if typ != "OK":
                raise TransientError(f"IMAP SEARCH failed: {data!r}")
            return bool(data and data[0] and data[0].split())

    def fetch_since(self, after_uid: int, uidvalidity: int | None) -> list[Fetched]:
        """INBOX messages with a UID above `after_uid` (all of them if UIDVALIDITY changed)."""
        with self.connect() as conn:
            typ, data = conn.select(_quote(self.inbox), readonly=True)
            if typ != "OK":
                raise ConfigError(f"IMAP folder {self.inbox!r} cannot be selected")
            current = _uidvalidity(conn)
            start = after_uid + 1 if uidvalidity == current else 1
            typ, data = conn.uid("SEARCH", f"UID {start}:*")
            if typ != "OK":
                raise TransientError(f"IMAP SEARCH failed: {data!r}")
            uids = sorted(int(u) for u in (data[0] or b"").split() if int(u) >= start)
            out = []
            for uid in uids:
                typ, parts = conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
                if typ != "OK":
                    raise TransientError(f"IMAP FETCH {uid} failed")
                raw = next((p[1] for p in parts if isinstance(p, tuple) and len(p) == 2), None)
                if isinstance(raw, bytes):
                    out.append(Fetched(current, uid, raw))
            return out


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _uidvalidity(conn: imaplib.IMAP4) -> int:
    for item in conn.response("UIDVALIDITY")[1]:
        if item:
            return int(item)
    _typ, data = conn.status("INBOX", "(UIDVALIDITY)")
    text = (data[0] or b"").decode() if data else ""
    return int(text.rsplit("UIDVALIDITY", 1)[-1].strip(" )")) if "UIDVALIDITY" in text else 0


def message_date() -> str:
    """An RFC 5322 Date header value for now."""
    return email.utils.formatdate(time.time(), usegmt=True)


__all__ = [
    "DomainResult",
    "EmailResult",
    "Fetched",
    "HunterResource",
    "ImapResource",
    "RateLimitedError",
    "SendUnknownError",
    "SmtpRefusedError",
    "SmtpResource",
    "SupabaseResource",
]


@dataclass(frozen=True)
class OutreachClients:
    """Every outreach client, configured from one set of settings."""

    hunter: HunterResource
    smtp: SmtpResource
    imap: ImapResource
    supabase: SupabaseResource
    unsubscribe_url: str
    unsubscribe_key: str = field(repr=False)
    min_confidence: int = 70
    soft_bounce_limit: int = 3


def outreach_clients(app_db: Any, env: Any) -> OutreachClients:
    """Outreach clients from settings (`env`: core.settings.Env). Variables: HUNTER_API_KEY,
    HUNTER_BASE_URL, HUNTER_WEBSITE_URL, SMTP_HOST/PORT/USERNAME/PASSWORD/SECURITY/CA_FILE,
    IMAP_HOST/PORT/USERNAME/PASSWORD/SECURITY/CA_FILE, SUPABASE_URL/SERVICE_KEY/TABLE,
    OUTREACH_UNSUBSCRIBE_URL, OUTREACH_UNSUBSCRIBE_KEY, OUTREACH_MIN_CONFIDENCE,
    OUTREACH_SOFT_BOUNCE_LIMIT."""
    return OutreachClients(
        hunter=HunterResource(
            app_db=app_db,
            api_key=env("HUNTER_API_KEY"),
            base_url=env("HUNTER_BASE_URL", default="https://api.hunter.io"),
            website_url=env("HUNTER_WEBSITE_URL", default="https://{domain}/"),
        ),
        smtp=SmtpResource(
            host=env("SMTP_HOST"),
            port=int(env("SMTP_PORT", default="587")),
            username=env("SMTP_USERNAME", default=""),
            password=env("SMTP_PASSWORD", default=""),
            security=env("SMTP_SECURITY", default="starttls"),
            ca_file=env("SMTP_CA_FILE", default=""),
        ),
        imap=ImapResource(
            host=env("IMAP_HOST"),
            port=int(env("IMAP_PORT", default="993")),
            username=env("IMAP_USERNAME"),
            password=env("IMAP_PASSWORD"),
            security=env("IMAP_SECURITY", default="ssl"),
            ca_file=env("IMAP_CA_FILE", default=""),
        ),
        supabase=SupabaseResource(
            url=env("SUPABASE_URL"),
            service_key=env("SUPABASE_SERVICE_KEY"),
            table=env("SUPABASE_TABLE", default="prospects"),
        ),
        unsubscribe_url=env(
            "OUTREACH_UNSUBSCRIBE_URL", default="https://outreach.invalid/unsubscribe/{token}"
        ),
        unsubscribe_key=env("OUTREACH_UNSUBSCRIBE_KEY", default=""),
        min_confidence=int(env("OUTREACH_MIN_CONFIDENCE", default="70")),
        soft_bounce_limit=int(env("OUTREACH_SOFT_BOUNCE_LIMIT", default="3")),
    )
