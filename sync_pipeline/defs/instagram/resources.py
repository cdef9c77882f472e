"""Instagram API with Instagram Login client resource: long-lived tokens, media per local day."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from typing import Annotated, Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from pydantic import BaseModel, BeforeValidator, Field, ValidationError

from sync_pipeline.core.budget import Window
from sync_pipeline.core.client import Limited, Observation, body_text
from sync_pipeline.core.daily import (
    Account,
    DailyActivityClient,
    Grant,
    count_local_days,
    local_day_bounds,
    parse_instant,
)
from sync_pipeline.core.errors import (
    AuthRevokedError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from sync_pipeline.core.http import CallStats
from sync_pipeline.core.tokens import TokenSet

SCOPES = "instagram_business_basic"
INSTAGRAM_CONSENT_HOST = "https://www.instagram.com"
INSTAGRAM_TOKEN_HOST = "https://api.instagram.com"
LONG_LIVED_SECONDS = 60 * 86400
USAGE_HEADER = "x-business-use-case-usage"
#: Graph error codes meaning "throttled": 80002 is Instagram's Business Use Case limit; 4, 17,
#: 32 and 613 are the app, user, page and custom-level limits.
THROTTLE_CODES = frozenset({80002, 4, 17, 32, 613})
TOKEN_CODES = frozenset({190, 102})
TRANSIENT_CODES = frozenset({1, 2})


def _instant(value: Any) -> Any:
    return parse_instant(value) if isinstance(value, str) else value


Instant = Annotated[dt.datetime, BeforeValidator(_instant)]


class Media(BaseModel):
    """One media object of `/{ig-user-id}/media` (only what the daily count needs)."""

    id: str
    timestamp: Instant
    media_type: str | None = None


class Cursors(BaseModel):
    """Cursor pair of a Graph page."""

    before: str | None = None
    after: str | None = None


class Paging(BaseModel):
    """Paging block of a Graph page (`next` is absent on the last page)."""

    cursors: Cursors | None = None
    next: str | None = None


class MediaPage(BaseModel):
    """A page of `/{ig-user-id}/media`, newest first."""

    data: list[Media] = Field(default_factory=list)
    paging: Paging | None = None


class GraphError(BaseModel):
    """The `error` object of a Graph API error response."""

    message: str = ""
    type: str | None = None
    code: int | None = None
    error_subcode: int | None = None
    is_transient: bool | None = None


class ShortLivedToken(BaseModel):
    """A code exchange result: the 1-hour token and the professional account id."""

    access_token: str
    user_id: str
    permissions: str = ""


class LongLivedToken(BaseModel):
    """Body of `/access_token` and `/refresh_access_token`: a 60-day token."""

    access_token: str
    expires_in: int | None = None


class IgUser(BaseModel):
    """Body of `GET /me?fields=user_id,username`."""

    id: str
    user_id: str | None = None
    username: str | None = None


def graph_error(response: httpx.Response) -> GraphError | None:
    """The Graph `error` object of a response, if it has one."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    try:
        return GraphError.model_validate(body["error"])
    except ValidationError:
        return None


def short_lived_token(body: Any) -> ShortLivedToken:
    """The code exchange body, current (`{"data": [...]}`) or older (flat) shape."""
    entry = body["data"][0] if isinstance(body, dict) and "data" in body else body
    permissions = entry.get("permissions", "")
    if isinstance(permissions, list):
        permissions = ",".join(str(p) for p in permissions)
    return ShortLivedToken(
        access_token=str(entry["access_token"]),
        user_id=str(entry["user_id"]),
        permissions=str(permissions),
    )


def next_cursor(paging: Paging | None) -> str | None:
    """The `after` cursor of the next page; None on the last page (no `next` link)."""
    if paging is None or not paging.next:
        return None
    if paging.cursors is not None and paging.cursors.after:
        return paging.cursors.after
    found = parse_qs(urlsplit(paging.next).query).get("after")
    return found[0] if found else None


def usage_percent(response: httpx.Response) -> tuple[int, int] | None:
    """(highest usage percentage, minutes to regain access) from the BUC usage header."""
    raw = response.headers.get(USAGE_HEADER)
    if not raw:
        return None
    try:
        usage = json.loads(raw)
        entries = [e for v in usage.values() for e in v if isinstance(e, dict)]
        pct = max(
            int(e.get(k) or 0)
            for e in entries
            for k in ("call_count", "total_cputime", "total_time")
        )
        regain = max(int(e.get("estimated_time_to_regain_access") or 0) for e in entries)
    except (ValueError, TypeError, AttributeError):
        return None
    return pct, regain


class InstagramResource(DailyActivityClient):
    """Instagram API with Instagram Login: a professional account's media per local day.

    Day rule: every media object's `timestamp` is converted to the user's time zone and
    counted on that local day; only the UTC range covering the local days is requested
    (`since`/`until`), and paging stops at the first item older than it.

    Tokens: the consent's 1-hour token is exchanged at once for a 60-day long-lived token,
    which is refreshed (`ig_refresh_token`, no refresh token exists) once it expires within
    `token_refresh_margin_seconds` and is at least a day old. An expired or revoked token
    cannot be refreshed: the user must reconnect.

    Limits: Business Use Case usage (`X-Business-Use-Case-Usage`, percentages of the
    account's budget) is observed into a per-account window; throttling (code 80002, an HTTP
    400) waits or parks for `estimated_time_to_regain_access`.
    """

    PROVIDER: ClassVar[str] = "instagram"

    base_url: str = Field(
        default="https://graph.instagram.com",
        description="Graph host: API reads and the long-lived token exchange and refresh.",
    )
    oauth_base_url: str = Field(
        default=INSTAGRAM_CONSENT_HOST, description="Consent host serving /oauth/authorize."
    )
    token_base_url: str = Field(
        default="",
        description="Host of POST /oauth/access_token (code exchange). Empty: "
        "https://api.instagram.com when oauth_base_url is Instagram's consent host, else "
        "oauth_base_url (a sandbox serves every host).",
    )
    api_version: str = Field(default="v23.0", description="Graph API version of read paths.")
    scopes: str = Field(default=SCOPES, description="Comma-separated permissions asked.")
    token_refresh_margin_seconds: float = Field(
        default=7 * 86400.0,
        description="Refresh the 60-day token when it expires within this long (7 days).",
    )
    refresh_min_age_seconds: float = Field(
        default=86400.0, description="Instagram refreshes only tokens at least this old (24 h)."
    )
    buc_calls_per_window: int = Field(
        default=200,
        ge=1,
        description="Calls per account per BUC window assumed before headers say otherwise "
        "(Meta's real budget is 4,800 x impressions per 24 h; the usage header corrects it).",
    )
    buc_window_seconds: int = Field(
        default=3600, ge=1, description="Length of the per-account BUC window we budget."
    )
    page_size: int = Field(default=100, ge=1, le=100, description="Media per page (1-100).")

    # -- budget ------------------------------------------------------------------------------
    def buc_window(self, account: str) -> Window:
        """The per-account Business Use Case window."""
        return Window(
            f"instagram:buc:user:{account}",
            self.seconds(self.buc_window_seconds),
            self.buc_calls_per_window,
        )

    def windows(self, account: str, method: str, path: str) -> list[Window]:
        """Every Graph read spends the account's BUC window."""
        return [self.buc_window(account)]

    def observe(self, account: str, path: str, response: httpx.Response) -> list[Observation]:
        """The header's highest percentage, as calls used of the window."""
        found = usage_percent(response)
        if found is None:
            return []
        window = self.buc_window(account)
        return [(window, math.ceil(min(found[0], 100) * window.limit / 100), None)]

    def limited(self, account: str, path: str, response: httpx.Response) -> Limited | None:
        """Throttling codes (HTTP 400 at Instagram): back after the estimated regain time."""
        if response.status_code < 400:
            return None
        error = graph_error(response)
        code = error.code if error is not None else None
        if code not in THROTTLE_CODES and response.status_code != 429:
            return None
        window = self.buc_window(account)
        now = time.time()
        found = usage_percent(response)
        minutes = found[1] if found is not None else 0
        retry_at = now + minutes * 60 if minutes > 0 else float(window.end(now))
        return Limited(
            retry_at,
            f"Instagram throttled the account (code {code}); access regained in about "
            f"{max(1, math.ceil((retry_at - now) / 60))} min",
            window,
        )

    def token_rejected(self, response: httpx.Response) -> bool:
        """Code 190 (expired, revoked or invalid token) arrives as HTTP 400: look at the body."""
        error = graph_error(response)
        if error is not None:
            return error.code in TOKEN_CODES
        return response.status_code == 401

    def error_for(self, response: httpx.Response, what: str) -> Exception:
        """Graph errors by code: 100/33 not found, transient flags retried, others permanent."""
        error = graph_error(response)
        if error is None:
            return super().error_for(response, what)
        message = (
            f"instagram {what}: HTTP {response.status_code} code {error.code}"
            f"/{error.error_subcode}: {error.message[:200]}"
        )
        if error.is_transient or error.code in TRANSIENT_CODES:
            return TransientError(message)
        if error.code == 100 and error.error_subcode == 33:
            return NotFoundError(message)
        return PermanentError(message)

    # -- OAuth and long-lived tokens -----------------------------------------------------------
    def consent(self, redirect_uri: str, state: str, **extra: str) -> tuple[str, dict[str, str]]:
        """Instagram's Business Login authorize URL (no PKCE, nothing to keep)."""
        params = {
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": self.scopes,
            "state": state,
            **extra,
        }
        return f"{self.oauth_url('/oauth/authorize')}?{urlencode(params)}", {}

    def exchange(self, code: str, redirect_uri: str, secrets: dict[str, str]) -> Grant:
        """Code → 1-hour token → 60-day token, then the account's id and username."""
        response = self.auth_http().request(
            "POST",
            f"{self._token_host()}/oauth/access_token",
            data={
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "grant_type": "authorization_code",
                "redirect_uri": redirect_uri,
                "code": code.removesuffix("#_"),
            },
        )
        if response.status_code != 200:
            self.token_error(response, "authorization_code")
        try:
            short = short_lived_token(response.json())
        except (ValueError, KeyError, IndexError, TypeError, ValidationError) as exc:
            raise TransientError("Instagram code exchange answered an unexpected body") from exc
        response = self.auth_http().request(
            "GET",
            f"{self._graph_host()}/access_token",
            params={
                "grant_type": "ig_exchange_token",
                "client_secret": self.client_secret,
                "access_token": short.access_token,
            },
        )
        long_lived = self._long_lived(response, "ig_exchange_token")
        user = self._me(long_lived.access_token)
        tokens = TokenSet(
            access_token=long_lived.access_token,
            refresh_token=None,
            expires_at=self._expires_at(long_lived),
            scopes=short.permissions,
        )
        return Grant(tokens=tokens, account_id=user.user_id or user.id, handle=user.username)

    def refresh(self, tokens: TokenSet) -> TokenSet:
        """A new 60-day token for the current one (Instagram has no refresh tokens).

        Tokens younger than `refresh_min_age_seconds` are returned unchanged: Instagram
        refuses to refresh them. A refusal for any other reason than an invalid token keeps
        the current token while it is still valid.
        """
        now = time.time()
        if tokens.expires_at is not None:
            age = self.seconds(LONG_LIVED_SECONDS) - (tokens.expires_at - now)
            if age < self.refresh_min_age_seconds / self.time_scale:
                return tokens
        response = self.auth_http().request(
            "GET",
            f"{self._graph_host()}/refresh_access_token",
            params={"grant_type": "ig_refresh_token", "access_token": tokens.access_token},
        )
        error = graph_error(response) if response.status_code != 200 else None
        still_valid = tokens.expires_at is not None and tokens.expires_at > now
        if (
            error is not None
            and error.code not in TOKEN_CODES
            and not error.is_transient
            and response.status_code < 500
            and still_valid
        ):
            return tokens
        refreshed = self._long_lived(response, "ig_refresh_token")
        return TokenSet(refreshed.access_token, None, self._expires_at(refreshed), tokens.scopes)

    def _token_host(self) -> str:
        if self.token_base_url:
            return self.token_base_url.rstrip("/")
        consent = (self.oauth_base_url or self.base_url).rstrip("/")
        return INSTAGRAM_TOKEN_HOST if consent == INSTAGRAM_CONSENT_HOST else consent

    def _graph_host(self) -> str:
        return self.base_url.rstrip("/")

    def _expires_at(self, token: LongLivedToken) -> int:
        lifetime = token.expires_in if token.expires_in else self.seconds(LONG_LIVED_SECONDS)
        return int(time.time()) + lifetime

    def _long_lived(self, response: httpx.Response, grant: str) -> LongLivedToken:
        if response.status_code != 200:
            error = graph_error(response)
            if error is not None and (error.is_transient or error.code in TRANSIENT_CODES):
                raise TransientError(f"Instagram {grant} failed transiently (code {error.code})")
            self.token_error(response, grant)
        try:
            return LongLivedToken.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise TransientError(f"Instagram {grant} answered an unexpected body") from exc

    def _me(self, access_token: str) -> IgUser:
        """`GET /me` with the new token (at connect time, before tokens are stored)."""
        response = self.http().request(
            "GET",
            f"/{self.api_version}/me",
            params={"fields": "user_id,username"},
            headers=self.auth_headers(access_token),
        )
        if self.token_rejected(response):
            raise AuthRevokedError("Instagram rejected the token it just issued; connect again.")
        if response.status_code != 200:
            raise self.error_for(response, "GET /me")
        try:
            return IgUser.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise PermanentError(f"Instagram answered an unexpected /me body: {exc}") from exc

    # -- daily counts -----------------------------------------------------------------------
    def daily_counts(
        self, account: Account, start: dt.date, end: dt.date, stats: CallStats
    ) -> dict[dt.date, int]:
        """Media per local day in [start, end], paging newest first until past the range."""
        lo, hi = local_day_bounds(start, end, account.tz)
        path = f"/{self.api_version}/{account.account_id}/media"
        params: dict[str, Any] = {
            "fields": "id,timestamp,media_type",
            "limit": self.page_size,
            "since": int(lo.timestamp()),
        }
        if hi.timestamp() < time.time():
            params["until"] = int(hi.timestamp())
        instants: list[dt.datetime] = []
        seen: set[str] = set()
        after: str | None = None
        while True:
            page_params = dict(params) if after is None else {**params, "after": after}
            response = self.call(account.user_id, "GET", path, params=page_params, stats=stats)
            try:
                page = MediaPage.model_validate(response.json())
            except (ValueError, ValidationError) as exc:
                raise PermanentError(
                    f"Instagram answered an unexpected media body ({body_text(response, 200)})"
                ) from exc
            past_range = False
            for media in page.data:
                if media.timestamp < lo:
                    past_range = True
                elif media.timestamp < hi:
                    instants.append(media.timestamp)
            after = next_cursor(page.paging)
            if past_range or not page.data or after is None:
                break
            if after in seen:
                raise TransientError(f"Instagram repeated a paging cursor on {path}; retry later.")
            seen.add(after)
        return count_local_days(instants, account.tz, start, end)
