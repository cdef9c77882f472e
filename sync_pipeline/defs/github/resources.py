"""GitHub client resource: GitHub App user tokens, the contribution calendar, events polling."""

from __future__ import annotations

import contextvars
import datetime as dt
import time
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from sqlalchemy import select

from sync_pipeline.core.budget import Window
from sync_pipeline.core.client import Limited, Observation
from sync_pipeline.core.daily import Account, DailyActivityClient, Grant
from sync_pipeline.core.db import transaction
from sync_pipeline.core.errors import (
    AuthRevokedError,
    ConfigError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from sync_pipeline.core.http import CallStats, retry_after_seconds, sent_at
from sync_pipeline.core.models import PlatformConnection
from sync_pipeline.core.oauth import pkce_pair
from sync_pipeline.core.tokens import TokenSet, refresh_token_of

API_VERSION = "2022-11-28"
HOUR = 3600
#: The calendar spans at most one year per query; longer windows are split.
MAX_SPAN_DAYS = 365
EVENTS_PER_PAGE = 100
#: Wait this long after a limit response that names no reset (GitHub: "at least a minute").
UNSPECIFIED_LIMIT_WAIT = 60.0
RESOURCES = ("core", "graphql")
CALENDAR_QUERY = """
query($login: String!, $from: DateTime!, $to: DateTime!) {
  user(login: $login) {
    contributionsCollection(from: $from, to: $to) {
      contributionCalendar {
        weeks { contributionDays { date contributionCount } }
      }
    }
  }
}
"""
#: Token-endpoint errors (sent with HTTP 200) meaning the user has to authorize again.
USER_GRANT_ERRORS = frozenset(
    {"bad_verification_code", "bad_refresh_token", "unverified_user_email", "access_denied"}
)
#: Token-endpoint errors meaning the app's own settings are wrong (not the user's grant).
APP_CONFIG_ERRORS = frozenset(
    {"incorrect_client_credentials", "redirect_uri_mismatch", "unsupported_grant_type"}
)

# Set while sending a conditional request: GitHub does not charge a 304, so the request is
# admitted without reserving a point; the headers of a 200 then correct the budget.
_conditional: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "github_conditional", default=False
)


class TokenResponse(BaseModel):
    """Body of ``POST /login/oauth/access_token`` (tokens, or an error with HTTP 200)."""

    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: int | None = None
    refresh_token_expires_in: int | None = None
    scope: str = ""
    token_type: str | None = None
    error: str | None = None
    error_description: str | None = None


class GitHubUser(BaseModel):
    """The part of ``GET /user`` the connection needs."""

    id: int
    login: str


class ContributionDay(BaseModel):
    """One day of the contribution calendar (a UTC date)."""

    model_config = ConfigDict(populate_by_name=True)

    date: dt.date
    count: int = Field(alias="contributionCount")


class ContributionWeek(BaseModel):
    """One week of the calendar."""

    model_config = ConfigDict(populate_by_name=True)

    days: list[ContributionDay] = Field(alias="contributionDays")


class ContributionCalendar(BaseModel):
    """``contributionCalendar``."""

    weeks: list[ContributionWeek]


class ContributionsCollection(BaseModel):
    """``contributionsCollection``."""

    model_config = ConfigDict(populate_by_name=True)

    calendar: ContributionCalendar = Field(alias="contributionCalendar")


class CalendarUser(BaseModel):
    """``user`` of the calendar query."""

    model_config = ConfigDict(populate_by_name=True)

    collection: ContributionsCollection = Field(alias="contributionsCollection")


class CalendarData(BaseModel):
    """``data`` of the calendar query."""

    user: CalendarUser | None = None


class GraphQLErrorEntry(BaseModel):
    """One entry of a GraphQL ``errors`` list."""

    type: str | None = None
    message: str = ""


class CalendarResponse(BaseModel):
    """A GraphQL response to the calendar query."""

    data: CalendarData | None = None
    errors: list[GraphQLErrorEntry] = Field(default_factory=list)


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _graphql_errors(response: httpx.Response) -> list[GraphQLErrorEntry]:
    try:
        body = response.json()
    except ValueError:
        return []
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return []
    out = []
    for entry in body["errors"]:
        try:
            out.append(GraphQLErrorEntry.model_validate(entry))
        except ValidationError:
            continue
    return out


class GitHubResource(DailyActivityClient):
    """GitHub through a GitHub App's user-to-server tokens (8-hour access, rotating refresh).

    Day rule (the documented exception to the local-day rule): GitHub's contribution
    calendar buckets contributions by their UTC date ("contributions are timestamped
    according to Coordinated Universal Time (UTC) rather than your local time zone"), so on
    this platform a day is the UTC day, whatever the user's time zone: the count of day D is
    the calendar's count of UTC date D (commits, opened issues and pull requests, created
    repositories). The synced days [start, end] are read as UTC dates.

    Limits: 5,000 points per hour per user for REST (``core``) and for GraphQL, separate
    buckets ``github:core:user:<github id>`` and ``github:graphql:user:<github id>``. GitHub's
    hour starts with the first request after the previous one ended; the reset each response
    reports (``x-ratelimit-reset``) aligns the budget's window to GitHub's. A calendar query
    costs 1 point; the public events feed is polled with ``If-None-Match`` (a 304 is free) as
    a change detector, best effort: its failure never fails the sync.
    """

    PROVIDER: ClassVar[str] = "github"

    base_url: str = Field(
        default="https://api.github.com", description="REST and GraphQL API host."
    )
    oauth_base_url: str = Field(
        default="https://github.com", description="Host of /login/oauth/authorize and tokens."
    )
    core_limit_per_hour: int = Field(
        default=5000, description="REST points per hour per user token (GitHub: 5,000)."
    )
    graphql_points_per_hour: int = Field(
        default=5000, description="GraphQL points per hour per user token (GitHub: 5,000)."
    )
    user_agent: str = Field(
        default="sync-pipeline",
        description="User-Agent sent with every request (GitHub refuses requests without one).",
    )
    poll_events: bool = Field(
        default=True,
        description="Poll the user's public events with ETag after the calendar (free when "
        "unchanged); its figures show whether anything happened since the last sync.",
    )

    _offsets: dict[str, int] = PrivateAttr(default_factory=dict)
    _github_ids: dict[str, str] = PrivateAttr(default_factory=dict)

    # -- budget ---------------------------------------------------------------------------
    def _github_id(self, user_id: str) -> str:
        """The GitHub user id behind an app user's connection (the rate limit's owner)."""
        found = self._github_ids.get(user_id)
        if found is None:
            with transaction(self.app_db.url) as s:
                found = s.scalar(
                    select(PlatformConnection.account_id).where(
                        PlatformConnection.user_id == user_id,
                        PlatformConnection.platform == self.PROVIDER,
                    )
                )
            if found is None:
                return f"app-user-{user_id}"
            self._github_ids[user_id] = found
        return found

    def window(self, github_id: str, resource: str, offset: int | None = None) -> Window:
        """The hourly window of one user's ``core`` or ``graphql`` points."""
        bucket = f"github:{resource}:user:{github_id}"
        limit = self.graphql_points_per_hour if resource == "graphql" else self.core_limit_per_hour
        if offset is None:
            offset = self._offsets.get(bucket, 0)
        return Window(bucket, self.seconds(HOUR), limit, offset=offset)

    def offset_for(self, reset: int) -> int:
        """Window alignment from GitHub's reset, ending a little early.

        GitHub's hour starts at a first request and its reset is rounded up, so the window
        is shifted back by a small margin (which also absorbs clock skew): every request of
        GitHub's window falls into the same budget row, and the margin at most lets one
        request find the limit still spent and wait out the last seconds inline.
        """
        seconds = self.seconds(HOUR)
        margin = max(1, min(5, seconds // 4))
        return (reset - margin) % seconds

    def windows(self, account: str, method: str, path: str) -> list[Window]:
        """A GraphQL query spends graphql points, anything else core points."""
        resource = "graphql" if path == "/graphql" else "core"
        return [self.window(self._github_id(account), resource)]

    def cost(self, method: str, path: str) -> int:
        """1 point; a conditional poll reserves none (a 304 is free, a 200 is observed)."""
        return 0 if _conditional.get() else 1

    def _observations(self, github_id: str, response: httpx.Response) -> list[Observation]:
        headers = response.headers
        resource = headers.get("x-ratelimit-resource")
        if resource not in RESOURCES:
            return []
        limit = _int(headers.get("x-ratelimit-limit"))
        used = _int(headers.get("x-ratelimit-used"))
        remaining = _int(headers.get("x-ratelimit-remaining"))
        if used is None and limit is not None and remaining is not None:
            used = limit - remaining
        if used is None:
            return []
        reset = _int(headers.get("x-ratelimit-reset"))
        offset = None
        if reset is not None:
            offset = self.offset_for(reset)
            self._offsets[f"github:{resource}:user:{github_id}"] = offset
        return [(self.window(github_id, resource, offset), used, limit)]

    def observe(self, account: str, path: str, response: httpx.Response) -> list[Observation]:
        """``x-ratelimit-*`` of the bucket named by ``x-ratelimit-resource``."""
        return self._observations(self._github_id(account), response)

    def limited(self, account: str, path: str, response: httpx.Response) -> Limited | None:
        """Secondary limits wait ``retry-after``; primary exhaustion waits for the reset."""
        status = response.status_code
        headers = response.headers
        resource = headers.get("x-ratelimit-resource") or (
            "graphql" if path == "/graphql" else "core"
        )
        if resource not in RESOURCES:
            resource = "core"
        reset = _int(headers.get("x-ratelimit-reset"))

        def primary(reason: str) -> Limited:
            retry_at = float(reset) if reset is not None else time.time() + UNSPECIFIED_LIMIT_WAIT
            offset = self.offset_for(reset) if reset is not None else None
            window = self.window(self._github_id(account), resource, offset)
            when = time.strftime("%H:%M:%S", time.gmtime(retry_at))
            return Limited(retry_at, f"{reason}; resets at {when} UTC", window)

        if status in (403, 429):
            retry_after = retry_after_seconds(response)
            if retry_after is not None:
                return Limited(
                    time.time() + retry_after,
                    f"secondary rate limit (HTTP {status}); retry after {retry_after:.0f} s",
                )
            if headers.get("x-ratelimit-remaining") == "0":
                return primary(f"{resource} rate limit exhausted (HTTP {status})")
            if status == 429 or "rate limit" in response.text[:300].lower():
                return Limited(
                    time.time() + UNSPECIFIED_LIMIT_WAIT, f"rate limited (HTTP {status})"
                )
            return None
        graphql_limited = status == 200 and path == "/graphql"
        if graphql_limited and any(e.type == "RATE_LIMIT" for e in _graphql_errors(response)):
            return primary("GraphQL rate limit exhausted (RATE_LIMIT)")
        return None

    # -- tokens ---------------------------------------------------------------------------
    def api_headers(self) -> dict[str, str]:
        """Headers of every API request except the token."""
        return {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": self.user_agent,
        }

    def auth_headers(self, access_token: str) -> dict[str, str]:
        """The user token as a bearer token, with GitHub's media type and User-Agent."""
        return {**self.api_headers(), "Authorization": f"Bearer {access_token}"}

    def _token_request(self, form: dict[str, str], grant: str) -> TokenResponse:
        response = self.auth_http().request(
            "POST",
            "/login/oauth/access_token",
            data={"client_id": self.client_id, "client_secret": self.client_secret, **form},
            headers={"Accept": "application/json", "User-Agent": self.user_agent},
        )
        if response.status_code == 429:
            raise TransientError("GitHub token endpoint answered HTTP 429")
        if response.status_code != 200:
            self.token_error(response, grant)
        try:
            body = TokenResponse.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise TransientError("GitHub token endpoint answered an unreadable body") from exc
        if body.error is not None:
            detail = f"{body.error}: {body.error_description or ''}".strip()
            if body.error in USER_GRANT_ERRORS:
                raise AuthRevokedError(
                    f"GitHub rejected the {grant} grant ({detail}); the user must reconnect."
                )
            if body.error in APP_CONFIG_ERRORS:
                raise ConfigError(
                    f"GitHub refused the app's {grant} request ({detail}); check the GitHub "
                    "App's client id, client secret and callback URL settings."
                )
            raise TransientError(f"GitHub token endpoint error ({detail})")
        if not body.access_token:
            raise TransientError("GitHub token endpoint answered without an access token")
        return body

    @staticmethod
    def _token_set(body: TokenResponse) -> TokenSet:
        assert body.access_token is not None
        expires_at = int(time.time()) + body.expires_in if body.expires_in else None
        return TokenSet(body.access_token, body.refresh_token, expires_at, body.scope or "")

    def refresh(self, tokens: TokenSet) -> TokenSet:
        """Trade the refresh token for new tokens; GitHub rotates both (the old ones die)."""
        refresh_token = refresh_token_of(tokens, "GitHub")
        body = self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}, "refresh_token"
        )
        return self._token_set(body)

    # -- OAuth ----------------------------------------------------------------------------
    def consent(self, redirect_uri: str, state: str, **extra: str) -> tuple[str, dict[str, str]]:
        """GitHub's authorize page (GitHub Apps take no scopes) with a PKCE challenge."""
        verifier, challenge = pkce_pair()
        params = {
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "allow_signup": "false",
            **extra,
        }
        url = f"{self.oauth_url('/login/oauth/authorize')}?{urlencode(params)}"
        return url, {"code_verifier": verifier}

    def exchange(self, code: str, redirect_uri: str, secrets: dict[str, str]) -> Grant:
        """Trade the code for tokens, then ``GET /user`` for the account's id and login."""
        form = {"code": code, "redirect_uri": redirect_uri}
        if secrets.get("code_verifier"):
            form["code_verifier"] = secrets["code_verifier"]
        tokens = self._token_set(self._token_request(form, "authorization_code"))
        response = self.http().request(
            "GET", "/user", headers=self.auth_headers(tokens.access_token)
        )
        if response.status_code != 200:
            raise self.error_for(response, "GET /user")
        user = GitHubUser.model_validate(response.json())
        observations = self._observations(str(user.id), response)
        if observations:
            self.app_db.budget().observe(observations, now=sent_at(response))
        return Grant(tokens, str(user.id), user.login, {"login": user.login})

    # -- daily counts ---------------------------------------------------------------------
    def current_login(self, account: Account, stats: CallStats) -> str:
        """The account's login now (users can rename themselves); remembered for next time."""
        response = self.call(account.user_id, "GET", "/user", stats=stats)
        login = GitHubUser.model_validate(response.json()).login
        if login != (account.extra or {}).get("login"):
            self.remember(account, login=login)
        return login

    def calendar(
        self, account: Account, login: str, start: dt.date, end: dt.date, stats: CallStats
    ) -> list[ContributionDay]:
        """Calendar days of UTC dates [start, end] (at most one year)."""
        variables: dict[str, Any] = {
            "login": login,
            "from": f"{start.isoformat()}T00:00:00Z",
            "to": f"{end.isoformat()}T23:59:59Z",
        }
        response = self.call(
            account.user_id,
            "POST",
            "/graphql",
            json={"query": CALENDAR_QUERY, "variables": variables},
            stats=stats,
        )
        try:
            body = CalendarResponse.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise TransientError(f"GitHub GraphQL answered an unreadable body: {exc}") from exc
        if body.errors:
            typed = [e for e in body.errors if e.type]
            messages = "; ".join(f"{e.type or 'error'}: {e.message}" for e in body.errors)
            if any(e.type == "NOT_FOUND" for e in typed):
                raise LookupError(messages)
            if typed:
                raise PermanentError(f"GitHub GraphQL refused the calendar query: {messages}")
            raise TransientError(f"GitHub GraphQL failed: {messages}")
        if body.data is None or body.data.user is None:
            raise LookupError(f"GitHub has no user {login!r}")
        weeks = body.data.user.collection.calendar.weeks
        return [day for week in weeks for day in week.days]

    @staticmethod
    def _unresolved(account: Account, exc: LookupError) -> PermanentError:
        return PermanentError(
            f"GitHub could not resolve the login of account {account.account_id}: {exc}"
        )

    def today(self, account: Account, now: dt.datetime) -> dt.date:
        """GitHub's calendar buckets by UTC date, so a GitHub sync runs up to the UTC today."""
        return now.astimezone(dt.UTC).date()

    def daily_counts(
        self, account: Account, start: dt.date, end: dt.date, stats: CallStats
    ) -> dict[dt.date, int]:
        """Contributions per UTC date in [start, end] from the calendar (see the day rule)."""
        self._github_ids[account.user_id] = account.account_id
        login = str((account.extra or {}).get("login") or account.handle or "")
        if not login:
            login = self.current_login(account, stats)
        counts: dict[dt.date, int] = {}
        chunk = start
        while chunk <= end:
            chunk_end = min(end, chunk + dt.timedelta(days=MAX_SPAN_DAYS - 1))
            try:
                days = self.calendar(account, login, chunk, chunk_end, stats)
            except LookupError as exc:
                # The user may have renamed themselves: ask who the token's owner is now.
                renamed = self.current_login(account, stats)
                if renamed == login:
                    raise self._unresolved(account, exc) from exc
                login = renamed
                try:
                    days = self.calendar(account, login, chunk, chunk_end, stats)
                except LookupError as again:
                    raise self._unresolved(account, again) from again
            for day in days:
                if chunk <= day.date <= chunk_end and day.count:
                    counts[day.date] = counts.get(day.date, 0) + day.count
            chunk = chunk_end + dt.timedelta(days=1)
        if self.poll_events:
            self.poll_public_events(account, login, stats)
        return counts

    def poll_public_events(self, account: Account, login: str, stats: CallStats) -> bool | None:
        """Poll the events feed with the stored ETag: True changed, False 304, None skipped.

        Best effort: a spent core budget, a transient failure or a refusal skips the poll
        (the calendar already answered); a revoked token still fails the sync.
        """
        etag = (account.extra or {}).get("events_etag")
        headers = {"If-None-Match": str(etag)} if etag else None
        marker = _conditional.set(bool(etag))
        try:
            response = self.call(
                account.user_id,
                "GET",
                f"/users/{login}/events",
                params={"per_page": EVENTS_PER_PAGE},
                headers=headers,
                ok=(200, 304),
                stats=stats,
            )
        except AuthRevokedError:
            raise
        except (RateLimitedError, TransientError, PermanentError):
            return None
        finally:
            _conditional.reset(marker)
        if response.status_code == 304:
            stats.add(not_modified=1)
            return False
        new = response.headers.get("etag")
        if new and new != etag:
            self.remember(account, events_etag=new)
        return True
