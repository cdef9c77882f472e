"""X API v2 client resource: OAuth 2.0 with PKCE, posts per local day, 15-minute windows."""

from __future__ import annotations

import base64
import datetime as dt
import time
from typing import Annotated, Any, ClassVar
from urllib.parse import quote, urlencode

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
    ConfigError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from sync_pipeline.core.http import CallStats
from sync_pipeline.core.oauth import pkce_pair
from sync_pipeline.core.tokens import TokenSet, refresh_token_of

SCOPES = "tweet.read users.read offline.access"
WINDOW_SECONDS = 900
ACCESS_TOKEN_SECONDS = 7200
USAGE_CAP_RECHECK_SECONDS = 86400
END_TIME_SLACK_SECONDS = 10
ME_PATH = "/2/users/me"
TOKEN_PATH = "/2/oauth2/token"


def _instant(value: Any) -> Any:
    return parse_instant(value) if isinstance(value, str) else value


Instant = Annotated[dt.datetime, BeforeValidator(_instant)]


class Post(BaseModel):
    """One post of a user timeline (only what the daily count needs)."""

    id: str
    created_at: Instant


class TimelineMeta(BaseModel):
    """Paging metadata of a timeline page."""

    result_count: int = 0
    next_token: str | None = None


class TimelinePage(BaseModel):
    """A page of `GET /2/users/:id/tweets`."""

    data: list[Post] = Field(default_factory=list)
    meta: TimelineMeta | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)


class XUser(BaseModel):
    """The authenticated user of `GET /2/users/me`."""

    id: str
    username: str
    name: str | None = None


class Me(BaseModel):
    """Body of `GET /2/users/me`."""

    data: XUser


class TokenResponse(BaseModel):
    """Body of the OAuth 2.0 token endpoint."""

    access_token: str
    refresh_token: str | None = None
    expires_in: int | None = None
    scope: str = ""


def rfc3339(instant: dt.datetime) -> str:
    """`2024-05-01T12:34:56Z`, the form X wants for start_time/end_time."""
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _header_int(response: httpx.Response, name: str) -> int | None:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None


class XResource(DailyActivityClient):
    """X API v2: a user's posts per local day, with PKCE consent and rotating refresh tokens.

    Day rule: every post's `created_at` is converted to the user's time zone and counted on
    that local day; only the UTC range covering the local days is requested (start_time and,
    unless it is still in the future, end_time). X only serves a user's 3,200 most recent
    posts, so older days of very active users count what is still reachable.

    Limits: each timeline call is charged to a per-user and a per-app 15-minute window, both
    corrected from `x-rate-limit-*` headers; a 429 marks the window spent and waits (near) or
    parks (far) until `x-rate-limit-reset`.
    """

    PROVIDER: ClassVar[str] = "x"

    base_url: str = Field(
        default="https://api.x.com",
        description="API host; it also serves the token endpoint /2/oauth2/token.",
    )
    oauth_base_url: str = Field(
        default="https://x.com", description="Consent host serving /i/oauth2/authorize."
    )
    scopes: str = Field(default=SCOPES, description="OAuth 2.0 scopes asked at consent.")
    timeline_user_limit: int = Field(
        default=900, ge=1, description="GET /2/users/:id/tweets calls per 15 minutes per user."
    )
    timeline_app_limit: int = Field(
        default=1500, ge=1, description="GET /2/users/:id/tweets calls per 15 minutes per app."
    )
    me_user_limit: int = Field(
        default=75, ge=1, description="GET /2/users/me calls per 15 minutes per user."
    )
    page_size: int = Field(
        default=100, ge=5, le=100, description="max_results per timeline page (5-100)."
    )

    # -- budget ------------------------------------------------------------------------------
    def windows(self, account: str, method: str, path: str) -> list[Window]:
        """Timeline calls spend the user's and the app's window; users/me the user's own."""
        seconds = self.seconds(WINDOW_SECONDS)
        if path.startswith("/2/users/") and path.endswith("/tweets"):
            return [
                Window(f"x:tweets:user:{account}", seconds, self.timeline_user_limit),
                Window(f"x:tweets:app:{self.client_id}", seconds, self.timeline_app_limit),
            ]
        if path == ME_PATH:
            return [Window(f"x:me:user:{account}", seconds, self.me_user_limit)]
        return []

    def _reported(self, account: str, path: str, response: httpx.Response) -> list[Window]:
        """The window(s) the `x-rate-limit-*` headers describe, matched by their limit."""
        windows = self.windows(account, "GET", path)
        if not windows:
            return []
        limit = _header_int(response, "x-rate-limit-limit")
        matched = [w for w in windows if w.limit == limit]
        # An unknown limit (another access tier) is the user's: X reports user-context limits.
        return matched or windows[:1]

    def observe(self, account: str, path: str, response: httpx.Response) -> list[Observation]:
        """Usage from `x-rate-limit-limit`/`-remaining`, charged to the window it describes."""
        limit = _header_int(response, "x-rate-limit-limit")
        remaining = _header_int(response, "x-rate-limit-remaining")
        if limit is None or remaining is None:
            return []
        used = max(0, limit - remaining)
        return [(w, used, limit) for w in self._reported(account, path, response)]

    def limited(self, account: str, path: str, response: httpx.Response) -> Limited | None:
        """429: wait until `x-rate-limit-reset` (no Retry-After at X), window marked spent."""
        if response.status_code != 429:
            return None
        now = time.time()
        if "UsageCap" in response.text[:500]:
            # The project's monthly post cap: no 15-minute reset helps; check again tomorrow.
            return Limited(now + USAGE_CAP_RECHECK_SECONDS, "X monthly usage cap exceeded")
        spent = self._reported(account, path, response)
        window = spent[0] if spent else None
        reset = _header_int(response, "x-rate-limit-reset")
        if reset is not None:
            retry_at = max(float(reset), now + 1.0)
        elif window is not None:
            retry_at = float(window.end(now))
        else:
            retry_at = now + self.seconds(WINDOW_SECONDS)
        scope = window.bucket.split(":")[2] if window is not None else "user"
        return Limited(
            retry_at,
            f"429 Too Many Requests on {path} ({scope} window spent) until "
            f"{dt.datetime.fromtimestamp(retry_at, dt.UTC):%H:%M:%S} UTC",
            window,
        )

    # -- OAuth 2.0 with PKCE ------------------------------------------------------------------
    def consent(self, redirect_uri: str, state: str, **extra: str) -> tuple[str, dict[str, str]]:
        """X's authorize URL with an S256 PKCE challenge; the verifier is the secret kept."""
        verifier, challenge = pkce_pair()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.scopes,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }
        url = f"{self.oauth_url('/i/oauth2/authorize')}?{urlencode(params, quote_via=quote)}"
        return url, {"code_verifier": verifier}

    def exchange(self, code: str, redirect_uri: str, secrets: dict[str, str]) -> Grant:
        """Trade the code (with the PKCE verifier) for tokens, then read who the user is."""
        verifier = secrets.get("code_verifier")
        if not verifier:
            raise ConfigError("The X consent lost its PKCE verifier; start the connection again.")
        tokens = self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": self.client_id,
            }
        )
        user = self._me(tokens.access_token)
        return Grant(tokens=tokens, account_id=user.id, handle=user.username)

    def refresh(self, tokens: TokenSet) -> TokenSet:
        """A new access token and a new refresh token (X rotates; the old one dies)."""
        return self._token_request(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token_of(tokens, "X"),
                "client_id": self.client_id,
            }
        )

    def _token_request(self, form: dict[str, str]) -> TokenSet:
        """POST the token endpoint on the API host as a confidential client (HTTP Basic)."""
        credentials = f"{self.client_id}:{self.client_secret}".encode()
        response = self.auth_http().request(
            "POST",
            f"{self.base_url.rstrip('/')}{TOKEN_PATH}",
            data=form,
            headers={"Authorization": f"Basic {base64.b64encode(credentials).decode('ascii')}"},
        )
        if response.status_code != 200:
            self.token_error(response, form["grant_type"])
        try:
            body = TokenResponse.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise TransientError("X token endpoint answered an unexpected body") from exc
        lifetime = body.expires_in if body.expires_in else self.seconds(ACCESS_TOKEN_SECONDS)
        return TokenSet(
            access_token=body.access_token,
            refresh_token=body.refresh_token,
            expires_at=int(time.time()) + lifetime,
            scopes=body.scope,
        )

    def _me(self, access_token: str) -> XUser:
        """`GET /2/users/me` with a fresh token (at connect time, before tokens are stored)."""
        response = self.http().request("GET", ME_PATH, headers=self.auth_headers(access_token))
        if response.status_code == 401:
            raise AuthRevokedError("X rejected the token it just issued; connect again.")
        if response.status_code != 200:
            raise self.error_for(response, f"GET {ME_PATH}")
        try:
            return Me.model_validate(response.json()).data
        except (ValueError, ValidationError) as exc:
            raise PermanentError(f"X answered an unexpected users/me body: {exc}") from exc

    # -- daily counts -----------------------------------------------------------------------
    def daily_counts(
        self, account: Account, start: dt.date, end: dt.date, stats: CallStats
    ) -> dict[dt.date, int]:
        """Posts per local day in [start, end], paging the timeline to completion."""
        lo, hi = local_day_bounds(start, end, account.tz)
        path = f"/2/users/{account.account_id}/tweets"
        params: dict[str, Any] = {
            "max_results": self.page_size,
            "tweet.fields": "created_at",
            "start_time": rfc3339(lo),
        }
        if hi.timestamp() < time.time() - END_TIME_SLACK_SECONDS:
            params["end_time"] = rfc3339(hi)
        instants: list[dt.datetime] = []
        seen: set[str] = set()
        next_token: str | None = None
        while True:
            page_params = dict(params)
            if next_token is not None:
                page_params["pagination_token"] = next_token
            response = self.call(account.user_id, "GET", path, params=page_params, stats=stats)
            page = self._page(response, account)
            instants.extend(post.created_at for post in page.data)
            next_token = page.meta.next_token if page.meta else None
            if not next_token:
                break
            if next_token in seen:
                raise TransientError(f"X repeated a pagination token on {path}; retry later.")
            seen.add(next_token)
        return count_local_days(instants, account.tz, start, end)

    def _page(self, response: httpx.Response, account: Account) -> TimelinePage:
        """A typed timeline page; a body of errors only means the user is gone."""
        try:
            page = TimelinePage.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise PermanentError(
                f"X answered an unexpected timeline body ({body_text(response, 200)})"
            ) from exc
        if page.errors and not page.data and page.meta is None:
            detail = "; ".join(str(e.get("detail") or e.get("title") or e) for e in page.errors)
            if any(str(e.get("type", "")).endswith("resource-not-found") for e in page.errors):
                raise NotFoundError(
                    f"X user {account.account_id} (@{account.handle}) no longer exists: {detail}"
                )
            raise PermanentError(f"X refused the timeline of {account.account_id}: {detail}")
        return page
